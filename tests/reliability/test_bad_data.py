"""Bad data through the user's entry points: each broken file gives one clear line (exit 2) naming the file,
line and value, or a reported skip naming the image, never a traceback and never a silently wrong number.

The parsers' own cases (every malformed Data_Entry variant, hypothesis-fuzzed CSVs, split errors from
make_splits, every broken PNG in the cache) are tested in tests/data/; see README.md. Here the same faults go
through ``cxr-bench data info``, ``cxr-bench train`` and ``cxr-bench prepare`` and an end-to-end run.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from cxr_bench.cli import main

_SPEC = importlib.util.spec_from_file_location("reliability_harness", Path(__file__).with_name("test_harness.py"))
H = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(H)

ENTRY = "Data_Entry_2017_v2020.csv"


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
    from cxr_bench.data.phantoms import REJECTING_FAULTS, read_phantom_manifest
    from cxr_bench.data.release import NIHRelease
    from cxr_bench.engine.trainer import train_run
    from cxr_bench.config import RunConfig
    from cxr_bench.data.splits import make_splits

    root = make_phantom(size=32, faults=REJECTING_FAULTS)
    faulty = read_phantom_manifest(root)["faults"]
    assert sorted(faulty.values()) == sorted(REJECTING_FAULTS)
    cache_dir = tmp_path / "cache"
    assert main(["prepare", "--data-root", str(root), "--size", "32", "--workers", "1", "--cache-dir",
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
