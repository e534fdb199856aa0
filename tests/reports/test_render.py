from __future__ import annotations

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cxr_bench.cli import main
from cxr_bench.errors import ReportError
from cxr_bench.reports.render import TEMPLATES, execute_notebook, template_path, validate_parameters


@pytest.mark.slow
def test_cli_renders_the_three_reports(run_store, tmp_path):
    root, ids = run_store
    out = tmp_path / "report"
    assert main(["report", "--runs", str(root), "--out", str(out)]) == 0
    assert all((out / f"{name}.ipynb").is_file() for name in TEMPLATES)
    metrics = json.loads((root / "wang2017" / ids["resnet50_14"] / "metrics.json").read_text())
    html = {name: (out / f"{name}.html").read_text() for name in TEMPLATES}
    for name, text in html.items():
        assert re.search(r'<img[^>]+src="data:image/png;base64,', text), name  # figures embedded
        assert "NOT COMPARABLE WITH THE PAPERS" in text  # the sample-profile banner
        assert "ReportContext.load" not in text  # inputs hidden
        assert "Traceback" not in text
    rep = html["replication"]
    # The ROC table: label names, our AUC from metrics.json (3 decimals) and the paper's Table 17 value.
    for label in ("Atelectasis", "Pleural_Thickening", "Hernia"):
        assert label in rep
    auc = metrics["test"]["per_label"]["Cardiomegaly"]["auc"]
    assert f"{auc:.3f}" in rep and "0.8100" in rep and "Table 17" in rep
    # Localization beside Table 4 (Cardiomegaly at T(IoBB)=0.1: 0.9931 in the paper; ours 0.05*2*0.9).
    assert "Weakly-supervised localization" in rep and "Cardiomegaly (paper)" in rep
    assert "0.993" in rep and "0.090" in rep
    assert "grayscale: gamma vs identity" in html["ablation"] or "gamma vs identity" in html["ablation"]
    assert ids["failed"] in html["leaderboard"] and "airspace opacity" in html["leaderboard"]
    nb = nbformat.read(out / "replication.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and str(root.resolve()) in injected[0].source


def _template(path, cells):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    nbformat.write(nb, path)
    return path


def test_failing_cell_is_named_and_parameters_are_data(tmp_path):
    pwned = tmp_path / "pwned"
    evil = f"x'); import pathlib; pathlib.Path({str(pwned)!r}).touch(); ('"
    evil2 = f'x"); import pathlib; pathlib.Path({str(pwned)!r}).touch(); ("\n'
    params = new_code_cell('value = ""\nother = ""')
    params.metadata["tags"] = ["parameters"]
    template = _template(tmp_path / "t.ipynb", [
        new_markdown_cell("# test"),
        params,
        new_code_cell("print('VALUE=' + repr(value))\nprint('OTHER=' + repr(other))"),
        new_code_cell("# checks the data\nraise ValueError('boom ' + str(len(value)))"),
    ])
    with pytest.raises(ReportError) as err:
        execute_notebook(template, tmp_path / "out" / "t.ipynb", {"value": evil, "other": evil2})
    msg = str(err.value)
    assert "cell 3" in msg and "`# checks the data`" in msg and "ValueError: boom" in msg and "t.ipynb" in msg
    assert not pwned.exists()  # the string was passed as data, never executed
    executed = nbformat.read(tmp_path / "out" / "t.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"VALUE={evil!r}" in printed and f"OTHER={evil2!r}" in printed


def test_parameters_must_be_strings_or_paths(tmp_path):
    assert validate_parameters({"runs_dir": tmp_path, "suite": "s", "out_dir": "rel"})["out_dir"].startswith("/")
    for bad in ({"suite": 1}, {"suite": ["a"]}, {"suite": type("S", (str,), {})("x")}, {"1x": "a"},
                {"suite": "a\x00b"}):
        with pytest.raises(ReportError):
            validate_parameters(bad)


def test_templates_have_a_parameters_cell_with_inputs_only():
    for name in TEMPLATES:
        nb = nbformat.read(template_path(name), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        code = [ln for ln in tagged[0].source.splitlines() if ln.strip() and not ln.startswith("#")]
        assert sorted(ln.split("=")[0].strip() for ln in code) == ["out_dir", "runs_dir", "suite"]
        assert all(not c.outputs for c in nb.cells if c.cell_type == "code")


def test_report_on_an_empty_store_fails_before_starting_a_kernel(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]) == 2
    assert "no completed run" in capsys.readouterr().err
