from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cxr_bench.cli import main
from cxr_bench.errors import ReportError, RunStoreError
from cxr_bench.reports.render import (
    TEMPLATES,
    execute_notebook,
    report_targets,
    template_path,
    validate_parameters,
)

# Text from a run store that a browser would run if a report printed it unescaped: a run name, a weights
# file name inside an error message and a config, a suite (directory) name.
NAME = '<script>alert("cxr-xss-1")</script>'
IMG = '<img src=x onerror=alert("cxr-xss-2")>'
SUITE = 'abl<b onmouseover=alert("cxr-xss-3")>x'


class _LiveTags(HTMLParser):
    """Collects what a browser would execute from the payloads: an event-handler attribute or a script
    element whose text carries a ``cxr-xss`` marker."""

    def __init__(self) -> None:
        super().__init__()
        self.live: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        for key, value in attrs:
            if key.startswith("on") and "cxr-xss" in (value or ""):
                self.live.append(f"<{tag} {key}={value}>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and "cxr-xss" in data:
            self.live.append(f"<script>{data[:60]}")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, store_factory):
    """The factory's store plus three hostile runs, rendered by the CLI into one folder (real papermill)."""
    root = tmp_path_factory.mktemp("hostile") / "runs"
    ids = store_factory.make_run_store(root)
    base = {"optim.epochs": 3, "data.image_size": 64}
    failed, run_dir = store_factory.write_run(root, "ablations", {**base, "model.backbone": "mobilenet_v1", "seed": 5,
                                                                  "name": NAME}, strength=0.0, status="failed")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["name"] = NAME
    manifest["error"] = {"type": "TrainingError", "message": f"weights {IMG} unreadable ({NAME})", "traceback": ""}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    ids["hostile_weights"], _ = store_factory.write_run(root, "wang2017", {
        **base, "model.backbone": "resnet50", "data.label_set": "chestxray8", "loss.name": "wcel",
        "model.pretrained": f"/w/{IMG}.pth"}, strength=0.8)
    ids["hostile_suite"], _ = store_factory.write_run(root, SUITE, {**base, "model.backbone": "alexnet"}, strength=0.6)
    ids["hostile_failed"] = failed
    # The trainer's subgroup and calibration blocks in metrics.json (the factory's other runs have none).
    ids["densenet"], _ = store_factory.write_run(root, "wang2017", {**base, "model.backbone": "densenet121",
                                                                    "loss.name": "wcel"}, strength=1.0, extended=True)
    out = root.parent / "report"
    assert main(["report", "--runs", str(root), "--out-dir", str(out)]) == 0
    return root, ids, out, {name: (out / f"{name}.html").read_text() for name in TEMPLATES}


