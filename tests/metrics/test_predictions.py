"""The predictions CSV: exact round trip, atomic write, and errors that name the file, line and column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_bench.errors import CxrBenchError, RunStoreError
from cxr_bench.metrics import per_label_auc, read_predictions, summarize, write_predictions

LABELS = ["Atelectasis", "Pleural_Thickening", "Hernia"]


def _arrays(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    p = rng.random((n, 3)).astype(np.float32)  # float32 like a model's sigmoid output
    images = [f"{i:08d}_{i % 3:03d}.png" for i in range(n)]
    patients = [i // 3 + 1 for i in range(n)]
    return images, patients, y, p


def test_round_trip_is_exact(tmp_path):
    images, patients, y, p = _arrays()
    path = write_predictions(tmp_path / "predictions" / "test.csv", images, patients, y, p, LABELS)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["image", "patient_id"] + [f"true_{n}" for n in LABELS] + [f"prob_{n}" for n in LABELS]
    pred = read_predictions(path, labels=LABELS)
    assert pred.labels == tuple(LABELS) and len(pred) == 40
    assert pred.images.tolist() == images and pred.patient_ids.tolist() == [str(x) for x in patients]
    np.testing.assert_array_equal(pred.y_true, y)
    np.testing.assert_array_equal(pred.y_prob, p.astype(np.float64))  # bit-exact, no rounding
    np.testing.assert_array_equal(per_label_auc(pred.y_true, pred.y_prob), per_label_auc(y, p))
    assert [f.name for f in path.parent.iterdir()] == ["test.csv"]  # no temporary file left behind
    assert summarize(pred, n_bootstrap=20)["n_patients"] == len(set(patients))


def _write_raw(tmp_path, mutate):
    images, patients, y, p = _arrays(n=6)
    path = write_predictions(tmp_path / "test.csv", images, patients, y, p, LABELS)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = mutate(df)
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.drop(columns=["prob_Hernia"]), "true_Hernia has no matching prob_Hernia"),
        (lambda d: d.drop(columns=["patient_id"]), "patient_id"),
        (lambda d: d.assign(prob_Atelectasis=["0.1", "0.2", "nan", "0.3", "0.4", "0.5"]),
         "line 4, column prob_Atelectasis: 'nan'"),
        (lambda d: d.assign(prob_Hernia=["0.1", "", "0.2", "0.3", "0.4", "0.5"]), "line 3, column prob_Hernia"),
        (lambda d: d.assign(prob_Hernia=["0.1", "0.2", "0.2", "0.3", "1.5", "0.5"]), "line 6.*outside"),
        (lambda d: d.assign(true_Atelectasis=["0", "1", "2", "0", "0", "0"]), "line 4.*not 0 or 1"),
        (lambda d: d.assign(image=["a", "b", "c", "a", "e", "f"]), "line 5: image a appears twice"),
        (lambda d: d.assign(extra=1), "unexpected column"),
    ],
)
def test_read_errors_name_file_line_and_column(tmp_path, mutate, message):
    path = _write_raw(tmp_path, mutate)
    with pytest.raises(RunStoreError, match=message) as err:
        read_predictions(path)
    assert str(path) in str(err.value)


def test_read_missing_empty_and_wrong_labels(tmp_path):
    with pytest.raises(RunStoreError, match="not found"):
        read_predictions(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RunStoreError, match="empty"):
        read_predictions(tmp_path / "empty.csv")
    images, patients, y, p = _arrays(n=5)
    path = write_predictions(tmp_path / "t.csv", images, patients, y, p, LABELS)
    with pytest.raises(RunStoreError, match="expected"):
        read_predictions(path, labels=["Atelectasis", "Hernia"])
    with pytest.raises(RunStoreError, match="Mass"):
        read_predictions(path).select(["Mass"])


def test_write_validates_before_touching_the_file(tmp_path):
    images, patients, y, p = _arrays(n=5)
    target = tmp_path / "test.csv"
    write_predictions(target, images, patients, y, p, LABELS)
    before = target.read_bytes()
    bad = p.copy()
    bad[2, 1] = np.nan
    with pytest.raises(CxrBenchError, match="line 4, column prob_Pleural_Thickening"):
        write_predictions(target, images, patients, y, bad, LABELS)
    assert target.read_bytes() == before
    with pytest.raises(ValueError, match="must both be"):
        write_predictions(target, images, patients, y, p[:, :2], LABELS)


def test_typed_read_gives_the_doubles_of_the_text_path(tmp_path):
    rng = np.random.default_rng(3)
    n = 500
    y = (rng.random((n, 3)) < 0.3).astype(np.int8)
    p = rng.random((n, 3))  # float64 with 17 significant digits: the hardest case for a CSV float parser
    p[:5] = [[0.0, 1.0, 5e-324], [1e-300, 0.1, 0.3], [0.5, 2**-30, 1 - 2**-53], [0.25, 0.75, 1e-17], [1, 0, 1]]
    images = [f"{i:08d}_000.png" for i in range(n)]
    path = write_predictions(tmp_path / "t.csv", images, [str(i // 4) for i in range(n)], y, p, LABELS)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = np.column_stack([[float(v) for v in text[f"prob_{lab}"]] for lab in LABELS])  # Python's parser
    pred = read_predictions(path)
    assert pred.y_prob.dtype == np.float64 and np.array_equal(pred.y_prob, expected)
    assert np.array_equal(pred.y_prob, p) and pred.y_true.dtype == np.int8 and np.array_equal(pred.y_true, y)
    assert pred.patient_ids.tolist() == [str(i // 4) for i in range(n)]
