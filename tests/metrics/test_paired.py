"""Paired comparison: the patient bootstrap replayed with scikit-learn, Holm against statsmodels and a hand
example, the analytic columns against delong.py / clustered.py, seeds, and degenerate labels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics import (
    clustered_auc_test,
    delong_test,
    holm,
    paired_bootstrap,
    paired_comparison,
    resample_groups,
)
from cxr_bench.metrics.paired import PAIRED_COLUMNS, benjamini_hochberg, verdict
from cxr_bench.metrics.simulation import NullScenario, rejection_rates


def _data(seed: int = 0, n_patients: int = 60, n_labels: int = 3, effect: float = 0.3):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, n_patients)
    patient = np.repeat([f"p{i:03d}" for i in range(n_patients)], sizes)
    n = patient.size
    frail = np.repeat(rng.normal(size=n_patients), sizes)
    y = (frail[:, None] + rng.normal(size=(n, n_labels)) > 0.8).astype(np.int8)
    shared = np.repeat(rng.normal(size=(n_patients, n_labels)), sizes, axis=0)
    a = 1 / (1 + np.exp(-(y + shared + rng.normal(size=y.shape))))
    b = 1 / (1 + np.exp(-((1 + effect) * y + shared + rng.normal(size=y.shape))))
    return y, a, b, patient


# ------------------------------------------------------------------------------------------ Holm


def test_holm_hand_example_and_nan():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02 0.03 0.06 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([np.nan, 0.01, 0.04])  # NaN is not in the family: m = 2
    assert np.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert np.isnan(holm([np.nan, np.nan])).all()


def test_holm_equals_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(3)
    for m in (1, 2, 14, 50):
        p = rng.random(m) ** 3
        p[: m // 4] = p[0]  # ties
        _, expected, _, _ = multitest.multipletests(p, alpha=0.05, method="holm")
        np.testing.assert_allclose(holm(p), expected, rtol=0, atol=1e-15)


def test_benjamini_hochberg_equals_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(4)
    for m in (1, 2, 14, 126):
        p = rng.random(m) ** 3
        p[: m // 4] = p[0]
        _, expected, _, _ = multitest.multipletests(p, alpha=0.05, method="fdr_bh")
        np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=0, atol=1e-15)
    out = benjamini_hochberg([np.nan, 0.01, 0.04])
    assert np.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])


def test_verdict_rules():
    assert verdict(0.02, 0.01) == "better" and verdict(-0.02, 0.01) == "worse"
    assert verdict(0.02, 0.05) == "no evidence" and verdict(0.0, 0.0) == "no evidence"
    assert verdict(math.nan, 0.01) == "no test" and verdict(0.1, math.nan) == "no test"


# ------------------------------------------------------------------------------------------ bootstrap


def test_one_seed_bootstrap_replays_with_sklearn():
    y, a, b, patient = _data()
    n = 20
    boot = paired_bootstrap(y, [a], [b], patient, n=n, seed=11)
    ids = np.unique(patient)
    rows_of = {i: np.flatnonzero(patient == pid) for i, pid in enumerate(ids)}
    draws = resample_groups(len(ids), n, 11)
    for j in range(y.shape[1]):
        diffs = []
        for r in range(n):
            rows = np.concatenate([rows_of[i] for i in draws[r]])
            diffs.append(roc_auc_score(y[rows, j], b[rows, j]) - roc_auc_score(y[rows, j], a[rows, j]))
        diffs = np.array(diffs)
        np.testing.assert_allclose(boot.replicates_b[0, :, j] - boot.replicates_a[0, :, j], diffs, atol=1e-12)
        d = boot.labels[j]
        assert d.delta == pytest.approx(roc_auc_score(y[:, j], b[:, j]) - roc_auc_score(y[:, j], a[:, j]), abs=1e-12)
        assert d.ci == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
        assert d.se == pytest.approx(diffs.std(ddof=1), rel=1e-9)
        assert d.p == pytest.approx(math.erfc(abs(d.delta) / d.se / math.sqrt(2)), rel=1e-9)
        assert math.isinf(d.df)
    # The mean over labels uses the same resampled patients for every label.
    mean_diffs = (boot.replicates_b[0] - boot.replicates_a[0]).mean(axis=1)
    assert boot.mean.ci == pytest.approx(tuple(np.percentile(mean_diffs, [2.5, 97.5])), abs=1e-12)


def test_same_model_on_both_sides_is_no_evidence():
    y, a, _, patient = _data()
    t = paired_comparison(y, [a], [a], patient, n_bootstrap=50)
    assert (t["delta"] == 0).all() and (t["p_bootstrap"] == 1).all()
    assert (t["verdict"] == "no evidence").all()
    assert list(t.columns) == list(PAIRED_COLUMNS)


def test_analytic_columns_equal_delong_and_obuchowski():
    y, a, b, patient = _data(1)
    t = paired_comparison(y, [a], [b], patient, labels=["x", "y", "z"], n_bootstrap=50).set_index("label")
    for j, lab in enumerate("xyz"):
        assert t.loc[lab, "p_delong_image_level"] == pytest.approx(delong_test(y[:, j], b[:, j], a[:, j]).p, rel=1e-9)
        assert t.loc[lab, "p_clustered"] == pytest.approx(clustered_auc_test(y[:, j], b[:, j], a[:, j], patient).p,
                                                          rel=1e-9)
    np.testing.assert_allclose(t.loc[list("xyz"), "p_bootstrap_holm"], holm(t.loc[list("xyz"), "p_bootstrap"]))
    np.testing.assert_allclose(t.loc[list("xyz"), "p_clustered_holm"], holm(t.loc[list("xyz"), "p_clustered"]))
    # The mean row is the pair's single primary endpoint: not adjusted, bootstrap only.
    assert t.loc["mean", "p_bootstrap_holm"] == t.loc["mean", "p_bootstrap"]
    assert math.isnan(t.loc["mean", "p_clustered"])
    assert t.loc["mean", "delta"] == pytest.approx(t.loc[list("xyz"), "delta"].mean())


def test_verdicts_use_the_holm_adjusted_p():
    # Ten labels with a modest true improvement: some raw p-values pass 0.05 that the adjusted ones do not.
    y, a, b, patient = _data(5, n_patients=150, n_labels=10, effect=0.35)
    t = paired_comparison(y, [a], [b], patient, n_bootstrap=200).iloc[:-1]
    raw_only = t[(t["p_bootstrap"] < 0.05) & (t["p_bootstrap_holm"] >= 0.05)]
    assert len(raw_only) > 0 and (raw_only["verdict"] == "no evidence").all()
    expected = [verdict(d, p) for d, p in zip(t["delta"], t["p_bootstrap_holm"])]
    assert t["verdict"].tolist() == expected


def test_identical_seeds_add_nothing_and_different_seeds_widen():
    y, a, b, patient = _data(2)
    one = paired_comparison(y, [a], [b], patient, n_bootstrap=100, seed=4).set_index("label")
    copies = paired_comparison(y, [a, a, a], [b, b], patient, n_bootstrap=100, seed=4).set_index("label")
    np.testing.assert_allclose(copies["delta"], one["delta"], atol=1e-12)
    np.testing.assert_allclose(copies["se"], one["se"], rtol=1e-9)
    np.testing.assert_allclose(copies["p_bootstrap"], one["p_bootstrap"], rtol=1e-9)
    np.testing.assert_allclose(copies["p_clustered"], one["p_clustered"], rtol=1e-9)

    rng = np.random.default_rng(0)
    # Three seeds per side whose AUCs differ by much more than test noise (a seed-specific shift of the
    # positives' scores): the seed component must widen the interval and give finite Satterthwaite df.
    seeds_a = [np.clip(a + s * y, 0, 1) for s in (-0.3, 0.0, 0.3)]
    seeds_b = [np.clip(b + s * y, 0, 1) for s in (-0.25, 0.05, 0.35)]
    seeds_a = [np.clip(x + rng.normal(0, 1e-3, x.shape), 0, 1) for x in seeds_a]
    wide = paired_comparison(y, seeds_a, seeds_b, patient, n_bootstrap=100, seed=4).set_index("label")
    narrow = paired_comparison(y, seeds_a, seeds_b, patient, n_bootstrap=100, seed=4,
                               seed_variance=False).set_index("label")
    assert (wide["se"] > narrow["se"]).all()
    assert np.isfinite(wide["df"]).all() and (wide["df"] >= 2).all()
    assert (wide["p_bootstrap"] >= narrow["p_bootstrap"]).all()
    # Auc columns are seed means.
    assert wide.loc["label_0", "auc_a"] == pytest.approx(np.mean([roc_auc_score(y[:, 0], s[:, 0]) for s in seeds_a]))


def test_labels_with_fewer_than_two_positives_are_nan_with_reason():
    y, a, b, patient = _data(4)
    y = y.copy()
    y[:, 1] = 0
    y[0, 1] = 1  # one positive
    y[:, 2] = 1  # no negative
    t = paired_comparison(y, [a], [b], patient, labels=["ok", "one", "none"], n_bootstrap=30).set_index("label")
    for lab in ("one", "none"):
        assert t.loc[lab, ["auc_a", "delta", "p_bootstrap", "p_clustered", "p_delong_image_level"]].isna().all()
        assert "needs at least 2" in t.loc[lab, "reason"] and t.loc[lab, "verdict"] == "no test"
    assert t.loc["mean", "delta"] == pytest.approx(t.loc["ok", "delta"])  # the mean skips them
    assert t.loc["ok", "p_bootstrap_holm"] == t.loc["ok", "p_bootstrap"]  # a family of one


def test_bad_shapes_raise():
    y, a, b, patient = _data()
    with pytest.raises(ValueError, match="side B"):
        paired_bootstrap(y, [a], [b[:-1]], patient, n=5)
    with pytest.raises(ValueError, match="one patient per image"):
        paired_bootstrap(y, [a], [b], patient[:-1], n=5)
    with pytest.raises(ValueError, match="no model"):
        paired_bootstrap(y, [], [b], patient, n=5)
    assert isinstance(paired_comparison(y, [a], [b], patient, n_bootstrap=5), pd.DataFrame)


# ------------------------------------------------------------------------------------------ seed terms


def _seed_stats(reps: np.ndarray, auc: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    """(s^2, tau2) of one side, written out from the replicates (the module docstring's formulas)."""
    k = auc.size
    s2 = float(np.var(auc, ddof=1))
    r = reps[:, ok]
    noise = np.mean([np.var(r[i] - r.mean(axis=0), ddof=1) for i in range(k)]) * k / (k - 1)
    return s2, max(0.0, s2 - noise)


def test_satterthwaite_df_uses_the_seed_mean_square_even_when_tau2_truncates():
    # Three seeds per side that differ by far less than test noise: tau2 truncates to 0 on both sides,
    # yet the seeds' mean square s^2/k was estimated from 3 seeds each and must give finite df (Hillis 2007).
    y, a, b, patient = _data(5, n_patients=80, n_labels=1)
    rng = np.random.default_rng(1)
    side_a = [np.clip(a + rng.normal(0, 1e-3, a.shape), 0, 1) for _ in range(3)]
    side_b = [np.clip(b + rng.normal(0, 1e-3, b.shape), 0, 1) for _ in range(3)]
    boot = paired_bootstrap(y, side_a, side_b, patient, n=200, seed=2)
    d = boot.labels[0]
    ra, rb = boot.replicates_a[:, :, 0], boot.replicates_b[:, :, 0]
    ok = np.isfinite(ra).all(axis=0) & np.isfinite(rb).all(axis=0)
    auc_a = np.array([roc_auc_score(y[:, 0], s[:, 0]) for s in side_a])
    auc_b = np.array([roc_auc_score(y[:, 0], s[:, 0]) for s in side_b])
    (s2a, ta), (s2b, tb) = _seed_stats(ra, auc_a, ok), _seed_stats(rb, auc_b, ok)
    assert ta == 0.0 and tb == 0.0 and s2a > 0 and s2b > 0
    var_test = np.var(rb[:, ok].mean(axis=0) - ra[:, ok].mean(axis=0), ddof=1)
    ms = [s2a / 3, s2b / 3]
    df = max(var_test**2 / sum(m * m / 2 for m in ms), sum(ms) ** 2 / sum(m * m / 2 for m in ms))
    assert d.se == pytest.approx(math.sqrt(var_test), rel=1e-9)
    assert math.isfinite(d.df) and d.df == pytest.approx(df, rel=1e-9)
    assert d.p == pytest.approx(2 * stats.t.sf(abs(d.delta) / d.se, df), rel=1e-9)


def test_a_one_seed_side_borrows_the_other_sides_seed_variance():
    y, a, b, patient = _data(6, n_patients=80, n_labels=1)
    side_b = [np.clip(b + s * y, 0, 1) for s in (-0.3, -0.1, 0.0, 0.2)]  # seeds far apart: tau2 > 0
    boot = paired_bootstrap(y, [a], side_b, patient, n=200, seed=3)
    d = boot.labels[0]
    ra, rb = boot.replicates_a[:, :, 0], boot.replicates_b[:, :, 0]
    ok = np.isfinite(ra).all(axis=0) & np.isfinite(rb).all(axis=0)
    auc_b = np.array([roc_auc_score(y[:, 0], s[:, 0]) for s in side_b])
    s2, tau2 = _seed_stats(rb, auc_b, ok)
    assert tau2 > 0
    var_test = np.var(rb[:, ok].mean(axis=0) - ra[:, ok].mean(axis=0), ddof=1)
    weight = 1 / 1 + 1 / 4  # the 1-seed side's model is one draw too: tau2 / 1 + tau2 / 4
    var = var_test + tau2 * weight
    df = max(var**2 / ((s2 * weight) ** 2 / 3), 3.0)
    assert d.se == pytest.approx(math.sqrt(var), rel=1e-9) and d.df == pytest.approx(df, rel=1e-9)
    assert d.tau2_a == pytest.approx(tau2) and d.tau2_b == pytest.approx(tau2)
    assert "borrowed" in d.seeds and d.ci == pytest.approx((d.delta - stats.t.ppf(0.975, df) * d.se,
                                                            d.delta + stats.t.ppf(0.975, df) * d.se))
    # Either order of the sides borrows alike.
    flipped = paired_bootstrap(y, side_b, [a], patient, n=200, seed=3).labels[0]
    assert flipped.se == pytest.approx(d.se, rel=1e-9) and flipped.delta == pytest.approx(-d.delta)


@pytest.mark.slow
def test_null_with_a_one_seed_side_holds_alpha_when_it_borrows():
    # 1 vs 5 seeds, seed-to-seed AUC sd about 0.04 on both sides (the case of 20% rejection when the
    # 1-seed side's training variance is dropped): borrowing keeps the bootstrap and clustered tests near 5%.
    sc = NullScenario("1 vs 5", n_patients=400, seeds_a=1, seeds_b=5, seed_sd=0.2)
    r = rejection_rates(sc, 300, n_bootstrap=100, seed=1, labels=("Effusion",)).iloc[0]
    assert r["seed_sd_auc"] > 0.025, r.to_dict()
    band = 0.05 + 2.5 * r["mc_se"]
    assert r["reject_bootstrap"] <= band and r["reject_clustered"] <= band, r.to_dict()
    # What dropping it costs: the same sets with the seeds ignored reject far more often.
    assert r["reject_bootstrap_patients_only"] > 0.12, r.to_dict()


def test_a_label_with_a_liberal_test_says_so_in_its_verdict():
    y, a, b, patient = _data(3, n_patients=150, n_labels=2, effect=2.0)
    t = paired_comparison(y, [a], [b], patient, labels=["Atelectasis", "Emphysema"], n_bootstrap=100).set_index("label")
    assert t.loc["Atelectasis", "verdict"] == "better"
    flagged = t.loc["Emphysema"]
    assert flagged["verdict"].startswith("better (liberal test: the null simulation") and "11.0%" in flagged["verdict"]
    assert "liberal test" in flagged["reason"]
    assert verdict(0.0, 0.5, label="Emphysema") == "no evidence"  # a liberal label's "no evidence" stands
    assert verdict(0.0, 0.5, label="Hernia").startswith("no evidence (conservative test")
    assert verdict(0.1, 0.001, label="Hernia") == "better"  # a conservative test's rejection stands


# ------------------------------------------------------------------------------------------ stored replicates


def test_a_models_replicates_are_the_paired_bootstraps_and_round_trip(tmp_path):
    from cxr_bench.metrics.paired import load_replicates, model_replicates, replicate_key, save_replicates

    y, a, b, patient = _data(seed=4, n_labels=4)
    y[:, 3] = 0
    y[0, 3] = 1  # one positive: no replicates for that label
    boot = paired_bootstrap(y, [a], [b], patient, n=120, seed=3)
    reps = model_replicates(y, a, patient, n=120, seed=3)
    assert reps.shape == (4, 121)
    np.testing.assert_array_equal(reps[:3, 1:], boot.replicates_a[0].T[:3])
    np.testing.assert_array_equal(reps[:3, 0], boot.auc_a[:3])
    assert np.isnan(reps[3]).all()
    path = save_replicates(tmp_path / "r.npz", y, a, patient, ["w", "x", "y", "z"], model_key="abc", n=120, seed=3)
    got = load_replicates(path, "abc")
    n_groups = np.unique(patient).size
    assert set(got) == {replicate_key("abc", lab, 120, 3, n_groups, y.shape[0], int(y[:, j].sum()))
                        for j, lab in enumerate("wxy")}
    np.testing.assert_array_equal(got[replicate_key("abc", "x", 120, 3, n_groups, y.shape[0], int(y[:, 1].sum()))],
                                  reps[1])
    # Another predictions file, a damaged file, a missing one: nothing is used.
    assert load_replicates(path, "other") == {}
    (tmp_path / "bad.npz").write_bytes(path.read_bytes()[:200])
    assert load_replicates(tmp_path / "bad.npz", "abc") == {}
    assert load_replicates(tmp_path / "none.npz", "abc") == {}
    with np.load(path) as z:  # rounded numbers (another dtype) are not the comparison's numbers
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "f32.npz", **{**arrays, "auc": arrays["auc"].astype(np.float32)})
    assert load_replicates(tmp_path / "f32.npz", "abc") == {}
    # Damaged or hostile files of every other shape are ignored, never raised.
    bad = {"nan_meta": {**arrays, "meta": np.full(5, np.nan)}, "labels_2d": {**arrays, "labels": arrays["labels"][None]},
           "npos_text": {**arrays, "n_pos": arrays["n_pos"].astype(str)}, "no_key": {k: v for k, v in arrays.items()
                                                                                    if k != "model_key"},
           "key_array": {**arrays, "model_key": np.asarray(["abc", "abc"])}}
    for name, content in bad.items():
        np.savez(tmp_path / f"{name}.npz", **content)
        assert load_replicates(tmp_path / f"{name}.npz", "abc") == {}, name
    np.save(tmp_path / "plain.npy", arrays["auc"])
    assert load_replicates(tmp_path / "plain.npy", "abc") == {}
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    raw = bytearray((tmp_path / "z.npz").read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 40] = b"\x00" * 40
    (tmp_path / "z.npz").write_bytes(bytes(raw))  # a compressed member whose data is damaged
    assert load_replicates(tmp_path / "z.npz", "abc") == {}


