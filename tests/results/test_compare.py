from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxr_bench.cli import main
from cxr_bench.config import RunConfig
from cxr_bench.errors import ConfigError, RunStoreError
from cxr_bench.metrics import clustered_auc_test, delong_test, holm
from cxr_bench.metrics.paired import verdict
from cxr_bench.metrics.predictions import write_predictions
from cxr_bench.results.compare import (
    ABLATION_COLUMNS,
    AblationPair,
    ablation_table,
    banner,
    compare_leaderboards,
    compare_reference,
    find_ablation_pairs,
    pair_cache_key,
    pair_summary,
    paired_ablation,
    protocol_mismatches,
)
from cxr_bench.results.leaderboard import FACTORS, build_leaderboard, factor_values, read_leaderboard, write_leaderboard
from cxr_bench.results.references import match_reference, wang2017_table17
from cxr_bench.results.runs import RunRecord, load_runs
from cxr_bench.runner.suite import load_suite
from cxr_bench.utils.io import sha256_file


@pytest.fixture(scope="module")
def boards(run_store, tmp_path_factory):
    """A.csv (the store) and B.csv: one run changed, one run removed, one new run."""
    root, ids = run_store
    d = tmp_path_factory.mktemp("boards")
    a = build_leaderboard(root).table
    b = a.copy()
    i = b.index[b["run_id"] == ids["gamma"]][0]
    b.loc[i, "mean_auc"] += 0.0100
    b.loc[i, "auc_mass"] -= 0.0200
    b = b[b["run_id"] != ids["alexnet_8"]]
    new = b[b["run_id"] == ids["baseline"]].assign(seed=1, run_id="feedfacecafe")
    b = pd.concat([b, new], ignore_index=True)
    return write_leaderboard(a, d / "A.csv"), write_leaderboard(b, d / "B.csv"), ids


def test_compare_two_leaderboards(boards):
    pa, pb, ids = boards
    out = compare_leaderboards(read_leaderboard(pa), read_leaderboard(pb))
    assert out["present"].value_counts().to_dict() == {"both": 5, "only_a": 1, "only_b": 1}
    changed = out[out["run_id_a"] == ids["gamma"]].iloc[0]
    assert changed["delta_mean_auc"] == pytest.approx(0.01, abs=1e-9)
    assert changed["delta_auc_mass"] == pytest.approx(-0.02, abs=1e-9)
    assert changed["delta_auc_atelectasis"] == 0
    same = out[(out["present"] == "both") & (out["run_id_a"] != ids["gamma"])]
    assert (same["delta_mean_auc"] == 0).all()
    assert out.loc[out["present"] == "only_a", "run_id_a"].item() == ids["alexnet_8"]
    assert out.loc[out["present"] == "only_b", "run_id_b"].item() == "feedfacecafe"
    by_id = compare_leaderboards(read_leaderboard(pa), read_leaderboard(pb), key="run_id")
    assert set(by_id["present"]) == {"both", "only_a", "only_b"}
    assert banner(out)[0].startswith("NOT COMPARABLE")  # the factory's runs are bundled-sample runs


def test_duplicate_keys_are_refused(boards):
    pa, _, _ = boards
    a = read_leaderboard(pa)
    dup = pd.concat([a, a.iloc[:1].assign(run_id="000000000000")], ignore_index=True)
    with pytest.raises(RunStoreError, match="--key run_id"):
        compare_leaderboards(dup, a)


# ------------------------------------------------------------------------------------------ reference


@functools.cache
def _paper_run(backbone: str = "resnet50", label_set: str = "chestxray14") -> RunConfig:
    """The replication run of wang2017's paper profile, seed 0, straight from the suite file."""
    runs = load_suite("wang2017").expand("paper")
    (run,) = [r for r in runs if "replication" in r.blocks and r.config.seed == 0
              and r.config.model.backbone == backbone and r.config.data.label_set == label_set]
    return run.config


def _paper_protocol(row: pd.DataFrame) -> pd.DataFrame:
    """A leaderboard row moved onto Table 17's protocol: every factor column as the paper profile's
    ResNet-50 / ChestX-ray14 replication run has it (what a `paper`-profile run on NIH would show)."""
    cfg = _paper_run()
    factors = factor_values(RunRecord(Path("x"), "wang2017", cfg.run_id(), cfg.to_dict()))
    return row.assign(**factors, profile="paper", bundled_sample=False, metadata_sha256="f" * 64)


