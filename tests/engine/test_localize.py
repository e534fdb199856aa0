"""The localization pipeline (cxr_bench.engine.localize): heatmap cells -> 1024-px boxes, scoring, Table 4, end to end.

The box math itself (IoU, IoBB, thresholds) is tested in tests/metrics/test_localization.py; here: that the
pipeline maps a heatmap of the whole image onto BBox_List's 1024-px frame, scores each label on the right
images, lines up with Wang et al. Table 4, and that a model trained briefly on phantoms with planted
lesions puts its boxes on them far more often than randomly placed boxes of the same sizes do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_bench.cli import main as cli_main
from cxr_bench.engine.localize import (
    BBOX_FRAME,
    detect_boxes,
    localize_run,
    score_detections,
)
from cxr_bench.metrics.localization import localization_table
from cxr_bench.results.localization import localization_report_table


def test_heatmap_cells_map_onto_the_1024_px_frame():
    # An 8x8 map: each cell is 128 px of the 1024-px image; the hot block is rows 2-3, columns 4-5.
    hm = np.zeros((8, 8))
    hm[2:4, 4:6] = 1.0
    np.testing.assert_allclose(detect_boxes(hm), [[512.0, 256.0, 256.0, 256.0]])
    # A 7x7 map does not divide 1024: the last column still ends exactly at the frame's edge.
    hm = np.zeros((7, 7))
    hm[0, 6] = 1.0
    (box,) = detect_boxes(hm)
    np.testing.assert_allclose(box, [6 * 1024 / 7, 0.0, 1024 / 7, 1024 / 7])
    assert box[0] + box[2] == pytest.approx(BBOX_FRAME)


def test_both_thresholds_give_boxes_on_the_normalised_map():
    # Normalised to [0, 255]: the 0.5 cell is 127.5, above 60 and below 180; values are shifted and scaled
    # on purpose (a CAM is in logit units, not [0, 1]).
    hm = np.full((4, 4), -3.0)
    hm[0, 0] = 7.0
    hm[0, 1] = 2.0
    boxes = detect_boxes(hm)
    np.testing.assert_allclose(boxes, [[0, 0, 512, 256], [0, 0, 256, 256]])
    assert len(detect_boxes(hm, thresholds=(180,))) == 1


def _boxes(rows: list[tuple[str, str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "label", "x", "y", "w", "h"])


def test_score_detections_scores_each_label_on_its_own_images():
    names = ["a.png", "b.png"]
    labels = ["Mass", "Nodule"]
    hm = np.zeros((2, 2, 4, 4))
    hm[0, 0, 0, 0] = 1.0  # a.png / Mass: hot in the top-left cell, where its box is
    hm[1, 1, 0, 0] = 1.0  # b.png / Nodule: hot top-left, but its box is bottom-right
    hm[1, 0, 3, 3] = 1.0  # b.png / Mass: hot where the Nodule box is; b.png has no Mass box, so unscored
    gt = _boxes([("a.png", "Mass", 0, 0, 256, 256), ("b.png", "Nodule", 768, 768, 256, 256)])
    table, detections = score_detections(hm, names, labels, gt)

    iobb = table[table["metric"] == "iobb"].set_index(["label", "threshold"])
    assert (iobb.loc["Mass", "accuracy"] == 1.0).all()
    assert (iobb.loc["Mass", "afp"] == 0.0).all()
    assert (iobb.loc["Nodule", "accuracy"] == 0.0).all()
    assert (iobb.loc["Nodule", "afp"] == 1.0).all()  # one box, overlapping nothing, on one image
    assert set(table["label"]) == {"Mass", "Nodule"}
    assert (table["n_images"] == 1).all()
    assert sorted(zip(detections["image"], detections["label"])) == [("a.png", "Mass"), ("b.png", "Nodule")]
    assert detections[["x", "y", "w", "h"]].to_numpy().tolist() == [[0, 0, 256, 256], [0, 0, 256, 256]]

    with pytest.raises(ValueError, match="heatmaps of shape"):
        score_detections(hm[:, :1], names, labels, gt)


def test_localize_without_a_run_directory_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["localize", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and str(tmp_path) in err


def _random_baseline(detections: pd.DataFrame, boxes: pd.DataFrame, draws: int = 20, seed: int = 0) -> float:
    """Mean accuracy at T(IoBB)=0.1 of the model's own boxes (same count and sizes) placed uniformly at random."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        det: dict[str, list[np.ndarray]] = {}
        gt: dict[str, list[np.ndarray]] = {}
        for (name, label), g in boxes.groupby(["image", "label"]):
            d = detections[(detections["image"] == name) & (detections["label"] == label)]
            d = d[["x", "y", "w", "h"]].to_numpy(dtype=float).copy()
            d[:, 0] = rng.uniform(0, BBOX_FRAME - d[:, 2])
            d[:, 1] = rng.uniform(0, BBOX_FRAME - d[:, 3])
            det.setdefault(label, []).append(d)
            gt.setdefault(label, []).append(g[["x", "y", "w", "h"]].to_numpy(dtype=float))
        t = localization_table(det, gt, metrics=("iobb",))
        scores.append(t[np.isclose(t["threshold"], 0.1)]["accuracy"].mean())
    return float(np.mean(scores))


