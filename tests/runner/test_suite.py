"""Suite files: loading, grid expansion, profiles and rules, dedupe across blocks, ablation pairs, and
errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_bench.cli import main as cli_main
from cxr_bench.config import RunConfig
from cxr_bench.errors import ConfigError
from cxr_bench.runner.suite import load_suite, parse_overrides, shipped_suites


# ---------------------------------------------------------------------------------------------- shipped
def test_shipped_suites_listed():
    assert {"wang2017", "smoke"} <= set(shipped_suites())


@pytest.mark.parametrize("profile", ["paper", "sample"])
def test_wang2017_expansion(profile):
    suite = load_suite("wang2017")
    runs = suite.expand(profile)
    # 10 replication + 2 grayscale + 1 channels + 2 heads (the baseline is shared) + 1 CheXNet; under
    # `paper` the channel block fine-tunes (a frozen stem equals replication), so it has its own reference.
    n = {"paper": 17, "sample": 16}[profile]
    assert len(runs) == n
    assert len({r.run_id for r in runs}) == n
    by_block: dict[str, list] = {}
    for r in runs:
        for b in r.blocks:
            by_block.setdefault(b, []).append(r)
    assert {b: len(v) for b, v in by_block.items()} == {
        "replication": 10, "ablation-grayscale": 3, "ablation-channels": 2, "ablation-head": 3, "chexnet": 1}
    backbones = sorted({r.config.model.backbone for r in by_block["replication"]})
    assert backbones == ["alexnet", "googlenet", "mobilenet_v1", "resnet50", "vgg16"]
    optimizer = {"paper": "sgd", "sample": "adamw"}[profile]
    assert {(r.config.model.head, r.config.loss.name, r.config.optim.optimizer) for r in by_block["replication"]} \
        == {("wang2017", "wcel", optimizer)}

    # The MobileNetV1 / ChestX-ray14 replication run is the shared reference of the ablations.
    (baseline,) = [r for r in runs if len(r.blocks) > 1]
    shared = ["replication", "ablation-grayscale", "ablation-head"]
    assert baseline.blocks == (shared if profile == "paper" else shared[:2] + ["ablation-channels", shared[2]])
    assert (baseline.config.model.backbone, baseline.config.data.label_set) == ("mobilenet_v1", "chestxray14")
    channels = {r.config.data.channels: r for r in by_block["ablation-channels"]}
    assert {r.config.model.freeze_backbone for r in channels.values()} == {False}
    pairs = {(p.block, p.factor, p.value): (p.reference, r) for r in runs for p in r.pairs}
    for value in ("gamma", "lstar"):
        ref, run = pairs[("ablation-grayscale", "data.grayscale", value)]
        assert ref == baseline.run_id and run.config.data.grayscale == value
    channel_ref = baseline if profile == "sample" else channels["replicate"]
    assert pairs[("ablation-channels", "data.channels", "stem")] == (channel_ref.run_id, channels["stem"])
    gap = [r for r in by_block["ablation-head"] if r.config.model.head == "gap"][0]
    assert pairs[("ablation-head", "model.head", "attention")][0] == gap.run_id
    assert pairs[("ablation-head", "model.head", "wang2017")] == (gap.run_id, baseline)
    assert len(pairs) == 5

    chexnet = by_block["chexnet"][0].config
    assert (chexnet.model.backbone, chexnet.model.head, chexnet.loss.name) == ("densenet121", "gap", "bce")


def test_wang2017_profiles_differ_where_documented():
    suite = load_suite("wang2017")
    paper = {r.config.model.backbone: r.config for r in suite.expand("paper") if r.blocks[0] == "replication"}
    assert paper["vgg16"].data.image_size == 1024 and paper["vgg16"].model.freeze_backbone
    assert paper["vgg16"].model.pretrained == "cache"
    assert paper["vgg16"].optim.batch_size * paper["vgg16"].optim.accum_steps == 80
    chexnet = [r.config for r in suite.expand("paper") if r.blocks == ["chexnet"]][0]
    assert chexnet.data.image_size == 224 and not chexnet.model.freeze_backbone
    sample = {r.config.model.backbone: r.config for r in suite.expand("sample")}
    assert all(c.model.pretrained is None and not c.model.freeze_backbone for c in sample.values())
    assert sample["vgg16"].optim.max_steps_per_epoch < sample["alexnet"].optim.max_steps_per_epoch
    assert suite.profiles["paper"].needs_data_root and not suite.profiles["sample"].needs_data_root


# ---------------------------------------------------------------------------------------------- hand-written
HAND_WRITTEN = """
[[block]]
name = "grid"
grid = { "model.backbone" = ["mobilenet_v1", "resnet50"], "seed" = [0, 1, 2] }