def _expected_differences(row: dict, cfg: RunConfig) -> set[str]:
    """Dotted keys of the identity fields where the leaderboard row differs from ``cfg`` (seed and the
    documented allowances aside), written out from the config's own dict."""
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("head_kwargs", "kwargs"):
                walk(v, f"{prefix}{k}.")
            else:
                flat[prefix + k] = v

    walk(cfg.identity_dict(full=True))
    out = set()
    for col, (key, _) in FACTORS.items():
        if key in ("seed", "eval.bootstrap", "eval.threshold"):
            continue
        ref, ours = flat[key], row.get(col)
        if col == "pretrained":
            ref, ours = "imagenet", {"cache": "imagenet"}.get(ours, ours)
        same = (str(ours).lower() == str(ref).lower() if isinstance(ref, bool) else
                (pd.isna(ours) if ref is None else
                 (json.loads(ours) if isinstance(ours, str) else ours) == ref if isinstance(ref, (dict, list))
                 else str(ours) == str(ref) or (isinstance(ref, (int, float)) and float(ours) == float(ref))))
        if not same:
            out.add(key)
    return out


def test_reference_one_seed_sample_run_is_no_verdict_and_not_comparable(boards):
    pa, _, ids = boards
    lb = read_leaderboard(pa)
    cmp = compare_reference(lb, "wang2017")
    assert set(cmp["run_id"]) == {ids["resnet50_14"], ids["alexnet_8"], ids["resnet50_8"]}
    r14 = cmp[cmp["run_id"] == ids["resnet50_14"]].set_index("label")
    assert len(r14) == 15 and "Table 17" in r14["source"].iloc[0] and (r14["n_seeds"] == 1).all()
    for lab, paper in wang2017_table17().items():
        row = r14.loc[lab]
        assert row["paper"] == paper and row["delta"] == pytest.approx(row["ours"] - paper)
        assert row["verdict"] == "no verdict (1 seed)" and math.isnan(row["delta_ci_lo"])
    assert r14.loc["mean", "paper"] == 0.7451
    # The factory's runs are sample-profile runs (64 px, GAP head, no pretrained weights, AdamW ...): every
    # identity field that differs from the paper profile's replication run is listed, and the profile.
    assert not r14["comparable"].any()
    listed = r14["why_not"].iloc[0].split("; ")
    run = lb[lb["run_id"] == ids["resnet50_14"]].iloc[0].to_dict()
    assert {m.split(":")[0] for m in listed} == _expected_differences(run, _paper_run()) | {"profile"}
    assert "profile: sample != paper" in listed and "data.image_size: 64 != 1024" in listed
    assert "model.head: gap != wang2017" in listed and "model.pretrained: none != imagenet" in listed
    alex = cmp[cmp["run_id"] == ids["alexnet_8"]]
    assert len(alex) == 9 and set(alex["setting"]) == {"AlexNet"}
    assert alex["why_not"].iloc[0].startswith("protocol: paper: the ChestX-ray8 release (108,948 images")
    assert compare_reference(read_leaderboard(pa), "chexnet").empty
    lines = banner(cmp)
    assert lines[0].startswith("NOT COMPARABLE") and " at 64 px" in lines[0] and "random init" in lines[1]


