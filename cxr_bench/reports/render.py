"""Render the report notebooks: papermill executes a template, nbconvert turns it into HTML.

Why each precaution:

- *Pinned kernel.* A kernel spec named ``python3`` found on the Jupyter path may start whatever
  ``python`` is first on ``PATH`` (the one ipykernel installs into a venv literally says ``"python"``), i.e.
  an interpreter without cxr-bench. We write our own spec whose ``argv[0]`` is :data:`sys.executable` into
  a temporary ``<out>/.kernels-*`` folder (removed on every exit, Ctrl-C included) and give papermill a
  kernel manager that looks *only* there, so the notebook runs in the interpreter that runs
  ``cxr-bench report``, with no global Jupyter configuration needed.
- *A user's files.* ``--out`` names a folder, not its files: an existing ``<name>.ipynb`` / ``.html`` there
  is replaced only if cxr-bench wrote it (the notebook's kernel spec, the page's generator tag or title);
  anything else stops the report before it runs, naming the file.
- *Absolute paths and a working directory.* Parameters are resolved to absolute paths and the kernel runs
  in the output directory, so a relative ``--runs`` means the same thing inside the kernel.
- *Parameters are data.* Only strings and paths are accepted; papermill writes them as escaped Python
  string literals in a new cell, so a value like ``x'); import os; ...`` stays a string (tested).
- *Errors name the cell.* A failing cell raises :class:`~cxr_bench.errors.ReportError` with the template,
  the cell's index in the template, its first line and the exception, and the partly executed notebook is
  kept beside the HTML for debugging.
- *A cell timeout* bounds a runaway cell (default 600 s per cell).
- *One analysis per render.* The reports share one :class:`~.analysis.Analysis` through a cache folder the
  tool owns (``<out>/.cache``), keyed by :func:`~.analysis.inputs_key`: the leaderboard, the expert-label
  table and the paired ablations are computed once, by the first report that needs them.
- *Unchanged reports are not rendered again.* A report whose HTML exists and whose inputs key is the one
  recorded when it was written (``<out>/.cache/rendered.json``) is kept as it is.
- *No interrupt at shutdown.* jupyter_client interrupts a kernel (SIGINT) before asking it to shut down; a
  kernel still busy with a message then logs ``KeyboardInterrupt caught in kernel`` at ERROR level, which
  reached the terminal during long renders. Every cell has finished when papermill shuts the kernel down,
  so the pinned kernel manager skips that interrupt (a cell timeout still interrupts).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from ..errors import ReportError
from ..utils.io import atomic_write_text
from .names import DEFAULT_CELL_TIMEOUT, OPTIONAL_TEMPLATES, TEMPLATES

log = logging.getLogger(__name__)

KERNEL_NAME = "cxr-bench-python"
GENERATOR_TAG = '<meta name="generator" content="cxr-bench report" />'
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PATH_PARAMETERS = frozenset({"runs_dir", "out_dir", "cache_dir"})
CACHE_DIR = ".cache"  # under a report folder: the shared analysis and the record of rendered reports
RENDERED = "rendered.json"


def template_dir() -> Path:
    """The packaged templates (``cxr_bench.report_templates``), or the checkout's ``reports/``."""
    try:
        path = Path(str(importlib.resources.files("cxr_bench.report_templates")))
        if (path / f"{TEMPLATES[0]}.ipynb").is_file():
            return path
    except ModuleNotFoundError:
        pass
    import cxr_bench

    path = Path(cxr_bench.__file__).resolve().parents[1] / "reports"
    if not (path / f"{TEMPLATES[0]}.ipynb").is_file():
        raise ReportError(f"report templates not found (package cxr_bench.report_templates or {path}); "
                          "reinstall cxr-bench with `pip install -e .`")
    return path


def template_path(name: str) -> Path:
    if name not in TEMPLATES + OPTIONAL_TEMPLATES:
        raise ReportError(f"unknown report {name!r}; known: {', '.join(TEMPLATES + OPTIONAL_TEMPLATES)}")
    return template_dir() / f"{name}.ipynb"


