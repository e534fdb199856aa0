"""What a sweep checks before any work: weights, data layout, disk, folders, stale images;
plus the dry run's time column and the console digest. Nothing here trains: each check runs on a phantom
release, and where a test needs a "completed" run it writes the files a run leaves by hand."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from pathlib import Path

import pytest

from cxr_bench.cli import main
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import CacheError, ConfigError, ImageError, RunStoreError, WeightsError
from cxr_bench.runner.planning import plan_specs, plan_sweep
from cxr_bench.runner.precheck import check_sweep, folder_problem
from cxr_bench.runner.store import RunStore, artifact_record


def _specs(suite: Path, root: Path, out: Path, **kw):
    plan = plan_sweep(suite, data_root=root, **kw)
    return plan, plan_specs(plan.suite, plan.runs, plan.profile, out)


# ---------------------------------------------------------------------------------------------- weights
def test_missing_weights_are_one_list_before_any_cache(write_suite, phantom_root, tmp_path, capsys,
                                                       caches):
    nope = tmp_path / "nope.safetensors"
    suite = write_suite(f"""
[[block]]
name = "w"
grid = {{ "model.pretrained" = ["cache", "{nope}"] }}
""")
    out, cache = tmp_path / "runs", tmp_path / "cache"
    rc = main(["run", "--suite", str(suite), "--data-root", str(phantom_root), "--runs", str(out), "--cache-dir",
               str(cache), "--no-report"])
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("cxr-bench: error:")]
    assert rc == 2 and "Traceback" not in err
    assert "mobilenet_v1 (timm:mobilenetv1_100" in line and f"weights file {nope} does not exist" in line
    assert "`cxr-bench weights fetch mobilenet_v1`" in line
    assert not out.exists() and not cache.exists()  # refused before any cache or run directory


def test_downloadable_imagenet_weights_are_fetched_first_unless_downloads_are_off(write_suite, phantom_root,
                                                                                 tmp_path, monkeypatch,
                                                                                 caches):
    suite = write_suite('\n[[block]]\nname = "w"\ngrid = { "model.pretrained" = ["imagenet"] }\n')
    _, specs = _specs(suite, phantom_root, tmp_path / "runs")
    store = RunStore(tmp_path / "runs", "tiny")
    check = check_sweep(specs, store)
    assert check.problems == []
    assert [(m.backbone, m.pretrained) for m in check.to_fetch] == [("mobilenet_v1", "imagenet")]
    monkeypatch.setenv("CXR_BENCH_OFFLINE", "1")
    check = check_sweep(specs, store)
    assert check.to_fetch == [] and [type(p) for p in check.problems] == [WeightsError]
    assert "downloads are off (CXR_BENCH_OFFLINE=1)" in str(check.problems[0])
    assert "`cxr-bench weights fetch mobilenet_v1`" in str(check.problems[0])


# ---------------------------------------------------------------------------------------------- data root
def test_a_data_root_without_images_is_one_message_and_a_partial_one_a_note(write_suite, two_heads, make_phantom,
                                                                            tmp_path, capsys):
    suite = write_suite(two_heads)
    partial = make_phantom()
    images = sorted((partial / "images").iterdir())
    for p in images[:3]:
        p.unlink()
    assert main(["run", "--suite", str(suite), "--data-root", str(partial), "--runs", str(tmp_path / "runs"),
                 "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"note: data root {partial}: 3 of the 40 listed images are missing" in err

    empty = make_phantom()
    for p in (empty / "images").iterdir():
        p.unlink()
    _, specs = _specs(suite, empty, tmp_path / "runs")
    check = check_sweep(specs, RunStore(tmp_path / "runs", "tiny"))
    assert [type(p) for p in check.problems] == [ImageError]
    assert f"data root {empty}: none of the 40 images listed in Data_Entry_2017_v2020.csv is there" in \
        str(check.problems[0])


# ---------------------------------------------------------------------------------------------- folders
def test_folder_problems_name_the_path_and_create_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is a file, not a folder" in str(folder_problem(blocker, "the run store (--runs)", RunStoreError))
    below = folder_problem(blocker / "a" / "b", "the image cache folder", CacheError)
    assert isinstance(below, CacheError) and f"{blocker / 'a' / 'b'}: {blocker} is a file" in str(below)
    assert folder_problem(tmp_path / "new" / "deeper", "x", RunStoreError) is None
    assert not (tmp_path / "new").exists()


def test_the_disk_check_counts_the_caches_still_to_build(write_suite, two_heads, phantom_root, tmp_path):
    """Two runs share one cache: its bytes are counted once, then not at all once it is built."""
    from cxr_bench.data.cache import ImageCache, estimate_cache_bytes
    from cxr_bench.engine.trainer import load_run_data

    suite = write_suite(two_heads)
    cache = tmp_path / "cache"
    plan, specs = _specs(suite, phantom_root, tmp_path / "runs", overrides={"data.cache_dir": str(cache)})
    check = check_sweep(specs, RunStore(tmp_path / "runs", "tiny"))
    assert check.problems == [] and check.cache_bytes == {str(cache): estimate_cache_bytes(40, 32)}
    built: ImageCache = load_run_data(plan.runs[0].config, progress=False).train.cache
    assert len(built.names) == 40 and sum(f.stat().st_size for f in built.dir.iterdir()) <= check.cache_bytes[
        str(cache)]
    assert check_sweep(specs, RunStore(tmp_path / "runs", "tiny")).cache_bytes == {}
    assert set(check.image_keys.values()) == {built.key}  # one stat per image gives the build's key


# ---------------------------------------------------------------------------------------------- stale images
def _fake_run(rd, status: str, key: str, hashes: dict, *, checkpoint: bool = False, completed_files: bool = True):
    """The files a run leaves, by hand: enough for the store to call it completed with intact files."""
    rd.path.mkdir(parents=True)
    if completed_files:
        (rd.path / "predictions").mkdir()
        (rd.path / "predictions" / "test.csv").write_text("image\n00000001_000.png\n")
        rd.metrics_path.write_text(json.dumps({"test": {"n_images": 1, "mean_auc": 0.5}}))
    if checkpoint:
        rd.last_checkpoint.parent.mkdir()
        rd.last_checkpoint.write_bytes(b"x")
    rd.manifest_path.write_text(json.dumps({"run_id": rd.run_id, "status": status, "cache_key": key,
                                            "data": {"file_hashes": hashes},
                                            "artifacts": artifact_record(rd.path) if completed_files else {}}))


def test_runs_computed_on_other_images_are_refused_naming_both_keys(write_suite, two_heads, make_phantom, tmp_path):
    from cxr_bench.engine.trainer import load_run_data

    root = make_phantom()
    suite = write_suite(two_heads)
    out = tmp_path / "runs"
    plan, specs = _specs(suite, root, out)
    store = RunStore(out, "tiny")
    hashes = NIHRelease.open(root).file_hashes()
    now = load_run_data(plan.runs[0].config, progress=False).train.cache.key  # the engine's key, built
    old = "0123456789abcdef" * 4
    a, b = (store.run(s.run_id) for s in specs)

    _fake_run(a, "completed", old, hashes)
    _fake_run(b, "failed", old, hashes, completed_files=False)  # nothing of the old pixels to resume
    check = check_sweep(specs, store)
    assert check.done == {a.run_id} and check.image_keys == {a.run_id: now, b.run_id: now}
    (problem,) = check.problems
    msg = str(problem)
    assert isinstance(problem, RunStoreError) and "\n" not in msg
    for needle in (f"run {a.run_id}", old[:16], now[:16], str(root), "another --runs", str(a.path)):
        assert needle in msg, needle
    assert str(b.path) not in msg

    # An interrupted run with a checkpoint would resume from the old pixels: stale too.
    b.manifest_path.unlink()
    b.path.rmdir()
    _fake_run(b, "running", old, hashes, checkpoint=True, completed_files=False)
    (problem,) = check_sweep(specs, store).problems
    assert "and 1 more run(s)" in str(problem) and str(b.path) in str(problem)

    # Other metadata files: another dataset, which each run refuses on its own (not a stale-image refusal).
    for rd in (a, b):
        m = json.loads(rd.manifest_path.read_text())
        m["data"]["file_hashes"] = {"Data_Entry_2017_v2020.csv": "f" * 64}
        rd.manifest_path.write_text(json.dumps(m))
    assert check_sweep(specs, store).problems == []


# ---------------------------------------------------------------------------------------------- console
def test_console_digest_keeps_metric_warnings_for_the_run_log(tmp_path):
    from cxr_bench.runner.console import console_digest

    console = logging.StreamHandler(io.StringIO())
    keep = logging.FileHandler(tmp_path / "log.txt")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(console)
    root.addHandler(keep)
    roc = logging.getLogger("cxr_bench.metrics.roc")
    try:
        with console_digest(keep, "run abc"):
            for label in ("Mass", "Nodule", "Hernia"):
                roc.warning("bootstrap: label %s has no positive or no negative case in %d of %d resamples; "
                            "its interval uses the other %d", label, 3, 50, 47)
            roc.warning("%s split (%d images): no positive or no negative case for %s; ...", "val", 10, "Hernia")
            logging.getLogger("cxr_bench.engine").warning("a warning the console must still see")
            for _ in range(3):
                warnings.warn("same thing again", UserWarning, stacklevel=1)
    finally:
        root.removeHandler(console)
        root.removeHandler(keep)
        root.setLevel(level)
        keep.close()
    shown = console.stream.getvalue().splitlines()
    kept = (tmp_path / "log.txt").read_text()
    assert kept.count("bootstrap: label") == 3 and "val split (10 images)" in kept
    assert kept.count("same thing again") == 1  # each distinct Python warning once
    assert "a warning the console must still see" in shown
    (summary,) = [line for line in shown if line.startswith("run abc: ")]
    assert "in val: Hernia" in summary and "for 3 label(s)" in summary and "1 other warning(s)" in summary
    assert str(tmp_path / "log.txt") in summary
    assert not any("bootstrap: label" in line or "same thing again" in line for line in shown)


PLUGIN = """
import torch