def test_the_issues_made_up_leaderboard_is_not_comparable(boards):
    # Three ResNet-50 seeds, profile paper, official split, 1024 px, ImageNet weights, Table 17's head and
    # loss: the 7 fields the old check looked at all match. But 500 training images, 1 epoch, lr 1.0, a
    # frozen backbone, a 1-channel stem, a gamma tone curve and heavy augmentation.
    pa, _, ids = boards
    lb = read_leaderboard(pa)
    base = _paper_protocol(lb[lb["run_id"] == ids["resnet50_14"]])
    odd = dict(max_train_images=500, epochs=1, lr=1.0, freeze_backbone=True, channels="stem", grayscale="gamma",
               augment="light")
    rows = [base.assign(seed=s, run_id=f"odd{s}", **odd) for s in range(3)]
    cmp = compare_reference(pd.concat(rows, ignore_index=True), "wang2017").set_index("label")
    assert not cmp["comparable"].any()
    assert cmp.loc["mean", "why_not"].split("; ") == [
        "data.grayscale: gamma != identity", "data.channels: stem != replicate",
        "model.freeze_backbone: true != false", "optim.lr: 1.0 != 0.01", "optim.epochs: 1 != 10",
        "data.augment: light != none", "data.max_train_images: 500 != none"]
    assert cmp["verdict"].str.endswith("(not comparable)").all()
    # The same with the paper's values is comparable, and a leaderboard without a factor column is not.
    fair = compare_reference(pd.concat([base.assign(seed=s, run_id=f"s{s}") for s in range(3)], ignore_index=True), "wang2017")
    assert fair["comparable"].all() and (fair["why_not"] == "").all()
    short = compare_reference(pd.concat([base.assign(seed=s, run_id=f"s{s}") for s in range(3)], ignore_index=True)
                              .drop(columns=["momentum"]), "wang2017")
    assert (short["why_not"] == "optim.momentum: unknown != 0.9").all()
    # Seeds, bootstrap resamples, the threshold rule and where the weights came from may differ.
    ok = compare_reference(pd.concat([base.assign(seed=s, run_id=f"s{s}", eval_bootstrap=200,
                                                  eval_threshold="f1", pretrained="cache") for s in range(3)], ignore_index=True),
                           "wang2017")
    assert ok["comparable"].all()


def test_reference_with_seeds_has_an_interval_and_a_verdict(boards):
    pa, _, ids = boards
    lb = read_leaderboard(pa)
    base = _paper_protocol(lb[lb["run_id"] == ids["resnet50_14"]])
    # Three seeds of one configuration on Table 17's protocol, AUCs spread around the paper's.
    rows = []
    for seed, shift in ((0, -0.01), (1, 0.0), (2, 0.02)):
        r = base.assign(seed=seed, run_id=f"seed{seed}")
        for col in ("auc_atelectasis", "mean_auc"):
            paper = 0.7003 if col == "auc_atelectasis" else 0.7451
            r[col] = paper + shift
            r[f"{col}_ci_lo"], r[f"{col}_ci_hi"] = paper + shift - 0.02, paper + shift + 0.02
        rows.append(r)
    cmp = compare_reference(pd.concat(rows, ignore_index=True), "wang2017").set_index("label")
    assert cmp["comparable"].all() and (cmp["why_not"] == "").all() and (cmp["n_seeds"] == 3).all()
    assert banner(cmp) == []  # nothing from the bundled sample, every protocol field matches
    at = cmp.loc["Atelectasis"]
    vals = 0.7003 + np.array([-0.01, 0.0, 0.02])
    se_test = 0.04 / (2 * stats.norm.ppf(0.975))
    s2 = vals.var(ddof=1)
    var = se_test**2 + s2 / 3
    half = stats.t.ppf(0.975, var**2 / ((s2 / 3) ** 2 / 2)) * math.sqrt(var)
    assert at["ours"] == pytest.approx(vals.mean()) and at["ours_sd"] == pytest.approx(vals.std(ddof=1))
    assert (at["ours_ci_lo"], at["ours_ci_hi"]) == pytest.approx((vals.mean() - half, vals.mean() + half))
    # Ours minus paper: the paper's number is one run, so one more seed variance (borrowed from ours); the
    # same official test images, so no second test-sampling term.
    dvar = se_test**2 + s2 / 3 + s2
    dhalf = stats.t.ppf(0.975, dvar**2 / ((s2 * 4 / 3) ** 2 / 2)) * math.sqrt(dvar)
    assert (at["delta_ci_lo"], at["delta_ci_hi"]) == pytest.approx((vals.mean() - 0.7003 - dhalf,
                                                                     vals.mean() - 0.7003 + dhalf))
    assert "borrowed" in at["interval"] and "another test set" not in at["interval"]
    assert at["verdict"] == "consistent with paper" and at["paper_in_ci"]
    # On another split the paper's test sampling enters too.
    other = compare_reference(pd.concat([r.assign(split="random-patient") for r in rows], ignore_index=True),
                              "wang2017").set_index("label").loc["Atelectasis"]
    ovar = 2 * se_test**2 + s2 / 3 + s2
    ohalf = stats.t.ppf(0.975, ovar**2 / ((s2 * 4 / 3) ** 2 / 2)) * math.sqrt(ovar)
    assert other["delta_ci_hi"] - other["delta"] == pytest.approx(ohalf)
    assert "another test set" in other["interval"] and not other["comparable"]
    # Far from the paper with little spread: a verdict, not "consistent".
    far = [r.assign(auc_cardiomegaly=0.60 + 0.001 * i, auc_cardiomegaly_ci_lo=0.59, auc_cardiomegaly_ci_hi=0.61)
           for i, r in enumerate(rows)]
    cmp2 = compare_reference(pd.concat(far, ignore_index=True), "wang2017").set_index("label")
    assert cmp2.loc["Cardiomegaly", "verdict"] == "below paper"
    # Not comparable: the verdict says so.
    odd = [r.assign(image_size=512) for r in far]
    cmp3 = compare_reference(pd.concat(odd, ignore_index=True), "wang2017").set_index("label")
    assert cmp3.loc["Cardiomegaly", "verdict"] == "below paper (not comparable)"
    assert cmp3.loc["Cardiomegaly", "why_not"] == "data.image_size: 512 != 1024"
    # A seed without a CI: no interval, no verdict (never one that ignores test sampling).
    gap = [rows[0].assign(auc_atelectasis_ci_lo=np.nan), *rows[1:]]
    cmp4 = compare_reference(pd.concat(gap, ignore_index=True), "wang2017").set_index("label")
    assert cmp4.loc["Atelectasis", "verdict"] == "no verdict (no interval)"
    # Two rows of one configuration with the same seed are not seeds: refused.
    with pytest.raises(RunStoreError, match="not seeds"):
        compare_reference(pd.concat([rows[0], rows[0].assign(run_id="other")], ignore_index=True), "wang2017")