def validate_parameters(parameters: dict[str, Any]) -> dict[str, str]:
    """Parameters as plain strings: names must be identifiers, values ``str`` or ``os.PathLike``.

    Path parameters (:data:`PATH_PARAMETERS`) are made absolute. Anything else (numbers, lists, objects
    with a clever ``__repr__``) is refused, so nothing but an escaped string literal reaches the kernel.
    """
    out: dict[str, str] = {}
    for key, value in parameters.items():
        if not isinstance(key, str) or not _IDENT.fullmatch(key):
            raise ReportError(f"report parameter name {key!r} is not a Python identifier")
        if value is None:
            value = ""
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if type(value) is not str:  # noqa: E721 - a str subclass could override its repr
            raise ReportError(f"report parameter {key}={value!r}: only strings and paths are accepted, got "
                              f"{type(value).__name__}")
        if "\x00" in value:
            raise ReportError(f"report parameter {key}: contains a NUL character")
        if key in PATH_PARAMETERS and value:
            value = str(Path(value).expanduser().resolve())
        out[key] = value
    return out


def install_kernel_spec(kernels_dir: Path) -> Path:
    """Write a kernel spec that starts :data:`sys.executable` (this interpreter) into ``kernels_dir``."""
    spec_dir = kernels_dir / KERNEL_NAME
    spec = {
        # The kernel's own log (e.g. its start-up notice about TCP transport) would reach the user's
        # terminal unformatted; errors in cells are in the notebook, so it only needs to speak on errors.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": f"cxr-bench ({sys.executable})",
        "language": "python",
        "metadata": {"debugger": False},
    }
    atomic_write_text(spec_dir / "kernel.json", json.dumps(spec, indent=1) + "\n")
    return spec_dir