@pytest.mark.slow
def test_cli_renders_the_three_reports(rendered):
    root, ids, out, html = rendered
    assert all((out / f"{name}.ipynb").is_file() for name in TEMPLATES)
    metrics = json.loads((root / "wang2017" / ids["resnet50_14"] / "metrics.json").read_text())
    for name, text in html.items():
        assert re.search(r'<img[^>]+src="data:image/png;base64,', text), name  # figures embedded
        assert "NOT COMPARABLE WITH ANY PAPER" in text  # the sample-profile banner, at the top
        assert text.index("NOT COMPARABLE") < text.index("<h2")
        assert "open_report" not in text  # inputs hidden
        assert "Traceback" not in text
        # The provenance footer, from the manifests the factory wrote.
        assert "Provenance" in text and "0123456789ab" in text and "sha256 9d4de640ee4f" in text
    rep = html["replication"]
    # The ROC table: label names, our AUC from metrics.json (3 decimals) and the paper's Table 17 value.
    for label in ("Atelectasis", "Pleural Thickening", "Hernia"):
        assert label in rep
    auc = metrics["test"]["per_label"]["Cardiomegaly"]["auc"]
    assert f"{auc:.3f}" in rep and "0.810" in rep and "Table 17" in rep
    # Localization beside Table 4 (Cardiomegaly at T(IoBB)=0.1: 0.9931 in the paper; ours 0.05*2*0.9).
    assert "Weakly-supervised localization" in rep and "0.993" in rep and "0.090" in rep
    # Subgroups and calibration read from metrics.json; runs without those blocks are named, not recomputed.
    assert "sex: M" in rep and "mean Brier" in rep
    assert re.search(r"Left out: [^<]*no (&#x27;|')subgroups(&#x27;|') block", rep)
    assert "gamma vs identity" in html["ablation"]
    assert ids["failed"] in html["leaderboard"] and "airspace opacity" in html["leaderboard"]
    nb = nbformat.read(out / "replication.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and str(root.resolve()) in injected[0].source


@pytest.mark.slow
def test_reports_print_hostile_names_as_text(rendered):
    _, ids, _, html = rendered
    for name, text in html.items():
        parser = _LiveTags()
        parser.feed(text)
        assert parser.live == [], name
    board = html["leaderboard"]
    # Each payload is on the page, as text: the failed run's name and error, the suite, the weights file.
    assert ids["hostile_failed"] in board and "cxr-xss-1" in board and "cxr-xss-2" in board
    assert "cxr-xss-3" in board
    assert "&lt;script&gt;" in board and "&lt;img src=x onerror" in board
    assert "cxr-xss-2" in html["replication"]  # the weights file name, in the run's name and protocol notes


def test_report_targets_follow_run_out_layout(run_store, tmp_path):
    root, _ = run_store
    targets = report_targets(root)
    assert [(t.runs_dir, t.out_dir, t.suite) for t in targets] == [(root / s, root / s / "reports", s) for s in
                                                                  ("ablations", "wang2017")]
    (t,) = report_targets(root, "wang2017")
    assert t.out_dir == root / "wang2017" / "reports" and t.suite == "wang2017"
    (t,) = report_targets(root / "wang2017")  # a suite's own directory
    assert t.out_dir == root / "wang2017" / "reports"
    (t,) = report_targets(root, out=tmp_path / "o")
    assert (t.runs_dir, t.out_dir, t.suite) == (root, tmp_path / "o", None)
    assert report_targets(root, "nope") == []
    with pytest.raises(RunStoreError, match="does not exist"):
        report_targets(tmp_path / "missing")


@pytest.mark.slow
def test_cli_default_output_is_where_run_writes(run_store, capsys):
    root, _ = run_store
    assert main(["report", "--runs", str(root), "--suite", "ablations", "--template", "leaderboard"]) == 0
    html = root / "ablations" / "reports" / "leaderboard.html"
    assert html.is_file() and f"leaderboard: {html}" in capsys.readouterr().out
    assert not (root / "wang2017" / "reports").exists()


def test_empty_store_warns_and_exits_non_zero(tmp_path, capsys, store_factory):
    (tmp_path / "runs").mkdir()
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "o")]) == 1
    assert "warning: no completed run" in capsys.readouterr().err and not (tmp_path / "o").exists()
    # Only a failed run: still nothing to report, and the warning counts it.
    store_factory.write_run(tmp_path / "runs", "s", {"seed": 3}, strength=0.0, status="failed")
    assert main(["report", "--runs", str(tmp_path / "runs")]) == 1
    assert "1 run(s) failed or unfinished" in capsys.readouterr().err
    assert main(["report", "--runs", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


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
        assert sorted(ln.split("=")[0].strip() for ln in code) == ["cache_dir", "inputs_key", "out_dir", "runs_dir",
                                                                  "suite"]
        assert all(not c.outputs for c in nb.cells if c.cell_type == "code")
        # Every report ends with the provenance footer and shows the banner first.
        codes = [c.source for c in nb.cells if c.cell_type == "code"]
        assert "sections.open_report(" in codes[1] and codes[-1] == "sections.footer(ctx)"
        # Thin cells: one call each into cxr_bench.reports.sections.
        assert all(c.startswith("sections.") and c.count("\n") == 0 for c in codes[2:])
        # Nothing a template prints bypasses escaping: no Markdown built from data, no raw DataFrame display.
        assert not any("Markdown(" in c for c in codes)


def test_kernel_shutdown_sends_no_interrupt(tmp_path):
    """jupyter_client interrupts (SIGINT) a kernel before shutting it down; a kernel busy with a message then
    logs 'KeyboardInterrupt caught in kernel' to the terminal. The pinned manager does not interrupt at
    shutdown, and still interrupts otherwise (a cell timeout)."""
    import asyncio

    from cxr_bench.reports.render import KERNEL_NAME, _pinned_kernel_manager, install_kernel_spec

    install_kernel_spec(tmp_path / "kernels")
    manager = _pinned_kernel_manager(tmp_path / "kernels")
    marker = tmp_path / "sigint"
    # ipykernel swaps the SIGINT handler around each message it handles; switched off so ours stays.
    code = ("import signal, pathlib\n"
            "kernel = get_ipython().kernel\n"
            "kernel.pre_handler_hook = kernel.post_handler_hook = lambda *a: None\n"
            f"_ = signal.signal(signal.SIGINT, lambda *a: pathlib.Path({str(marker)!r}).write_text('x'))")

    async def session(interrupt_first: bool) -> None:
        km = manager(kernel_name=KERNEL_NAME)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            await kc.execute_interactive(code, timeout=30)
            if interrupt_first:
                await km.interrupt_kernel()
                await kc.execute_interactive("import time; time.sleep(0.2)", timeout=30)
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()

    asyncio.run(session(False))
    assert not marker.exists()
    asyncio.run(session(True))  # the same handler sees an ordinary interrupt: the check above can fail
    assert marker.exists()


@pytest.mark.slow
def test_unchanged_reports_are_kept_and_changed_ones_rendered_again(tmp_path, store_factory):
    from cxr_bench.reports.render import render_reports

    root = tmp_path / "runs"
    _, run_dir = store_factory.write_run(root, "s", {"data.image_size": 64}, strength=1.0)
    out = tmp_path / "reports"
    (first,) = render_reports(root, out, names=["leaderboard"])
    stamp = first.html.stat().st_mtime_ns
    (run_dir / "log.txt").write_text("suite re-run: completed, skipped\n")  # what a re-run touches
    (again,) = render_reports(root, out, names=["leaderboard"])
    assert again.html.stat().st_mtime_ns == stamp
    history = run_dir / "history.csv"
    history.write_text(history.read_text() + "2,30,0.5,0.55,0.75,0.0001,1.0,126.0\n")
    (changed,) = render_reports(root, out, names=["leaderboard"])
    assert changed.html.stat().st_mtime_ns != stamp