def test_a_comparison_from_stored_replicates_equals_one_computed():
    from cxr_bench.metrics.paired import load_replicates, save_replicates

    y, a, b, patient = _data(seed=5, n_labels=3)
    a2 = np.clip(a + 0.05 * np.random.default_rng(1).normal(size=a.shape), 0, 1)
    labels = ["p", "q", "r"]
    fresh = paired_comparison(y, [a, a2], [b], patient, labels=labels, n_bootstrap=300, seed=2)
    import tempfile
    from pathlib import Path

    cache: dict = {}
    with tempfile.TemporaryDirectory() as d:
        for key, s in (("ka", a), ("ka2", a2), ("kb", b)):
            cache.update(load_replicates(save_replicates(Path(d) / f"{key}.npz", y, s, patient, labels,
                                                         model_key=key, n=300, seed=2), key))
    assert len(cache) == 9
    stored = paired_comparison(y, [a, a2], [b], patient, labels=labels, n_bootstrap=300, seed=2,
                               model_keys=(("ka", "ka2"), ("kb",)), cache=cache)
    pd.testing.assert_frame_equal(stored, fresh)
    # The stored numbers are what the comparison reads: a changed entry changes the table.
    key = next(k for k in cache if k[0] == "kb" and k[1] == "q")
    cache[key] = cache[key] * 0.5
    changed = paired_comparison(y, [a, a2], [b], patient, labels=labels, n_bootstrap=300, seed=2,
                                model_keys=(("ka", "ka2"), ("kb",)), cache=cache)
    assert changed.set_index("label").loc["q", "delta"] != fresh.set_index("label").loc["q", "delta"]
