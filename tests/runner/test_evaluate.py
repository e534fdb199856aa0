"""``cxr-bench evaluate``: a model made elsewhere becomes a run like any other.

The outside model is a plain numpy script that knows nothing of cxr-bench (it reads the sample's test list
and writes a CSV with the csv module). Expected values are computed here from the bundled Data_Entry CSV and
scikit-learn, not by cxr-bench: the truths, the AUCs, the paired differences.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from cxr_bench.cli import main
from cxr_bench.config import RunConfig
from cxr_bench.data.bundled import sample_root
from cxr_bench.data.labels import CHESTXRAY14
from cxr_bench.utils.io import atomic_write_json

OUTSIDE_SCRIPT = '''\
import csv, sys
import numpy as np

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
          "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
test_list, out = sys.argv[1], sys.argv[2]
names = open(test_list).read().split()
rng = np.random.default_rng(2024)
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image"] + LABELS)
    for name in names:
        w.writerow([name] + [f"{p:.6f}" for p in rng.random(len(LABELS))])
'''

FAST = ["--set", "eval.bootstrap=50"]


def _outside_csv(tmp_path: Path) -> Path:
    script = tmp_path / "my_model.py"
    script.write_text(OUTSIDE_SCRIPT)
    out = tmp_path / "preds.csv"
    subprocess.run([sys.executable, str(script), str(sample_root() / "test_list.txt"), str(out)], check=True)
    return out


def _truth() -> pd.DataFrame:
    """image -> patient and one 0/1 column per label, straight from the bundled CSV."""
    meta = pd.read_csv(sample_root() / "Data_Entry_2017_v2020.csv")
    found = meta["Finding Labels"].str.split("|")
    out = pd.DataFrame({"image": meta["Image Index"], "patient": meta["Patient ID"]})
    for lab in CHESTXRAY14:
        out[lab] = found.apply(lambda xs, lab=lab: int(lab in xs))
    return out.set_index("image")


def _aucs(images: list[str], probs: pd.DataFrame) -> dict[str, float]:
    truth = _truth().loc[images]
    return {lab: roc_auc_score(truth[lab], probs.loc[images, lab]) for lab in CHESTXRAY14 if truth[lab].nunique() == 2}


def _baseline(store: Path) -> str:
    """A demo baseline trained on the bundled sample (tiny: one step), written where a sweep would put it."""
    from cxr_bench.engine.trainer import train_run
    from cxr_bench.runner.store import Status, artifact_record

    cfg = RunConfig().replace(**{
        "model.backbone": "timm:test_resnet", "data.image_size": 32, "data.source": "png", "data.workers": 0,
        "data.augment": "none", "data.max_train_images": 16, "optim.epochs": 1, "optim.max_steps_per_epoch": 1,
        "optim.batch_size": 8, "eval.bootstrap": 50, "name": "demo-baseline"})
    run_dir = store / "demo" / cfg.run_id()
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    train_run(cfg, run_dir, progress=False)
    # What the runner records at completion: the manifest is the one record of a run's state.
    atomic_write_json(run_dir / "manifest.json", {"run_id": cfg.run_id(), "status": Status.COMPLETED,
                                                  "artifacts": artifact_record(run_dir)})
    return cfg.run_id()


@pytest.mark.slow
def test_outside_predictions_become_a_run_in_the_leaderboard_and_a_paired_comparison(tmp_path: Path, capsys):
    csv = _outside_csv(tmp_path)
    store = tmp_path / "runs"
    assert main(["evaluate", "--predictions", str(csv), "--name", "numpy-model", "--runs", str(store), *FAST]) == 0
    (run_dir,) = (store / "evaluate").iterdir()
    probs = pd.read_csv(csv).set_index("image")
    test_images = (sample_root() / "test_list.txt").read_text().split()
    expected = _aucs(test_images, probs)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n_images"] == len(test_images) == 265
    assert test["n_patients"] == _truth().loc[test_images, "patient"].nunique()
    for lab, auc in expected.items():
        assert test["per_label"][lab]["auc"] == pytest.approx(auc, abs=1e-12)
    assert test["mean_auc"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert {"calibration", "subgroups", "bootstrap"} <= set(test) and test["bootstrap"]["unit"] == "patient"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    ev = manifest["evaluated"]
    assert ev["kind"] == "predictions" and ev["label_set"] == "chestxray14" and ev["split"]["protocol"] == "official"
    import hashlib

    assert ev["predictions"]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert ev["command"].startswith("cxr-bench evaluate --predictions ") and "--name numpy-model" in ev["command"]

    # Scoring the same file again keeps the run; nothing is rewritten.
    before = (run_dir / "metrics.json").stat().st_mtime_ns
    assert main(["evaluate", "--predictions", str(csv), "--name", "numpy-model", "--runs", str(store), *FAST]) == 0
    assert "already evaluated" in capsys.readouterr().out
    assert (run_dir / "metrics.json").stat().st_mtime_ns == before

    baseline = _baseline(store)
    assert main(["leaderboard", "--runs", str(store)]) == 0
    from cxr_bench.results.leaderboard import read_leaderboard

    board = read_leaderboard(store / "evaluate" / "leaderboard.csv")
    (row,) = board.to_dict("records")
    assert (row["run_name"], row["backbone"], row["status"]) == ("numpy-model", "external:numpy-model", "completed")
    assert row["mean_auc"] == pytest.approx(test["mean_auc"], abs=1e-4)

    capsys.readouterr()
    assert main(["compare", "--runs", str(store), "--pair", f"demo/{baseline}", "numpy-model", "--bootstrap", "50",
                 "--json"]) == 0
    table = pd.DataFrame(json.loads(capsys.readouterr().out)["table"]).set_index("label")
    base = pd.read_csv(store / "demo" / baseline / "predictions" / "test.csv").set_index("image")
    base_probs = base[[f"prob_{lab}" for lab in CHESTXRAY14]].set_axis(list(CHESTXRAY14), axis=1)
    base_auc = _aucs(test_images, base_probs)
    for lab in ("Atelectasis", "Effusion", "Infiltration"):
        assert table.loc[lab, "delta"] == pytest.approx(expected[lab] - base_auc[lab], abs=1e-9)
        assert 0.0 <= table.loc[lab, "p_clustered"] <= 1.0  # Obuchowski's test, patients as clusters
    assert table.loc["mean", "n_patients"] == test["n_patients"]


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _outside_csv(tmp_path_factory.mktemp("outside")).read_text()


def _first_value(row: str, value: str) -> str:
    name, _, rest = row.split(",", 2)
    return f"{name},{value},{rest}"


def _edit(text: str, case: str) -> str | bytes:
    lines = text.splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    if case == "missing":
        return header + "".join(rows[:-3])
    if case == "foreign":
        return header + "".join(rows[:4]) + "99999999_000.png" + rows[4][rows[4].index(","):] + "".join(rows[5:])
    if case == "duplicate":
        return header + "".join(rows[:6]) + rows[2] + "".join(rows[6:])
    if case == "nan":
        return header + "".join(rows[:3]) + _first_value(rows[3], "nan") + "".join(rows[4:])
    if case == "above_one":
        return header + "".join(rows[:7]) + _first_value(rows[7], "1.5") + "".join(rows[8:])
    if case == "unknown_label":
        return header.replace("Pleural_Thickening", "Pleural Thickening") + "".join(rows)
    if case == "missing_label":
        cut = [",".join(line.rstrip("\n").split(",")[:-1]) + "\n" for line in lines]
        return "".join(cut)
    if case == "column_twice":
        return header.replace("Hernia", "Edema") + "".join(rows)
    if case == "empty":
        return ""
    if case == "header_only":
        return header
    if case == "utf16":
        return text.encode("utf-16")
    if case == "latin1":
        return (header + rows[0].replace(".png", "\xe9.png", 1) + "".join(rows[1:])).encode("latin-1")
    raise AssertionError(case)


@pytest.mark.parametrize("case, needles", [
    ("missing", ["3 of the 265 images", "have no row"]),
    ("foreign", ["line 6", "'99999999_000.png' is not in the test images", "1 of the file's 265"]),
    ("duplicate", ["line 8", "appears twice (first at line 4)"]),
    ("nan", ["line 5, column Atelectasis", "'nan' is not a finite number"]),
    ("above_one", ["line 9, column Atelectasis", "'1.5' is outside [0, 1]", "--logits"]),
    ("unknown_label", ["unknown label column(s) 'Pleural Thickening'", "did you mean 'Pleural_Thickening'"]),
    ("missing_label", ["no column for label(s) 'Hernia'"]),
    ("column_twice", ["line 1: column 'Edema' appears twice"]),
    ("empty", ["the file is empty"]),
    ("header_only", ["header but no rows"]),
    ("utf16", ["UTF-16", "save it as UTF-8"]),
    ("latin1", ["line 2: not UTF-8"]),
])
def test_bad_prediction_files_are_one_line_and_write_nothing(tmp_path: Path, capsys, good_csv: str, case: str,
                                                             needles: list[str]):
    path = _write(tmp_path / "preds.csv", _edit(good_csv, case))
    store = tmp_path / "runs"
    assert main(["evaluate", "--predictions", str(path), "--runs", str(store), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cxr-bench: error: {path}")
    for needle in needles:
        assert needle in err
    assert not store.exists()


def test_logits_are_taken_through_the_sigmoid(tmp_path: Path, good_csv: str):
    df = pd.read_csv(pd.io.common.StringIO(good_csv))
    logits = df.copy()
    logits[list(CHESTXRAY14)] = (df[list(CHESTXRAY14)] - 0.5) * 8.0  # outside [0, 1]: refused without --logits
    path = tmp_path / "logits.csv"
    logits.to_csv(path, index=False)
    store = tmp_path / "runs"
    assert main(["evaluate", "--predictions", str(path), "--runs", str(store), *FAST]) == 2
    assert not store.exists()
    assert main(["evaluate", "--predictions", str(path), "--logits", "--runs", str(store), *FAST]) == 0
    (run_dir,) = (store / "evaluate").iterdir()
    written = pd.read_csv(run_dir / "predictions" / "test.csv").set_index("image")
    src = logits.set_index("image").loc[written.index]
    np.testing.assert_allclose(written["prob_Edema"], expit(src["Edema"]), rtol=1e-15)


@pytest.mark.slow
def test_torchvision_checkpoint_is_scored_with_the_networks_own_outputs(tmp_path: Path, phantom_root: Path):
    """A resnet18 saved by plain torchvision code (classifier replaced) is evaluated as timm:resnet18 + gap;
    its test probabilities are the torchvision network's own sigmoid outputs on the same images."""
    from PIL import Image

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Linear(512, len(CHESTXRAY14))
    net.eval()
    weights = tmp_path / "resnet18_cxr.pt"
    torch.save(net.state_dict(), weights)
    store = tmp_path / "runs"
    assert main(["evaluate", "--model", "timm:resnet18", "--head", "gap", "--weights", str(weights),
                 "--data-root", str(phantom_root), "--runs", str(store), "--set", "data.image_size=64",
                 "--set", "data.source=png", "--set", "data.workers=0", *FAST]) == 0
    (run_dir,) = (store / "evaluate").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["backbone"] == "timm:resnet18" and config["model"]["pretrained"] == str(weights.resolve())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["weights"]["layout"] == "native" and "val" in metrics and metrics["test"]["n_images"] > 0
    # Its inference cost is measured like a trained run's, the weights file's size included.
    cost = json.loads((run_dir / "cost.json").read_text())
    assert cost["image_size"] == 64 and cost["cpu"]["batch1_latency_ms"] > 0
    assert cost["checkpoint_mb"] == pytest.approx(weights.stat().st_size / 2**20)

    pred = pd.read_csv(run_dir / "predictions" / "test.csv")
    images = np.stack([np.asarray(Image.open(phantom_root / "images" / name).convert("L")) for name in pred["image"]])
    x = torch.from_numpy(images).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(net((x - mean) / std)).double().numpy()
    np.testing.assert_allclose(pred[[f"prob_{lab}" for lab in CHESTXRAY14]].to_numpy(), expected, atol=1e-5)