def test_protocol_mismatches_per_reference(boards):
    pa, _, ids = boards
    row = _paper_protocol(read_leaderboard(pa).query(f"run_id == '{ids['resnet50_14']}'")).iloc[0].to_dict()
    assert protocol_mismatches(match_reference("wang2017", row), row) == []
    for field, value, key in (("loss", "bce", "loss.name"), ("split", "random-image", "data.split"),
                              ("pretrained", "none", "model.pretrained"), ("epochs", 20, "optim.epochs")):
        bad = {**row, field: value}
        assert [m.split(":")[0] for m in protocol_mismatches(match_reference("wang2017", bad), bad)] == [key]
    # Table 3 is never comparable: another release. Even the random image-level split the paper used.
    t3 = {**row, "label_set": "chestxray8", "split": "random-image"}
    why = protocol_mismatches(match_reference("wang2017", t3), t3)
    assert why[0].startswith("protocol: paper: the ChestX-ray8 release (108,948 images of 32,717 patients")
    assert "data.split: random-image != official" in why
    # CheXNet: never comparable (its own split); its reference run is the suite's chexnet block.
    chex_cfg = [r.config for r in load_suite("wang2017").expand("paper") if "chexnet" in r.blocks][0]
    chex = {**row, **factor_values(RunRecord(Path("x"), "wang2017", chex_cfg.run_id(), chex_cfg.to_dict()))}
    assert protocol_mismatches(match_reference("chexnet", chex), chex) == [
        "protocol: paper: its own random patient-wise 70/10/20 split, not the official lists"]


# ------------------------------------------------------------------------------------------ ablations


def test_ablation_pairs_from_manifest_and_from_config_diff(run_store, tmp_path):
    root, ids = run_store
    pairs = find_ablation_pairs(load_runs(root, "ablations"))
    got = {(p.factor, p.value_a, p.value_b, p.run_a, p.run_b) for p in pairs}
    assert got == {("data.grayscale", "identity", "gamma", ids["baseline"], ids["gamma"]),
                   ("model.head", "gap", "attention", ids["baseline"], ids["attention"])}
    # A store without the runner's pair records: pairs are found by diffing the configs.
    copy = tmp_path / "runs"
    shutil.copytree(root / "ablations", copy / "ablations")
    for manifest in copy.glob("ablations/*/manifest.json"):
        m = json.loads(manifest.read_text())
        del m["suite"]["pairs"]
        manifest.write_text(json.dumps(m))
    diffed = {(p.factor, p.value_a, p.value_b, p.run_a, p.run_b) for p in find_ablation_pairs(load_runs(copy))}
    assert diffed == got