@pytest.mark.slow
def test_trained_model_boxes_hit_the_planted_lesions(tmp_path, capsys):
    """Phantoms with planted lesions, a tiny model trained by the engine, then `cxr-bench localize`."""
    from cxr_bench.config import RunConfig
    from cxr_bench.data.phantoms import make_phantom_release
    from cxr_bench.data.release import NIHRelease
    from cxr_bench.engine.trainer import train_run
    from cxr_bench.utils.io import atomic_write_json

    # 128 px gives a 4x4 heatmap at stride 32; timm's test_resnet trains in seconds on a CPU.
    root = make_phantom_release(tmp_path / "phantoms", n_patients=40, size=128, seed=0)
    cfg = RunConfig.from_dict({
        "data": {"root": str(root), "label_set": "chestxray8", "image_size": 128, "augment": "none",
                 "workers": 0, "cache_dir": str(tmp_path / "cache")},
        "model": {"backbone": "timm:test_resnet", "head": "gap"},
        "optim": {"epochs": 25, "batch_size": 16, "optimizer": "adamw", "lr": 3e-3, "scheduler": "none"},
        "eval": {"bootstrap": 10},
        "device": "cpu",
    })
    run_dir = tmp_path / "run"
    train_run(cfg, run_dir, progress=False)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())  # what the runner writes

    # The tiny val split makes best.pt an early, noisy pick; localize the fully trained model.
    assert cli_main(["localize", "--run-dir", str(run_dir), "--checkpoint", "last.pt"]) == 0
    out = capsys.readouterr().out
    assert "Atelectasis (paper)" in out

    table = pd.read_csv(run_dir / "localization.csv")
    boxes = NIHRelease.open(root).bboxes
    assert set(table["label"]) == set(boxes["label"])
    assert set(table["metric"]) == {"iobb", "iou"}
    assert sorted(table[table["metric"] == "iou"]["threshold"].unique()) == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    detections = pd.read_csv(run_dir / "localization_boxes.csv")
    assert ((detections["x"] >= 0) & (detections["x"] + detections["w"] <= BBOX_FRAME + 1e-6)).all()
    assert (run_dir / "figures" / "localization.png").stat().st_size > 10_000

    at01 = table[(table["metric"] == "iobb") & np.isclose(table["threshold"], 0.1)]["accuracy"].mean()
    random = _random_baseline(detections, boxes)
    assert at01 > random + 0.15, (at01, random)
    assert at01 > 1.5 * random, (at01, random)

    wide = localization_report_table(run_dir)
    assert wide is not None and list(wide.index) == pytest.approx([0.1, 0.25, 0.5, 0.75, 0.9])
    assert wide.loc[0.1, "Cardiomegaly (paper)"] == pytest.approx(0.9931)

    # --out elsewhere: the table moves, the summary goes beside it, the run's own table is untouched.
    res = localize_run(run_dir, checkpoint="last.pt", out=tmp_path / "elsewhere" / "loc.csv", n_figure=0)
    assert res.json_path == tmp_path / "elsewhere" / "loc.json" and res.json_path.is_file()
    assert res.summary["n_boxes"] == len(boxes)
    pd.testing.assert_frame_equal(pd.read_csv(res.csv_path), table)

    # The sweep's way: the run's typed config and a release already open; config.json is not read again.
    (run_dir / "config.json").rename(run_dir / "config.json.away")
    typed = localize_run(run_dir, config=cfg, release=NIHRelease.open(root), checkpoint="last.pt",
                         out=tmp_path / "typed" / "loc.csv", n_figure=0)
    assert typed.csv_path.read_bytes() == res.csv_path.read_bytes()
    assert typed.boxes_path.read_bytes() == res.boxes_path.read_bytes()