def test_weights_that_do_not_fit_write_nothing(tmp_path: Path, capsys):
    weights = tmp_path / "tv.pt"
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Linear(512, 3)  # 3 outputs for a 14-label set
    torch.save(net.state_dict(), weights)
    store = tmp_path / "runs"
    assert main(["evaluate", "--model", "timm:resnet18", "--weights", str(weights), "--runs", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected (14, 512)" in err
    assert not store.exists()


def test_validation_predictions_choose_the_thresholds(tmp_path: Path, good_csv: str, capsys):
    test_csv = _write(tmp_path / "test.csv", good_csv)
    names = (sample_root() / "train_val_list.txt").read_text().split()[:200]
    rng = np.random.default_rng(5)
    val = pd.DataFrame(rng.random((len(names), len(CHESTXRAY14))), columns=list(CHESTXRAY14)).round(6)
    val.insert(0, "image", names)
    val_csv = tmp_path / "val.csv"
    val.to_csv(val_csv, index=False)
    store = tmp_path / "runs"
    # a test image among the validation predictions is refused
    leak = pd.concat([val, pd.read_csv(pd.io.common.StringIO(good_csv)).head(1)], ignore_index=True)
    leak.to_csv(tmp_path / "leak.csv", index=False)
    assert main(["evaluate", "--predictions", str(test_csv), "--val-predictions", str(tmp_path / "leak.csv"),
                 "--runs", str(store), *FAST]) == 2
    assert "line 202" in capsys.readouterr().err and not store.exists()

    assert main(["evaluate", "--predictions", str(test_csv), "--val-predictions", str(val_csv), "--runs", str(store),
                 *FAST]) == 0
    (run_dir,) = (store / "evaluate").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["n_images"] == 200 and metrics["test"]["threshold_method"] == "youden"
    truth = _truth().loc[(sample_root() / "test_list.txt").read_text().split()]
    test_probs = pd.read_csv(test_csv).set_index("image").loc[truth.index]
    entry = metrics["test"]["per_label"]["Effusion"]
    pos = truth["Effusion"] == 1
    assert entry["threshold"] is not None
    assert entry["sensitivity"] == pytest.approx(float((test_probs.loc[pos, "Effusion"] >= entry["threshold"]).mean()))
    assert entry["specificity"] == pytest.approx(float((test_probs.loc[~pos, "Effusion"] < entry["threshold"]).mean()))