def test_paired_ablation_numbers(run_store):
    root, ids = run_store
    runs = {r.run_id: r for r in load_runs(root, "ablations")}
    a, b = runs[ids["baseline"]], runs[ids["gamma"]]
    table = paired_ablation(AblationPair("ablations", "data.grayscale", "identity", "gamma", a, b), n_bootstrap=200)
    assert list(table.columns) == list(ABLATION_COLUMNS) and "p" not in table.columns
    assert len(table) == 15 and table["label"].iloc[-1] == "mean"
    pa, pb = a.predictions(), b.predictions()
    ma, mb = a.metrics["test"]["per_label"], b.metrics["test"]["per_label"]
    per = table.iloc[:-1].set_index("label")
    for j, lab in enumerate(pa.labels):
        row = per.loc[lab]
        assert row["delta"] == pytest.approx(mb[lab]["auc"] - ma[lab]["auc"], abs=1e-12)
        assert row["p_delong_image_level"] == pytest.approx(delong_test(pa.y_true[:, j], pb.y_prob[:, j],
                                                                        pa.y_prob[:, j]).p, rel=1e-9)
        assert row["p_clustered"] == pytest.approx(
            clustered_auc_test(pa.y_true[:, j], pb.y_prob[:, j], pa.y_prob[:, j], pa.patient_ids).p, rel=1e-9)
        assert row["ci_lo"] <= row["delta"] <= row["ci_hi"] or row["reason"]
    np.testing.assert_allclose(per["p_bootstrap_holm"], holm(per["p_bootstrap"]))
    ok = per["p_bootstrap_holm"] < 0.05
    assert (per.loc[ok & (per["delta"] > 0), "verdict"].str.split(" (", regex=False).str[0] == "better").all()
    assert (per.loc[~ok, "verdict"].str.split(" (", regex=False).str[0] == "no evidence").all()
    assert table["interval"].iloc[0].startswith("patients only")
    mean = table.iloc[-1]
    assert mean["delta"] == pytest.approx(b.metrics["test"]["mean_auc"] - a.metrics["test"]["mean_auc"])
    # A run against itself: zero difference, no evidence.
    same = paired_ablation(AblationPair("ablations", "x", "a", "a", a, a), n_bootstrap=50)
    assert (same["delta"] == 0).all() and (same["p_bootstrap"] == 1).all()
    assert (same["verdict"].str.split(" (", regex=False).str[0] == "no evidence").all()
    summary = pair_summary(ablation_table(load_runs(root, "ablations"), n_bootstrap=50))
    assert len(summary) == 2 and set(summary["factor"]) == {"data.grayscale", "model.head"}
    assert (summary[["labels_better", "labels_worse", "labels_no_evidence", "labels_no_test"]].sum(axis=1) == 14).all()
    assert "labels_p_lt_0.05" not in summary.columns and banner(summary)[0].startswith("NOT COMPARABLE")


