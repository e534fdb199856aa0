"""The command line as a user meets it: flags in either place, typos caught before any work, optional
packages really optional, a damaged run evaluated again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cxr_bench.cli import main as cli_main


def _cli(args: list[str], cwd: Path, extra_code: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    code = f"{extra_code}\nimport sys\nfrom cxr_bench.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_version_and_verbosity_after_the_subcommand(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cxr-bench {version('cxr-bench')}"
    assert cli_main(["suites", "-q"]) == 0
    assert cli_main(["-v", "suites", "-v"]) == 0


@pytest.mark.parametrize("flag,message", [
    ("model.backbone=mobilenetv1", "--set model.backbone=mobilenetv1: unknown backbone 'mobilenetv1' (did you mean "
                                   "mobilenet_v1"),
    ("data.label_set=chestxray15", "--set data.label_set=chestxray15: unknown label set 'chestxray15'"),
    ("seed=-1", "'seed'"),
    ("optim.lr=nan", "optim.lr"),
])
def test_typos_fail_before_any_work(tmp_path, capsys, flag, message):
    out = tmp_path / "runs"
    rc = cli_main(["run", "--suite", "smoke", "--runs", str(out), "--set", flag])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("cxr-bench: error: ") and "Traceback" not in err
    assert not out.exists()  # nothing was created: no cache, no run directory


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli_main(["run", "--suite", "smoke", "--runs", str(blocker), "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "cxr-bench: error:" in err and str(blocker) in err and "Traceback" not in err


def test_paper_dry_run_needs_no_data_and_shows_what_differs(tmp_path, capsys):
    from cxr_bench.bench.results import read_results_csv

    out = tmp_path / "runs"
    args = ["run", "--suite", "wang2017", "--profile", "paper", "--dry-run", "--wide", "--runs", str(out)]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    table, err = captured.out, captured.err
    header = table.splitlines()[0]
    # both readings of the backbone's training are listed, so the rows are told apart
    assert "freeze_backbone" in header and " True " in table and " False " in table
    assert "pair (vs reference)" in header
    assert "bundled sample" not in err and "no --data-root: the data, image and disk checks wait for it" in err
    assert not out.exists()
    # The time column: the committed CPU figure where a row matches, on the machine it names; never a GPU time.
    assert "est. time" in header
    cost, meta = read_results_csv(Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cost_curve.csv")
    prof = cost[cost["section"] == "paper_profile"]
    trained = prof["frozen_backbone"].astype(str) == "False"
    mobilenet = prof[(prof["backbone"] == "mobilenet_v1") & (prof["head"] == "wang2017") & trained]
    hours = float(mobilenet["hours"].iloc[0])
    rows = [line for line in table.splitlines() if " mobilenet_v1 " in line and " wang2017 " in line
            and " False " in line and " stem " in line]
    assert rows and all(f" {hours:,.0f} h (" in line and " CPU " in line for line in rows)
    assert f"measured on {meta['hostname']} ({meta['cpu']}, {meta['cpu_usable']} usable cores, no GPU)" in table
    assert "GPU time: not measured" in table and not re.search(r"(min|h|d\)) GPU", table)


BLOCK_REPORT_PACKAGES = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('papermill', 'nbformat', 'nbconvert'):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["report", "--help"], ["suites"]])
def test_the_cli_starts_without_report_packages(tmp_path, args):
    done = _cli(args, tmp_path, BLOCK_REPORT_PACKAGES)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_without_report_packages_and_a_damaged_run_is_evaluated_again(tmp_path):
    """papermill, nbformat and nbconvert blocked: --help and a whole smoke sweep still work. Then a run's
    test predictions are cut mid-row: the next sweep evaluates it again and the numbers come back."""
    out = tmp_path / "runs"
    first = _cli(["run", "--suite", "smoke", "--runs", str(out)], tmp_path, BLOCK_REPORT_PACKAGES)
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"reports not rendered \((papermill|nbformat|nbconvert) is not installed\)", first.stdout)
    store = out / "smoke"
    assert (store / "leaderboard.csv").is_file()

    run_dir = next(p for p in sorted(store.iterdir()) if (p / "predictions" / "test.csv").is_file())
    pred = run_dir / "predictions" / "test.csv"
    before = pred.read_bytes()
    pred.write_bytes(before[: len(before) // 2])  # cut mid-row
    from cxr_bench.runner.store import verify_artifacts

    assert any("predictions/test.csv changed" in p for p in verify_artifacts(run_dir))
    again = _cli(["run", "--suite", "smoke", "--runs", str(out), "--no-report"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert verify_artifacts(run_dir) == []
    assert pred.read_bytes() == before  # the same model on the same images: the same file
    assert len(pd.read_csv(pred)) > 0


def test_report_cli_choices_and_defaults_are_the_renderer_s():
    from cxr_bench.cli import build_parser
    from cxr_bench.reports import render

    args = build_parser().parse_args(["report", "--runs", "r"])
    assert args.timeout == render.DEFAULT_CELL_TIMEOUT
    for name in render.TEMPLATES:
        assert build_parser().parse_args(["report", "--runs", "r", "--template", name]).template == [name]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--runs", "r", "--template", "no-such-report"])


def _all_parsers():
    from cxr_bench.cli import _all_subparsers, build_parser

    parser = build_parser()
    return [parser, *_all_subparsers(parser)]


def test_help_is_plain_text_with_every_default():
    """No reST markup or doubled percent signs reach --help, and every option with a default says it."""
    for parser in _all_parsers():
        text = parser.format_help()
        assert "`" not in text and "%%" not in text, parser.prog
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, [], "==SUPPRESS==") \
                    and action.help != "==SUPPRESS==":
                assert "default" in parser._get_formatter()._expand_help(action).lower(), \
                    (parser.prog, action.option_strings)


@pytest.mark.parametrize("argv,expected", [
    (["run", "--suite", "smoke", "--profiel", "paper"], "cxr-bench run: error: unknown option --profiel (did you mean --profile?)"),
    (["run", "--suite", "smoke", "--dry-run", "--set", "optim.epoch=1"],
     "cxr-bench: error: --set optim.epoch=1: unknown config key 'optim.epoch' (did you mean 'optim.epochs'?)"),
])
def test_a_misspelled_flag_or_key_is_one_line_with_a_suggestion(argv, expected, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == expected and not any(line.startswith("usage:") for line in err)


def test_localize_refuses_before_any_work(tmp_path, capsys):
    """No run folder, a JSON --out (the summary's own name), or a companion file the user did not name: one
    line each, nothing written."""
    assert cli_main(["localize", "--run-dir", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err and not (tmp_path / "nope").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert cli_main(["localize", "--run-dir", str(run), "--out", str(tmp_path / "t.json")]) == 2
    assert "summary is written beside it" in capsys.readouterr().err
    (tmp_path / "t_boxes.csv").write_text("mine\n")
    assert cli_main(["localize", "--run-dir", str(run), "--out", str(tmp_path / "t.csv")]) == 2
    assert "never replaced" in capsys.readouterr().err and (tmp_path / "t_boxes.csv").read_text() == "mine\n"