[[block]]
name = "gray"
set = { "model.backbone" = "mobilenet_v1" }
grid = { "data.grayscale" = ["identity", "gamma"], "seed" = [0, 1] }
reference = { "data.grayscale" = "identity" }

[profiles.small]
set = { "data.image_size" = 48 }
[[profiles.small.when]]
match = { "model.backbone" = "resnet50" }
set = { "optim.max_steps_per_epoch" = 1 }
[[profiles.small.when]]
match = { block = "gray" }
set = { "model.head_kwargs" = { drop_rate = 0.1 } }
"""


def test_hand_written_suite(write_suite):
    path = write_suite(HAND_WRITTEN, name="hand")
    suite = load_suite(path)
    assert suite.name == "hand" and suite.path == path.resolve()
    runs = suite.expand(None)
    # 2 x 3 + 2 x 2, minus mobilenet/identity/seed 0 and seed 1, which both blocks ask for.
    assert len(runs) == 8
    shared = [r for r in runs if r.blocks == ["grid", "gray"]]
    assert sorted(r.config.seed for r in shared) == [0, 1]
    # Pairs stay within a stratum (same seed).
    for r in runs:
        for p in r.pairs:
            ref = next(x for x in runs if x.run_id == p.reference)
            assert ref.config.seed == r.config.seed and ref.config.data.grayscale == "identity"
            assert r.config.data.grayscale == "gamma" and p.factor == "data.grayscale"

    small = suite.expand("small")
    assert len(small) == 10  # the gray block's rule changes head_kwargs, so nothing is shared any more
    assert {r.config.data.image_size for r in small} == {48}
    steps = {(r.config.model.backbone, r.config.optim.max_steps_per_epoch) for r in small}
    assert ("resnet50", 1) in steps and ("mobilenet_v1", 2) in steps
    assert all(r.config.model.head_kwargs == {"drop_rate": 0.1} for r in small if "gray" in r.blocks)

    over = suite.expand("small", parse_overrides(["optim.epochs=3", "data.grayscale=\"gamma\""]))
    assert all(r.config.optim.epochs == 3 for r in over)
    # Forcing the grid axis from the command line collapses the gray block onto its gamma runs.
    assert all(r.config.data.grayscale == "gamma" for r in over)


def test_run_ids_are_stable_and_match_config(write_suite):
    path = write_suite(HAND_WRITTEN, name="hand")
    a = {r.run_id: r.config.to_dict() for r in load_suite(path).expand("small")}
    b = {r.run_id: r.config.to_dict() for r in load_suite(path).expand("small")}
    assert a == b
    assert all(RunConfig.from_dict(d).run_id() == rid for rid, d in a.items())


# ---------------------------------------------------------------------------------------------- errors
BAD = [
    ("unknown top-level table", '[[block]]\nname = "b"\ngrid = { seed = [0] }\n[bogus]\nx = 1\n', "'bogus'"),
    ("unknown config key", '[[block]]\nname = "b"\ngrid = { "model.backbon" = ["x"] }\n', "model.backbon"),
    ("empty axis", '[[block]]\nname = "b"\ngrid = { seed = [] }\n', "'seed'"),
    ("axis not a list", '[[block]]\nname = "b"\ngrid = { seed = 3 }\n', "'seed'"),
    ("duplicate block", '[[block]]\nname = "b"\ngrid = { seed = [0] }\n[[block]]\nname = "b"\ngrid = { seed = [1] }\n',
     "block 'b' is defined twice"),
    ("path in block name", '[[block]]\nname = "../b"\ngrid = { seed = [0] }\n', "'../b'"),
    ("bad value type", '[[block]]\nname = "b"\nset = { "data.image_size" = "big" }\ngrid = { seed = [0] }\n',
     "data.image_size"),
    ("reference not an axis", '[[block]]\nname = "b"\ngrid = { seed = [0, 1] }\nreference = { "data.grayscale" = "x" }\n',
     "data.grayscale"),
    ("reference value not on axis", '[[block]]\nname = "b"\ngrid = { seed = [0, 1] }\nreference = { seed = 5 }\n',
     "seed = 5"),
    ("profile sets an axis", '[[block]]\nname = "b"\ngrid = { seed = [0, 1] }\n[profiles.p]\nset = { seed = 3 }\n',
     "'seed'"),
    ("unknown profile key", '[[block]]\nname = "b"\ngrid = { seed = [0] }\n[profiles.p]\nsett = { seed = 3 }\n',
     "'sett'"),
    ("pair differs twice",
     '[[block]]\nname = "b"\ngrid = { "data.grayscale" = ["identity", "gamma"] }\n'
     'reference = { "data.grayscale" = "identity" }\n[profiles.p]\n[[profiles.p.when]]\n'
     'match = { "data.grayscale" = "gamma" }\nset = { "data.image_size" = 64 }\n', "data.image_size"),
    ("no blocks", "", "[[block]]"),
]


@pytest.mark.parametrize("label,text,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_suite_files_name_file_and_key(write_suite, label, text, needle):
    path = write_suite(text, name="bad")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    msg = str(err.value)
    assert str(path.resolve()) in msg or str(path) in msg, msg
    assert needle in msg, msg


def test_unknown_suite_and_profile(write_suite):
    with pytest.raises(ConfigError, match="shipped suites: .*wang2017"):
        load_suite("no_such_suite")
    suite = load_suite(write_suite(HAND_WRITTEN, name="hand"))
    with pytest.raises(ConfigError, match="no profile 'huge'; known: small"):
        suite.expand("huge")


def test_parse_overrides():
    assert parse_overrides(["optim.lr=0.5", "data.grayscale=gamma", "optim.amp=\"bf16\"",
                            "model.freeze_backbone=true"]) == {
        "optim.lr": 0.5, "data.grayscale": "gamma", "optim.amp": "bf16", "model.freeze_backbone": True}
    with pytest.raises(ConfigError, match="optim.lrr"):
        parse_overrides(["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_suites_lists_counts(capsys):
    assert cli_main(["suites"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("wang2017"))
    assert "paper: 17" in line and "sample: 16" in line


def test_cli_dry_run_prints_runs(capsys, tmp_path: Path):
    assert cli_main(["run", "--suite", "wang2017", "--dry-run", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "NOT comparable with the paper" in captured.err
    ids = {r.run_id for r in load_suite("wang2017").expand("sample")}
    rows = [x for x in captured.out.splitlines()[2:] if x.strip()]
    assert len(rows) == 16 and {x.split()[0] for x in rows} == ids
    assert not any(tmp_path.iterdir())  # a dry run writes nothing

    assert cli_main(["run", "--suite", "wang2017", "--dry-run", "--only", "vgg*", "--out", str(tmp_path)]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines()[2:] if x.strip()]
    assert len(rows) == 2 and all("vgg16" in x for x in rows)


def test_cli_paper_profile_needs_data_root(capsys, tmp_path: Path):
    assert cli_main(["run", "--suite", "wang2017", "--profile", "paper", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_set_on_a_grid_axis_records_no_pair_of_a_run_with_itself():
    # --set data.grayscale=gamma collapses the grayscale grid to one run: no pair can remain in that block.
    runs = load_suite("wang2017").expand("sample", {"data.grayscale": "gamma"})
    pairs = [(p, r) for r in runs for p in r.pairs]
    assert pairs and all(p.reference != r.run_id for p, r in pairs)
    assert not [p for p, _ in pairs if p.block == "ablation-grayscale"]
