"""Bad data through the user's entry points: each broken file gives one clear line (exit 2) naming the file,
line and value, or a reported skip naming the image, never a traceback and never a silently wrong number.

The parsers' own cases (every malformed Data_Entry variant, hypothesis-fuzzed CSVs, split errors from
make_splits, every broken PNG in the cache) are tested in tests/data/; see README.md. Here the same faults go
through ``cxr-bench data info``, ``cxr-bench train`` and ``cxr-bench prepare`` and an end-to-end run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import reliability_harness as H

from cxr_bench.cli import main

ENTRY = "Data_Entry_2017_v2020.csv"
# `cxr-bench ARGS...` with every decoding process pausing 1 s after each chunk (prepare_cache's
# chunk_pause_s), so a test can act between chunks.
SLOW_PREPARE = r"""
import functools, sys
import cxr_bench.data.cache as cache

cache.prepare_cache = functools.partial(cache.prepare_cache, chunk_pause_s=1.0)
from cxr_bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _copy(phantom_root: Path, dest: Path) -> Path:
    return Path(shutil.copytree(phantom_root, dest))


def _edit_lines(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _one_line_error(err: str, *needles: str) -> None:
    assert err.startswith("cxr-bench: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def _unknown_label(lines: list[str]) -> tuple[int, str]:
    lines[2] = lines[2].replace(lines[2].split(",")[1], "Pneumonnia", 1)
    return 3, "Pneumonnia"


def _duplicate_image(lines: list[str]) -> tuple[int, str]:
    lines.append(lines[5])
    return len(lines), lines[5].split(",")[0]


def _malformed_line(lines: list[str]) -> tuple[int, str]:
    lines[3] = lines[3].rsplit(",", 2)[0]  # two fields short
    return 4, lines[3].split(",")[0]


@pytest.mark.parametrize("corrupt", [_unknown_label, _duplicate_image, _malformed_line])
def test_data_info_on_broken_metadata_exits_2_naming_file_line_value(phantom_root, tmp_path, capsys, corrupt):
    root = _copy(phantom_root, tmp_path / "nih")
    where: dict[str, tuple[int, str]] = {}
    _edit_lines(root / ENTRY, lambda lines: where.setdefault("at", corrupt(lines)))
    line, value = where["at"]
    assert main(["data", "info", "--data-root", str(root)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no partial table printed before the error
    _one_line_error(captured.err, ENTRY, f"line {line}", value)


@pytest.mark.slow
def test_data_info_subprocess_exit_status_and_single_line(phantom_root, tmp_path):
    """The same through the real ``python -m cxr_bench`` entry point (exit status, stderr, no traceback)."""
    root = _copy(phantom_root, tmp_path / "nih")
    _edit_lines(root / ENTRY, _unknown_label)
    proc = H.cli(["data", "info", "--data-root", root])
    assert proc.returncode == 2
    # Logging may add INFO lines; the error itself is one line and nothing is a traceback.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cxr-bench: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    _one_line_error(errors[0] + "\n", ENTRY, "line 3", "Pneumonnia")


def _listed_but_absent(root: Path) -> tuple[str, ...]:
    with open(root / "test_list.txt", "a", encoding="utf-8") as fh:
        fh.write("\n00000999_000.png")
    return "test_list.txt", "00000999_000.png"


def _patient_on_both_sides(root: Path) -> tuple[str, ...]:
    test = (root / "test_list.txt").read_text().split()
    moved = test[1]  # the second image of the first test patient
    (root / "test_list.txt").write_text("\n".join(n for n in test if n != moved))
    with open(root / "train_val_list.txt", "a", encoding="utf-8") as fh:
        fh.write("\n" + moved)
    return f"patient {int(moved[:8])}", "train_val_list.txt", "test_list.txt"


@pytest.mark.parametrize("corrupt", [_listed_but_absent, _patient_on_both_sides])
def test_train_on_a_bad_split_list_exits_2_before_training(phantom_root, tmp_path, capsys, corrupt):
    root = _copy(phantom_root, tmp_path / "nih")
    needles = corrupt(root)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(H.config_dict(root)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run), "--no-progress"]) == 2
    _one_line_error(capsys.readouterr().err, *needles)
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


@pytest.mark.slow
def test_broken_images_are_reported_skips_and_never_counted(make_phantom, tmp_path, capsys):
    """corrupt, truncated, zero-byte, not-PNG and missing files: ``prepare`` lists each by name and reason,
    and a run on that release scores exactly the good images of each split (counts, not just no crash)."""
    from cxr_bench.config import RunConfig
    from cxr_bench.data.phantoms import REJECTING_FAULTS, read_phantom_manifest
    from cxr_bench.data.release import NIHRelease
    from cxr_bench.data.splits import make_splits
    from cxr_bench.engine.trainer import train_run

    root = make_phantom(size=32, faults=REJECTING_FAULTS)
    faulty = read_phantom_manifest(root)["faults"]
    assert sorted(faulty.values()) == sorted(REJECTING_FAULTS)
    cache_dir = tmp_path / "cache"
    assert main(["prepare", "--data-root", str(root), "--image-size", "32", "--workers", "1", "--cache-dir",
                 str(cache_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"rejected: {len(REJECTING_FAULTS)}" in out
    for name in faulty:
        assert f"  {name}: " in out  # each skipped file named, with its reason

    cfg = RunConfig.from_dict(H.config_dict(root, **{"optim.epochs": 1, "data.cache_dir": str(cache_dir)}))
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    release = NIHRelease.open(root)
    splits = make_splits(release, protocol=cfg.data.split, val_fraction=cfg.data.val_fraction,
                         seed=cfg.data.split_seed)
    names = release.metadata["image"].to_numpy()
    evaluated = set(names[splits.val]) | set(names[splits.test])
    assert set(faulty) & evaluated, "no broken image in val/test: the counts below would prove nothing"
    for split, rows in (("val", splits.val), ("test", splits.test)):
        good = sorted(n for n in names[rows] if n not in faulty)
        assert metrics[split]["n_images"] == len(good)
        lines = (tmp_path / "run" / "predictions" / f"{split}.csv").read_text().splitlines()[1:]
        assert sorted(line.split(",")[0] for line in lines) == good


@pytest.mark.parametrize("kind", ["suite.toml", "config.json", "config.toml"])
def test_a_file_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys, kind):
    bad = tmp_path / kind
    bad.write_bytes(b'[suite]\nname = "\xff\xfe"\n' if kind == "suite.toml" else
                    b'{"name": "\xff"}' if kind == "config.json" else b'name = "\xff"\n')
    args = (["run", "--suite", str(bad), "--dry-run"] if kind == "suite.toml" else
            ["train", "--config", str(bad), "--run-dir", str(tmp_path / "run")])
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, kind)


# ------------------------------------------------------------------ the images folder and the image cache
def _prepare(root: Path, cache_dir: Path, *extra: str) -> int:
    return main(["prepare", "--data-root", str(root), "--image-size", "32", "--workers", "1", "--cache-dir",
                 str(cache_dir), "--no-progress", *extra])


def test_link_loops_and_dangling_links_in_the_images_folder_are_rejected_images(make_phantom, tmp_path,
                                                                               capsys):
    """A self-loop, a two-link loop, a dangling link and a folder link back to the root: ``prepare``
    rejects exactly the three broken images with their reasons, and a run's data (cache and PNG source)
    loads with exactly the other images."""
    from cxr_bench.config import RunConfig
    from cxr_bench.data.release import NIHRelease
    from cxr_bench.engine.trainer import load_run_data

    root = make_phantom(size=32)
    images = root / "images"
    names = list(NIHRelease.open(root).metadata["image"])
    loop, pair, dangling = names[3], names[10], names[-2]
    for name in (loop, pair, dangling):
        (images / name).unlink()
    (images / loop).symlink_to(loop)
    (images / pair).symlink_to("partner.png")
    (images / "partner.png").symlink_to(pair)  # not listed: never reported as an image
    (images / dangling).symlink_to(tmp_path / "unmounted-disk" / dangling)
    (root / "images_007").symlink_to(".")  # the root again, under an image-folder name
    (images / "images").symlink_to("..")

    assert _prepare(root, tmp_path / "cache") == 0
    out = capsys.readouterr().out
    assert "rejected: 3" in out
    assert f"  {loop}: symbolic link loop" in out and f"  {pair}: symbolic link loop" in out
    assert f"  {dangling}: dangling symbolic link (its target {tmp_path / 'unmounted-disk' / dangling}" in out

    broken = {loop, pair, dangling}
    for source in ("cache", "png"):
        cfg = RunConfig.from_dict(H.config_dict(root, **{"data.source": source,
                                                         "data.cache_dir": str(tmp_path / "cache")}))
        data = load_run_data(cfg, progress=False)
        listed = [ds.csv["image"].tolist() + ds.dropped["image"].tolist()
                  for ds in (data.train, data.val, data.test)]
        assert sorted(sum(listed, [])) == sorted(names)  # every listed image in exactly one split
        dropped = [set(ds.dropped["image"]) for ds in (data.train, data.val, data.test)]
        assert set().union(*dropped) == broken and sum(map(len, dropped)) == 3
        assert not broken & set().union(*(set(ds.csv["image"]) for ds in (data.train, data.val, data.test)))


def test_a_truncated_or_overwritten_cache_is_repaired_by_prepare(make_phantom, tmp_path, capsys):
    """The complete cache's images.npy cut short, then pixels overwritten: each next ``prepare`` rebuilds
    the chunks that no longer match (and only those) and the pixels equal a clean build's."""
    import numpy as np

    from cxr_bench.data.cache import ImageCache

    root = make_phantom(n_patients=70, size=32)  # 140 images: chunks of 64, 64, 12
    assert _prepare(root, tmp_path / "clean") == 0
    clean = ImageCache.open(capsys.readouterr().out.splitlines()[0].removeprefix("cache: "))
    assert _prepare(root, tmp_path / "cache") == 0
    cache_dir = Path(capsys.readouterr().out.splitlines()[0].removeprefix("cache: "))
    npy = cache_dir / "images.npy"
    row = 32 * 32
    os.truncate(npy, 128 + 100 * row)  # rows 0-99 kept: chunk 0 intact, chunks 1 (64-127) and 2 lost

    assert _prepare(root, tmp_path / "cache") == 0
    out = capsys.readouterr().out
    assert "rebuilt: 2 damaged chunk(s): 1, 2" in out
    np.testing.assert_array_equal(ImageCache.open(cache_dir, verify="full").array, clean.array)

    with open(npy, "r+b") as fh:
        fh.seek(128 + 130 * row + 17)  # image 130: chunk 2
        fh.write(bytes(range(40)))
    assert _prepare(root, tmp_path / "cache", "--verify") == 0
    out = capsys.readouterr().out
    assert "verified: 3 of 3 chunks" in out and "rebuilt: 1 damaged chunk(s): 2" in out
    np.testing.assert_array_equal(ImageCache.open(cache_dir, verify="full").array, clean.array)
    assert _prepare(root, tmp_path / "cache", "--verify") == 0
    assert "rebuilt" not in capsys.readouterr().out


def test_a_cache_dir_that_is_a_file_exits_2_naming_it(phantom_root, tmp_path, capsys):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    assert _prepare(phantom_root, blocker) == 2
    _one_line_error(capsys.readouterr().err, str(blocker), "is a file, not a folder")
    assert blocker.read_text() == "not a folder"


@pytest.fixture
def tmpfs(tmp_path):
    """A real, small filesystem (tmpfs) that fills up; needs root and a kernel that lets us mount."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem reports ENOSPC (what another job on a shared disk does)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for block in (1 << 16, 4096):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


@pytest.mark.slow
def test_a_disk_that_fills_up_during_prepare_is_one_line_and_the_rerun_resumes(make_phantom, tmp_path, tmpfs,
                                                                               capsys):
    """A real full disk (tmpfs filled by another writer while ``prepare`` runs): exit 2, one line naming the
    file and ENOSPC; the chunks written before stay, and the rerun after freeing space finishes the cache
    with the pixels of a clean build. A disk too small from the start is refused before any decoding."""
    import numpy as np

    from cxr_bench.data.cache import DONE_FILE, ImageCache

    root = make_phantom(n_patients=128, size=32)  # 256 images of 1 kB: 4 chunks of 64
    small = tmpfs("100k")
    assert _prepare(root, small / "cache") == 2
    _one_line_error(capsys.readouterr().err, "not enough disk space", str(small / "cache"), "kB are free")

    disk = tmpfs("2m")
    log = tmp_path / "prepare.log"
    proc = H.spawn(["-c", SLOW_PREPARE, "prepare", "--data-root", root, "--image-size", "32", "--workers", "1",
                    "--cache-dir", disk / "cache", "--no-progress"], log=log)
    try:
        journal = H.wait_for(lambda: next((p for p in disk.glob(f"cache/*/{DONE_FILE}")
                                           if p.read_bytes().count(b"\n") >= 1), None),
                             proc, "the first finished chunk", log=log)
        filler = _fill(disk)
        assert proc.wait(timeout=H.DEADLINE_S) == 2
    finally:
        H.kill_group(proc)
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("cxr-bench: error:")]
    assert len(errors) == 1 and "Traceback" not in text, text
    _one_line_error(errors[0] + "\n", "No space left on device [ENOSPC]", str(journal.parent / "images.npy"),
                    "chunks already finished are kept")
    kept = journal.read_bytes().count(b"\n")
    assert 1 <= kept < 4 and not (journal.parent / "meta.json").exists()

    filler.unlink()
    assert _prepare(root, disk / "cache") == 0
    capsys.readouterr()
    assert journal.read_bytes().count(b"\n") == 4  # only the missing chunks were decoded
    assert _prepare(root, tmp_path / "clean") == 0
    clean = ImageCache.open(capsys.readouterr().out.splitlines()[0].removeprefix("cache: "))
    np.testing.assert_array_equal(ImageCache.open(journal.parent, verify="full").array, clean.array)