def _pinned_kernel_manager(kernels_dir: Path) -> type:
    """An async kernel manager whose spec manager sees only ``kernels_dir`` (no global Jupyter path)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class PinnedKernelSpecManager(KernelSpecManager):
        @default("kernel_dirs")
        def _kernel_dirs_default(self) -> list[str]:
            return [str(kernels_dir)]

        @default("ensure_native_kernel")
        def _ensure_native_kernel_default(self) -> bool:
            return False

    class PinnedKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return PinnedKernelSpecManager()

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:  # see the module docstring: no SIGINT into a finished notebook's kernel
                return
            await super()._async_interrupt_kernel()

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            # The kernel process's own stdout/stderr carry only its log (e.g. "[IPKernelApp] ERROR |
            # KeyboardInterrupt caught in kernel" when it is shut down); cell output travels over ZMQ into
            # the notebook, and a failing cell is reported from there.
            kw.setdefault("stdout", subprocess.DEVNULL)
            kw.setdefault("stderr", subprocess.DEVNULL)
            await super()._async_launch_kernel(kernel_cmd, **kw)

    return PinnedKernelManager


@dataclass(frozen=True)
class RenderedReport:
    name: str
    notebook: Path
    html: Path


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:120]
    return "(empty cell)"


def _template_index(template: nbformat.NotebookNode, source: str, fallback: int) -> int:
    for i, cell in enumerate(template.cells):
        if cell.cell_type == "code" and cell.source == source:
            return i
    return fallback


def _error_outputs(nb: nbformat.NotebookNode) -> list[tuple[int, nbformat.NotebookNode, dict[str, Any]]]:
    return [(i, cell, out) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def execute_notebook(template: str | Path, output: str | Path, parameters: dict[str, Any], *,
                     cwd: str | Path | None = None, timeout: int = DEFAULT_CELL_TIMEOUT,
                     start_timeout: int = 120) -> nbformat.NotebookNode:
    """Execute ``template`` with ``parameters`` into ``output`` (.ipynb) on the pinned kernel.

    Raises :class:`ReportError` naming the failing cell (its index in the template and its first line).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    template, output = Path(template).resolve(), Path(output).resolve()
    params = validate_parameters(parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    cwd = Path(cwd).resolve() if cwd is not None else output.parent
    source_nb = nbformat.read(template, as_version=4)
    try:
        with tempfile.TemporaryDirectory(prefix=".kernels-", dir=output.parent) as kernels:
            kernels_dir = Path(kernels)
            install_kernel_spec(kernels_dir)
            papermill.execute_notebook(
                str(template), str(output), parameters=params, kernel_name=KERNEL_NAME, language="python",
                cwd=str(cwd), progress_bar=False, execution_timeout=timeout, start_timeout=start_timeout,
                kernel_manager_class=_pinned_kernel_manager(kernels_dir),
            )
    except PapermillExecutionError as e:
        idx = _template_index(source_nb, e.source, e.cell_index)
        raise ReportError(
            f"{template.name}: cell {idx} (`{_first_line(e.source)}`) failed: {e.ename}: {e.evalue}. "
            f"The executed notebook with the traceback is {output}"
        ) from None
    except OSError as e:  # a full disk, an unwritable folder: name the file
        raise ReportError(f"{e.filename or output}: {e.strerror or e}") from e
    except Exception as e:  # kernel start-up, timeouts, dead kernels: all surface as one clear error
        if isinstance(e, ReportError):
            raise
        raise ReportError(f"{template.name}: execution failed ({type(e).__name__}: {e}); "
                          f"see {output} if it was written") from e
    nb = nbformat.read(output, as_version=4)
    check_executed(nb, source_nb, template.name, output)
    return nb


def check_executed(nb: nbformat.NotebookNode, template: nbformat.NotebookNode, name: str, path: Path) -> None:
    """Raise :class:`ReportError` if any cell of an executed notebook holds an error output."""
    errors = _error_outputs(nb)
    if errors:
        i, cell, out = errors[0]
        idx = _template_index(template, cell.source, i)
        raise ReportError(f"{name}: cell {idx} (`{_first_line(cell.source)}`) produced an error: "
                          f"{out.get('ename')}: {out.get('evalue')}. See {path}")


def _drop_alt_text_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Alternative text is missing")


def export_html(nb: nbformat.NotebookNode, path: str | Path, title: str = "") -> Path:
    """HTML with code inputs and prompts hidden and stderr (log lines) dropped; figures stay embedded as
    base64 PNG, so the file is self-contained."""
    from nbconvert import HTMLExporter

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a copy: the .ipynb keeps its logs
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", [])
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    # The lab template drops an image's alt metadata and nbconvert then warns once per report; the
    # warning says nothing a report reader or writer can act on.
    exporter.log.addFilter(_drop_alt_text_warning)
    try:
        body, _ = exporter.from_notebook_node(nb)
    finally:
        exporter.log.removeFilter(_drop_alt_text_warning)
    # How a later render recognises the page as its own (and so may replace it).
    body = body.replace("<head>", f"<head>\n{GENERATOR_TAG}", 1)
    path = Path(path)
    atomic_write_text(path, body)
    path.chmod(0o644)  # a report is meant to be shared; the atomic writer's temp file is private (0600)
    return path


def render_report(name: str, runs_dir: str | Path, out_dir: str | Path, *, suite: str | None = None,
                  timeout: int = DEFAULT_CELL_TIMEOUT, cache_dir: str | Path | None = None,
                  key: str = "") -> RenderedReport:
    """Execute the template ``name`` against a run store and write ``<out>/<name>.ipynb`` and ``.html``;
    ``cache_dir`` and ``key`` (:func:`~.analysis.inputs_key`) let it share the render's analysis."""
    out_dir = Path(out_dir).resolve()
    nb_path = out_dir / f"{name}.ipynb"
    for path in (nb_path, out_dir / f"{name}.html"):
        if (path.exists() or path.is_symlink()) and not is_own_report_file(path):
            raise ReportError(f"{path} exists and was not written by cxr-bench report; it is not replaced. Move "
                              "it away or pass another --out")
    params = {"runs_dir": Path(runs_dir), "suite": suite or "", "out_dir": out_dir,
              "cache_dir": cache_dir or "", "inputs_key": key}
    nb = execute_notebook(template_path(name), nb_path, params, cwd=out_dir, timeout=timeout)
    title = f"cxr-bench {name} report" + (f": {suite}" if suite else "")
    html = export_html(nb, out_dir / f"{name}.html", title)
    log.info("wrote %s and %s", nb_path, html)
    return RenderedReport(name, nb_path, html)


def is_own_report_file(path: str | Path) -> bool:
    """Whether ``path`` is a report cxr-bench rendered: a notebook papermill executed from one of its
    templates, or a page with its generator tag (or, from before the tag, its title)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.suffix == ".ipynb":
            meta = json.loads(path.read_text(encoding="utf-8")).get("metadata") or {}
            source = Path(str((meta.get("papermill") or {}).get("input_path") or "")).stem
            return source in TEMPLATES or (meta.get("kernelspec") or {}).get("name") == KERNEL_NAME
        text = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError, AttributeError):
        return False
    return GENERATOR_TAG in text or "<title>cxr-bench " in text


def _rendered_keys(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class ReportTarget:
    """One set of reports to render: the runs it reads and the folder it writes."""

    runs_dir: Path
    out_dir: Path
    suite: str | None


def report_targets(runs: str | Path, suite: str | None = None, out: str | Path | None = None,
                   ) -> list[ReportTarget]:
    """Where ``cxr-bench report`` reads and writes: without ``out``, one target per suite directory of the
    store (``<runs>/<suite>/``, or ``runs`` itself when it is one suite's directory) writing into its
    ``reports/`` folder, the layout ``cxr-bench run --runs <runs>`` produces; with ``out``, one target for
    every run found. Targets without a completed run are dropped, so an empty list means nothing to report.
    """
    from ..errors import RunStoreError
    from ..results.runs import load_runs, suite_dirs

    root = Path(runs)
    if not root.is_dir():
        raise RunStoreError(f"run store {root} does not exist; pass --runs DIR (the --runs of "
                            "`cxr-bench run`)")
    if out is not None:
        return [ReportTarget(root, Path(out), suite)] if load_runs(root, suite) else []
    if (root / "config.json").is_file():
        raise ReportError(f"{root} is one run's directory; pass --out-dir DIR to write its reports")
    dirs = suite_dirs(root)
    if suite:
        dirs = [d for d in dirs if d.name == suite or (d == root and len(dirs) == 1)]
    targets = []
    for d in dirs:
        found = load_runs(d, suite)
        names = {r.suite for r in found}
        if found:  # a suite directory's reports are titled with its suite
            one = names.pop() if len(names) == 1 else None
            targets.append(ReportTarget(d, d / "reports", suite or one))
    return targets


def render_reports(runs_dir: str | Path, out_dir: str | Path, *, suite: str | None = None,
                   names: tuple[str, ...] | list[str] = TEMPLATES,
                   timeout: int = DEFAULT_CELL_TIMEOUT, force: bool = False) -> list[RenderedReport]:
    """Render every report in ``names``, sharing one analysis; a report whose inputs are unchanged since it
    was written is kept (``force`` renders it anyway). Fails early when the store has no completed run."""
    from .analysis import Analysis, inputs_key

    runs_dir, out_dir = Path(runs_dir).resolve(), Path(out_dir).resolve()
    cache_dir = out_dir / CACHE_DIR
    key = inputs_key(runs_dir, suite, templates=template_dir())
    analysis = Analysis(runs_dir, suite or None, cache_dir=cache_dir, key=key)
    if not analysis.runs():
        raise ReportError(f"no completed run under {runs_dir}" + (f" for suite {suite!r}" if suite else "")
                          + "; run `cxr-bench run` first or point --runs at its run store")
    if tuple(names) == TEMPLATES and any(r.external_datasets() for r in analysis.runs()):
        names = [*names, "generalization"]
    record = cache_dir / RENDERED
    done = _rendered_keys(record)
    out = []
    for name in names:
        html, nb = out_dir / f"{name}.html", out_dir / f"{name}.ipynb"
        if not force and done.get(name) == key and html.is_file() and nb.is_file():
            log.info("%s: inputs unchanged since %s was written; kept", name, html)
            out.append(RenderedReport(name, nb, html))
            continue
        done.pop(name, None)
        atomic_write_text(record, json.dumps(done, indent=1) + "\n")
        out.append(render_report(name, runs_dir, out_dir, suite=suite, timeout=timeout, cache_dir=cache_dir,
                                 key=key))
        done[name] = key
        atomic_write_text(record, json.dumps(done, indent=1) + "\n")
    return out