from cxr_bench.data.augment import AUGMENTATIONS
from cxr_bench.engine.optim import OPTIMIZERS


@OPTIMIZERS.register("x2_rmsprop")
def rmsprop(groups, cfg):
    return torch.optim.RMSprop(groups, lr=cfg.lr)


AUGMENTATIONS.register("x2_flip")(AUGMENTATIONS.get("flip"))
"""


def test_a_plugins_optimizer_and_augmentation_are_known_names(tmp_path, monkeypatch, phantom_root):
    """Names are checked against the registries only, so what a suite's plugin registers is accepted; a
    name no registry has is refused before any work, with the closest known one."""
    from cxr_bench.data.augment import AUGMENTATIONS
    from cxr_bench.engine.optim import OPTIMIZERS

    lib = tmp_path / "lib"  # installed elsewhere: plugins are never imported from the suite's own folder
    lib.mkdir()
    (lib / "x2_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(lib))
    suite = tmp_path / "p.toml"
    block = '[[block]]\nname = "b"\nset = { "optim.optimizer" = "x2_rmsprop", "data.augment" = "x2_flip" }\n'
    suite.write_text('[suite]\nname = "p"\nimports = ["x2_plugin"]\n' + block)
    try:
        (run,) = plan_sweep(suite, data_root=phantom_root).runs
        assert (run.config.optim.optimizer, run.config.data.augment) == ("x2_rmsprop", "x2_flip")
        suite.write_text(suite.read_text().replace('"x2_rmsprop"', '"x2_rmsprop_"'))
        with pytest.raises(ConfigError, match=r"optim.optimizer = 'x2_rmsprop_' in the suite: unknown optimizer "
                                              r"'x2_rmsprop_' \(did you mean x2_rmsprop"):
            plan_sweep(suite, data_root=phantom_root)
    finally:
        OPTIMIZERS._entries.pop("x2_rmsprop", None)  # the registries have no public removal
        AUGMENTATIONS._entries.pop("x2_flip", None)
        monkeypatch.delitem(sys.modules, "x2_plugin", raising=False)
