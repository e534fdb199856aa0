"""data/sample_note.py: the one bundled-sample message, from facts; a fact not given is not said."""

from __future__ import annotations

import pandas as pd

from cxr_bench.data.bundled import sample_root
from cxr_bench.data.sample_note import SampleFacts, finite, sample_note_lines, whole


def test_every_fact_given_is_said_and_none_other():
    full = SampleFacts(n_runs=3, n_total=5, profiles=("sample",), image_sizes=(64, 32, 64), pretrained=("none",) * 3,
                       steps=(8, 16, 12), images_seen=(128, 256, 192), mean_aucs=(0.4812, 0.5234, 0.5),
                       test_images=(265,), test_patients=(186,), sanity=True)
    first, why, real = sample_note_lines(full)
    assert first.startswith("NOT COMPARABLE WITH ANY PAPER: 3 of 5 run(s) on the bundled 1,673-image NIH sample "
                            "(profile 'sample')")
    assert "(profile 'sample') at 32-64 px" in first and "here 0.48-0.52" in first
    assert why.startswith("Why: random init (no ImageNet weights), small images (papers: 224-1024 px)")
    assert "8-16 optimizer steps, 128-256 images seen" in why and "at most" not in why
    assert "265 test images of 186 patients" in why and "500 'Pneumonia' + 500 'No Finding'" in why
    assert real.startswith("A phantom 'sanity' run") and "--data-root DIR" in real

    bare = sample_note_lines(SampleFacts(n_runs=2))
    assert bare[0].startswith("NOT COMPARABLE WITH ANY PAPER: 2 run(s) on") and "here" not in bare[0]
    assert bare[1] == ("Why: a small, biased sample at 256 px (1,000 images are 500 'Pneumonia' + 500 'No Finding' "
                       "from one source).")
    assert not bare[2].startswith("A phantom") and " px" not in bare[0]
    assert sample_note_lines(full, why=False) == [first, real]


def test_caps_epochs_and_weights_are_told_apart():
    capped = sample_note_lines(SampleFacts(n_runs=1, n_total=1, steps=(4,), steps_capped=True, epochs=(2,)))
    assert "at most 4 optimizer steps" in capped[1] and "epoch" not in capped[1] and "1 run(s)" in capped[0]
    assert "2 epoch(s) of training" in sample_note_lines(SampleFacts(n_runs=1, epochs=(2, 2)))[1]
    mixed = sample_note_lines(SampleFacts(n_runs=2, pretrained=("imagenet", "none")))[1]
    assert "random init for some runs (the others initialised from imagenet)" in mixed
    assert "init" not in sample_note_lines(SampleFacts(n_runs=1, pretrained=("imagenet",)))[1]


def test_only_what_is_a_cause_is_said_to_be_one():
    # A sample run that reached a high AUC at a paper's size, from ImageNet weights, after a paper's training:
    # none of those is given as a reason, and it is not called "at chance".
    good = SampleFacts(n_runs=1, image_sizes=(512,), pretrained=("imagenet",), steps=(20_000,), mean_aucs=(0.97,))
    first, why, _ = sample_note_lines(good)
    assert "at chance" not in first and "mean AUCs 0.97 here" in first and "NOT COMPARABLE" in first
    assert why == ("Why: a small, biased sample at 256 px (1,000 images are 500 'Pneumonia' + 500 'No Finding' "
                   "from one source).")
    chance = sample_note_lines(SampleFacts(n_runs=2, image_sizes=(224, 64), steps=(9_999, 20_000), mean_aucs=(0.5, 0.59)))
    assert "AUCs at chance (about 0.5; here 0.50-0.59)" in chance[0]
    assert "small images" in chance[1] and "9999-20000 optimizer steps" in chance[1]


def test_cells_read_back_from_a_csv_become_numbers():
    assert finite([None, "x", float("nan"), "0.5", 1]) == (0.5, 1.0)
    assert whole(pd.Series(["64", 32.0, None])) == (64, 32)


def test_the_sample_is_what_the_message_says():
    meta = pd.read_csv(sample_root() / "Data_Entry_2017_v2020.csv")
    labels = meta["Finding Labels"].str.split("|")
    assert len(meta) == 1673 and len(list((sample_root() / "images").glob("*.png"))) == 1673
    assert (meta["Finding Labels"] == "No Finding").sum() >= 500 and labels.map(lambda x: "Pneumonia" in x).sum() >= 500