def test_ablations_from_the_replicates_runs_saved_equal_ablations_computed(tmp_path, store_factory):
    # The fast path (each run's replicates saved at completion, read back) against the computation from the
    # predictions alone (a store of runs completed before replicates were saved: no file, none recorded).
    from cxr_bench.metrics.paired import DEFAULT_BOOTSTRAP

    root = tmp_path / "runs"
    abl = {"optim.epochs": 3, "data.image_size": 64, "model.backbone": "mobilenet_v1"}
    ids = {}
    for seed in (0, 1):
        ids["base", seed], _ = store_factory.write_run(root, "s", {**abl, "seed": seed}, strength=0.8, replicates=True)
    for seed in (0, 1, 2):
        ids["gamma", seed], _ = store_factory.write_run(root, "s", {**abl, "data.grayscale": "gamma", "seed": seed}, strength=1.0,
                                          replicates=True, pairs=[{"block": "grayscale", "factor": "data.grayscale",
                                                                   "reference": ids["base", 0],
                                                                   "reference_value": "identity", "value": "gamma"}])
    runs = load_runs(root, "s")
    assert all(r.stored_replicates("test", r.predictions_sha256()) for r in runs) and not any(r.problems for r in runs)
    fast = ablation_table(runs, use_cache=False)
    plain = tmp_path / "plain"
    shutil.copytree(root, plain)
    npzs = sorted(plain.glob("s/*/predictions/test.replicates.npz"))
    # A missing file (one run), and one replaced by other numbers of the right form (another run): neither is
    # used, and neither makes its run damaged; the file only saves time.
    npzs[0].unlink()
    with np.load(npzs[1]) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(npzs[1], **{**arrays, "auc": arrays["auc"] * 0.9})
    # The others as runs completed before replicates were saved: no file, none recorded.
    for npz in npzs[2:]:
        npz.unlink()
        manifest = npz.parent.parent / "manifest.json"
        m = json.loads(manifest.read_text())
        del m["artifacts"]["predictions/test.replicates.npz"]
        manifest.write_text(json.dumps(m))
    slow_runs = load_runs(plain, "s")
    assert len(slow_runs) == 5 and not any(r.problems for r in slow_runs)
    assert not any(r.stored_replicates("test", r.predictions_sha256()) for r in slow_runs)
    slow = ablation_table(slow_runs, use_cache=False)
    assert len(fast) == 15 and fast["seeds_a"].iloc[0] == 2 and fast["seeds_b"].iloc[0] == 3
    pd.testing.assert_frame_equal(fast, slow)
    # Other draws than the stored ones are computed, not read.
    assert ablation_table(runs, use_cache=False, n_bootstrap=DEFAULT_BOOTSTRAP // 10).equals(
        ablation_table(slow_runs, use_cache=False, n_bootstrap=DEFAULT_BOOTSTRAP // 10))


def test_runs_that_group_the_same_images_into_other_patients_cannot_be_paired(run_store, tmp_path):
    # The patient bootstrap resamples patients: a side whose file names the patients otherwise (here: every
    # patient id renamed, so they sort in another order) would not be resampled with the other side.
    root, ids = run_store
    copy = tmp_path / "runs"
    shutil.copytree(root / "ablations", copy / "ablations")
    test_csv = copy / "ablations" / ids["gamma"] / "predictions" / "test.csv"
    df = pd.read_csv(test_csv, dtype={"patient_id": str})
    df["patient_id"] = "x" + df["patient_id"].str[::-1]
    df.to_csv(test_csv, index=False)
    manifest = test_csv.parent.parent / "manifest.json"
    m = json.loads(manifest.read_text())
    m["artifacts"]["predictions/test.csv"]["sha256"] = sha256_file(test_csv)
    manifest.write_text(json.dumps(m))
    runs = {r.run_id: r for r in load_runs(copy, "ablations")}
    with pytest.raises(RunStoreError, match="disagree on the patients"):
        paired_ablation(AblationPair("ablations", "data.grayscale", "identity", "gamma", runs[ids["baseline"]],
                                     runs[ids["gamma"]]), n_bootstrap=20)


def test_suite_wide_multiplicity_across_pairs(run_store):
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    root, _ = run_store
    runs = load_runs(root, "ablations")
    per_pair = ablation_table(runs, n_bootstrap=50)
    labels = per_pair["label"] != "mean"
    assert (per_pair["p_suite"] == per_pair["p_bootstrap_holm"]).all()
    assert per_pair.loc[labels, "family"].str.startswith("Holm over the labels of this pair").all()
    assert any("Holm-adjusted across the labels of one pair (the Holm family" in line for line in banner(per_pair))
    for how, method in (("holm", "holm"), ("bh", "fdr_bh")):
        t = ablation_table(runs, n_bootstrap=50, multiplicity=how)
        np.testing.assert_allclose(t["p_bootstrap"], per_pair["p_bootstrap"])  # the same tests, adjusted anew
        for mask in (labels, ~labels):
            p = t.loc[mask, "p_bootstrap"].to_numpy(dtype=float)
            ok = np.isfinite(p)
            expected = multitest.multipletests(p[ok], method=method)[1]
            np.testing.assert_allclose(t.loc[mask, "p_suite"].to_numpy(dtype=float)[ok], expected, atol=1e-12)
        n_tests = int(np.isfinite(t.loc[labels, "p_bootstrap"].astype(float)).sum())
        assert t.loc[labels, "family"].str.contains(f"over {n_tests} label tests of 2 pairs").all()
        assert t["verdict"].tolist() == [verdict(d, p, label=lab) for d, p, lab in zip(t["delta"], t["p_suite"],
                                                                                        t["label"])]
    with pytest.raises(ConfigError, match="multiplicity"):
        ablation_table(runs, n_bootstrap=50, multiplicity="bonferroni")


def test_seeds_make_one_configuration(run_store, store_factory, tmp_path):
    root, ids = run_store
    store = tmp_path / "runs"
    shutil.copytree(root / "ablations", store / "ablations")
    abl = {"optim.epochs": 3, "data.image_size": 64, "model.backbone": "mobilenet_v1"}
    base1, _ = store_factory.write_run(store, "ablations", {**abl, "seed": 1}, strength=0.8)
    gamma1, _ = store_factory.write_run(store, "ablations", {**abl, "seed": 1, "data.grayscale": "gamma"},
                                        strength=1.0, pairs=[{"block": "grayscale", "factor": "data.grayscale",
                                                              "reference": base1, "reference_value": "identity",
                                                              "value": "gamma"}])
    pairs = {p.factor: p for p in find_ablation_pairs(load_runs(store))}
    g = pairs["data.grayscale"]
    assert {r.run_id for r in g.a} == {ids["baseline"], base1} and {r.run_id for r in g.b} == {ids["gamma"], gamma1}
    assert [r.cfg("seed") for r in g.a] == [0, 1]
    assert {r.run_id for r in pairs["model.head"].a} == {ids["baseline"], base1}  # 2 seeds vs 1
    t = paired_ablation(g, n_bootstrap=100).set_index("label")
    assert (t["seeds_a"] == 2).all() and t["interval"].iloc[0] == "patients + seeds (2 vs 2; nested: each configuration's own seeds)"
    aucs = lambda runs, lab: np.mean([r.metrics["test"]["per_label"][lab]["auc"] for r in runs])  # noqa: E731
    assert t.loc["Mass", "delta"] == pytest.approx(aucs(g.b, "Mass") - aucs(g.a, "Mass"), abs=1e-12)


def test_runs_scored_on_different_images_cannot_be_paired(run_store, tmp_path):
    root, ids = run_store
    store = tmp_path / "runs"
    shutil.copytree(root / "ablations", store / "ablations")
    runs = {r.run_id: r for r in load_runs(store, "ablations")}
    a, b = runs[ids["baseline"]], runs[ids["gamma"]]
    p = b.predictions()
    keep = np.arange(len(p))[3:]
    write_predictions(b.predictions_path(), p.images[keep], p.patient_ids[keep], p.y_true[keep], p.y_prob[keep],
                      p.labels)
    # Fresh records (a record caches its predictions); load_runs would now skip b as damaged.
    a, b = RunRecord.load(a.run_dir), RunRecord.load(b.run_dir)
    with pytest.raises(RunStoreError) as e:
        paired_ablation(AblationPair("ablations", "data.grayscale", "identity", "gamma", a, b), n_bootstrap=10)
    msg = str(e.value)
    assert ids["baseline"] in msg and ids["gamma"] in msg and "3 only in" in msg and "0 only in" in msg


def test_cli_compare(boards, run_store, tmp_path, capsys):
    pa, pb, ids = boards
    root, _ = run_store
    assert main(["compare", str(pa), str(pb), "--out", str(tmp_path / "d.csv")]) == 0
    printed = capsys.readouterr().out
    assert "only_a" in printed and "only_b" in printed and ids["gamma"] in printed
    assert len(pd.read_csv(tmp_path / "d.csv")) == 7  # plain CSV
    assert main(["compare", str(pa), "--reference", "wang2017", "--out", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "0.7451" in out and "no verdict (1 seed)" in out and out.startswith("# NOT COMPARABLE")
    text = (tmp_path / "r.csv").read_text()
    assert text.startswith("suite,run_id") and "why_not" in text  # the reason is a column; the banner a note
    assert json.loads((tmp_path / "r.csv.json").read_text())["notes"][0].startswith("NOT COMPARABLE")
    assert main(["compare", "--ablations", "--runs", str(root), "--suite", "ablations", "--bootstrap", "50",
                 "--out", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "data.grayscale" in out and "p_bootstrap_holm" in out and "p_delong_image_level" in out
    assert out.startswith("# NOT COMPARABLE")
    csv = pd.read_csv(tmp_path / "a.csv")
    assert {"p_clustered_holm", "verdict"} <= set(csv.columns) and len(csv) == 30
    assert json.loads((tmp_path / "a.csv.json").read_text())["notes"][0].startswith("NOT COMPARABLE")
    assert main(["compare", "--ablations", "--runs", str(root), "--suite", "ablations", "--bootstrap", "20",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["banner"][0].startswith("NOT COMPARABLE") and len(doc["table"]) == 30 and len(doc["summary"]) == 2
    assert main(["compare", "--ablations", "--runs", str(root), "--suite", "ablations", "--bootstrap", "20",
                 "--multiplicity", "bh", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(r["family"].startswith("Benjamini-Hochberg over") for r in doc["table"])
    assert any("Benjamini-Hochberg across every label test" in line for line in doc["banner"])
    assert main(["compare", str(pa)]) == 2  # two leaderboards needed
    assert main(["compare", "--ablations", "--runs", str(root), "--alpha", "2"]) == 2


def test_ablation_table_cache_gives_the_computed_table_and_follows_the_predictions(run_store, tmp_path):
    root, _ = run_store
    store = tmp_path / "runs"
    shutil.copytree(root, store)
    shutil.rmtree(store / "ablations" / ".cache", ignore_errors=True)  # left by another test's compare
    runs = load_runs(store, "ablations")
    fresh = ablation_table(runs, n_bootstrap=40, use_cache=False)
    assert not (store / "ablations" / ".cache").exists()
    first = ablation_table(load_runs(store, "ablations"), n_bootstrap=40)
    entries = sorted((store / "ablations" / ".cache" / "ablations").glob("*.json"))
    assert len(entries) == len(find_ablation_pairs(runs)) == 2
    second = ablation_table(load_runs(store, "ablations"), n_bootstrap=40)  # read back from the cache
    for df in (first, second):
        pd.testing.assert_frame_equal(df, fresh)  # bit for bit, dtypes and NaN included
        assert banner(df) == banner(fresh)
    # Another setting is another key; the entries of the first stay.
    ablation_table(load_runs(store, "ablations"), n_bootstrap=30)
    assert len(list((store / "ablations" / ".cache" / "ablations").glob("*.json"))) == 4
    # A corrupt entry is ignored and computed again.
    entries[0].write_text("{not json")
    pd.testing.assert_frame_equal(ablation_table(load_runs(store, "ablations"), n_bootstrap=40), fresh)
    # The key follows each run's predictions: another file (another sha256) is another key.
    pair = find_ablation_pairs(load_runs(store, "ablations"))[0]
    key = pair_cache_key(pair, n_bootstrap=40)
    pred = pair.b[0].predictions_path("test")
    pred.write_text(pred.read_text().replace("\n", "\r\n"))
    rec = RunRecord.load(pair.b[0].run_dir)
    moved = find_ablation_pairs([*pair.a, rec])[0]
    assert pair_cache_key(moved, n_bootstrap=40) != key


def test_synthetic_runs_are_never_paired_or_compared_with_a_paper(tmp_path, store_factory):
    root = tmp_path / "runs"
    base = {"optim.epochs": 3, "data.image_size": 64, "model.backbone": "resnet50", "loss.name": "wcel",
            "data.root": "/data/nih"}
    real, _ = store_factory.write_run(root, "wang2017", base, strength=1.0, n_bootstrap=5, profile="paper")
    fake, _ = store_factory.write_run(root, "wang2017", {**base, "data.root": "phantom:0", "data.grayscale": "gamma"},
                                      strength=3.0, n_bootstrap=5, profile="paper")
    runs = load_runs(root)
    assert {r.run_id for r in runs if r.synthetic} == {fake}
    assert find_ablation_pairs(runs) == []  # the two differ in one factor, but one is a phantom
    lb = build_leaderboard(root, expert=False).table
    cmp = compare_reference(lb, "wang2017")
    assert fake not in ";".join(cmp["run_id"]) and real in ";".join(cmp["run_id"])
