"""DeLong's test against published numbers (pROC on its aSAH data) and a brute-force O(m n) version.

Reference data: pROC's ``aSAH`` data set (Turck et al. 2010, Intensive Care Medicine 36:107; shipped with
pROC, Robin et al. 2011, BMC Bioinformatics 12:77): 113 patients with aneurysmal subarachnoid
haemorrhage, outcome Good/Poor, WFNS grade 1-5, s100b (ug/l) and ndka (ng/ml). Below, one entry per
patient in data-set order: outcome (G/P), wfns, s100b, ndka.

Reference values: pROC's own test suite (github.com/xrobin/pROC, tests/testthat/test-roc.test.R,
test-var.R, test-ci.auc.R), the full-precision form of the documented example
``roc.test(roc(aSAH$outcome, aSAH$s100b), roc(aSAH$outcome, aSAH$wfns))`` ->
"DeLong's test for two correlated ROC curves, Z = -2.209, p-value = 0.02718, AUC of roc1 0.7313686,
AUC of roc2 0.8236789".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics import delong_auc_variance, delong_per_label, delong_test

_ASAH = """
G 1 0.13 3.01   G 1 0.14 8.54   G 1 0.10 8.09   G 1 0.04 10.42  P 3 0.13 17.40
P 2 0.10 12.75  G 5 0.47 6.00   P 4 0.16 13.20  G 1 0.18 15.54  G 2 0.10 6.01
P 5 0.12 15.96  G 2 0.10 17.86  P 5 0.44 5.18   P 5 0.71 8.90   G 1 0.04 13.41
G 2 0.08 20.75  P 5 0.49 11.60  G 2 0.04 16.11  P 2 0.07 32.37  P 5 0.33 54.82
P 2 0.09 32.41  G 1 0.09 49.94  P 1 0.07 40.34  G 1 0.11 9.47   G 1 0.07 6.29
G 2 0.17 12.53  G 1 0.07 6.54   G 2 0.11 6.30   G 1 0.13 80.30  G 1 0.19 12.80
G 3 0.05 9.80   G 4 0.16 9.81   P 2 0.41 9.85   G 1 0.14 18.21  G 4 0.34 5.03
P 5 0.35 14.04  P 4 0.48 21.93  G 1 0.09 8.02   P 4 0.96 7.42   P 2 0.25 8.38
G 5 0.50 6.59   G 5 0.46 9.63   G 1 0.16 13.12  G 1 0.07 7.96   G 2 0.43 14.34
G 4 0.45 41.43  G 1 0.11 7.63   G 1 0.08 7.06   G 2 0.09 12.59  P 5 0.86 13.56
P 5 0.52 3.87   G 2 0.08 9.44   G 1 0.06 7.66   G 2 0.13 12.98  P 5 2.07 419.19
G 1 0.10 27.19  G 2 0.14 22.27  G 2 0.15 9.95   P 2 0.07 21.22  G 1 0.06 11.73
P 5 0.77 10.40  G 1 0.05 58.83  G 1 0.09 6.39   P 2 0.30 11.09  P 5 0.03 12.22
P 2 0.09 13.67  G 1 0.04 17.21  P 4 0.23 22.63  P 5 0.70 12.90  G 2 0.09 9.70
P 4 0.27 21.57  P 4 0.71 8.23   P 1 0.08 72.57  P 4 0.26 15.54  G 1 0.08 10.51
G 2 0.16 10.60  G 1 0.09 14.57  P 4 0.13 5.19   P 2 0.10 9.63   G 1 0.08 4.61
P 2 0.11 21.48  G 3 0.33 17.30  G 2 0.11 12.71  G 4 0.28 9.44   G 2 0.07 11.07
G 1 0.10 19.46  G 4 0.32 10.83  P 5 0.22 5.37   G 1 0.07 11.97  G 1 0.05 7.75
G 5 0.24 9.83   G 4 0.38 10.55  G 2 0.10 28.49  G 2 0.15 8.53   G 1 0.08 12.57
G 1 0.14 12.90  G 1 0.10 46.83  G 3 0.07 11.68  G 1 0.04 12.67  G 2 0.19 9.01
P 5 0.56 9.57   P 2 0.14 34.06  P 2 0.58 11.72  P 5 0.32 14.26  P 5 0.82 47.61
P 5 0.74 11.67  G 2 0.15 24.58  G 4 0.47 10.33  G 4 0.17 13.87  P 5 0.44 15.89
G 1 0.15 22.43  G 1 0.50 6.79   G 1 0.48 13.45
""".split()
_ROWS = [_ASAH[i : i + 4] for i in range(0, len(_ASAH), 4)]
OUTCOME = np.array([r[0] == "P" for r in _ROWS], dtype=int)  # Poor outcome = positive, as in pROC
MARKER = {name: np.array([float(r[k]) for r in _ROWS]) for k, name in ((1, "wfns"), (2, "s100b"), (3, "ndka"))}


def test_asah_transcription():
    assert len(_ROWS) == 113 and OUTCOME.sum() == 41  # 72 Good, 41 Poor, as documented by pROC


def test_published_roc_test_example():
    # roc.test(roc(outcome, s100b), roc(outcome, wfns)): Z = -2.209, p-value = 0.02718
    r = delong_test(OUTCOME, MARKER["s100b"], MARKER["wfns"])
    assert round(r.z, 3) == -2.209 and round(r.p, 5) == 0.02718
    assert round(r.auc_a, 7) == 0.7313686 and round(r.auc_b, 7) == 0.8236789


@pytest.mark.parametrize(
    "a, b, z, p, ci",
    [
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, (0.0104061769564846, 0.174214419249478)),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, (0.0634011709339876, 0.3600405634833566)),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, (-0.2876917446341914, 0.0488706064228094)),
    ],
)
def test_proc_test_suite_values(a, b, z, p, ci):
    r = delong_test(OUTCOME, MARKER[a], MARKER[b])
    assert r.z == pytest.approx(z, rel=1e-10)
    assert r.p == pytest.approx(p, rel=1e-10)
    assert r.ci == pytest.approx(ci, rel=1e-10)
    assert r.difference == pytest.approx(r.auc_a - r.auc_b)
    swapped = delong_test(OUTCOME, MARKER[b], MARKER[a])
    assert swapped.z == pytest.approx(-z, rel=1e-10) and swapped.p == pytest.approx(p, rel=1e-10)


@pytest.mark.parametrize(
    "name, auc, var", [("wfns", 0.823678861788618, 0.00146991470882363),
                       ("ndka", 0.611957994579946, 0.0031908105493913),
                       ("s100b", None, 0.00266868245717244)],
)
def test_proc_variance_and_ci(name, auc, var):
    r = delong_auc_variance(OUTCOME, MARKER[name])
    assert r.variance == pytest.approx(var, rel=1e-10)
    assert r.auc == pytest.approx(roc_auc_score(OUTCOME, MARKER[name]), abs=1e-12)
    if auc is not None:
        assert r.auc == pytest.approx(auc, rel=1e-12)
    if name == "ndka":  # ci.auc(r.ndka)
        assert r.ci == pytest.approx((0.501244999271703, 0.722670989888189), rel=1e-10)


def _brute_force_delong(y, a, b):
    """DeLong et al. (1988) by their definition: placement values from the O(m n) kernel psi."""
    pos, neg = y == 1, y == 0

    def components(s):
        x, z = s[pos], s[neg]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)  # V10 (per positive), V01 (per negative)

    (v10a, v01a), (v10b, v01b) = components(a), components(b)
    m, n = pos.sum(), neg.sum()
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    cov = s10 / m + s01 / n
    diff = v10a.mean() - v10b.mean()
    return v10a.mean(), v10b.mean(), cov, diff / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_structural_components(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(90) < 0.35).astype(int)
    a = np.round(rng.normal(size=90) + y, 1)  # ties inside and across classes
    b = np.round(0.6 * a + rng.normal(size=90) * 0.8 + 0.3 * y, 1)
    auc_a, auc_b, cov, z = _brute_force_delong(y, a, b)
    r = delong_test(y, a, b)
    assert (r.auc_a, r.auc_b) == pytest.approx((auc_a, auc_b), abs=1e-12)
    assert (r.var_a, r.var_b, r.covariance) == pytest.approx((cov[0, 0], cov[1, 1], cov[0, 1]), rel=1e-10)
    assert r.z == pytest.approx(z, rel=1e-10)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_one_sort_placements_equal_the_three_midrankings_bit_for_bit(seed):
    # Several models, heavy ties inside and across the classes, 1-positive and 1-negative edge cases.
    from cxr_bench.metrics.delong import _structural_components, _structural_components_midranks

    rng = np.random.default_rng(seed)
    for m, n in ((1, 1), (1, 7), (9, 1), (40, 55), (300, 2000)):
        levels = int(rng.integers(2, 30))
        pos = rng.integers(0, levels, size=(3, m)) / levels
        neg = rng.integers(0, levels, size=(3, n)) / levels
        for got, want in zip(_structural_components(pos, neg), _structural_components_midranks(pos, neg)):
            assert got.shape == want.shape and np.array_equal(got, want)
    # Integer and float32 scores give the float64 placements of the same values.
    ints = rng.integers(0, 5, size=(2, 30)), rng.integers(0, 5, size=(2, 40))
    for cast in (np.int64, np.float32):
        got = _structural_components(ints[0].astype(cast), ints[1].astype(cast))
        want = _structural_components_midranks(ints[0].astype(np.float64), ints[1].astype(np.float64))
        assert all(g.dtype == np.float64 and np.array_equal(g, w) for g, w in zip(got, want))
    # Against the kernel definition too (not only against the formula it replaces).
    y = (rng.random(120) < 0.3).astype(int)
    s = np.round(rng.normal(size=120) + y, 1)
    auc, v10, v01 = _structural_components(s[None, y == 1], s[None, y == 0])
    psi = (s[y == 1][:, None] > s[y == 0][None, :]) + 0.5 * (s[y == 1][:, None] == s[y == 0][None, :])
    np.testing.assert_allclose(v10[0], psi.mean(axis=1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(v01[0], psi.mean(axis=0), rtol=0, atol=1e-15)


def test_identical_and_undefined():
    r = delong_test(OUTCOME, MARKER["wfns"], MARKER["wfns"])
    assert r.z == 0.0 and r.p == 1.0 and r.ci == (0.0, 0.0)
    u = delong_test(np.zeros(5, dtype=int), np.arange(5.0), np.arange(5.0))
    assert math.isnan(u.auc_a) and math.isnan(u.p)
    assert u.to_dict()["p"] is None


def test_per_label():
    y = np.column_stack([OUTCOME, OUTCOME])
    a = np.column_stack([MARKER["wfns"], MARKER["ndka"]])
    b = np.column_stack([MARKER["s100b"], MARKER["s100b"]])
    res = delong_per_label(y, a, b, ["first", "second"])
    assert res["first"].z == pytest.approx(2.20898359144091, rel=1e-10)
    assert res["second"].z == pytest.approx(-1.39077002573558, rel=1e-10)
