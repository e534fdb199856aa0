"""Untrusted files: a checkpoint that carries a pickled object never runs it, whichever engine path reads it
(load, resume, evaluate); no loader in the package can unpickle; names from a suite file cannot leave the
run store through ``cxr-bench run``; text from a suite file, the environment or the command line cannot
become a line of an sbatch script, read objects through ``run_name``, or import code shipped beside it.

Covered elsewhere (README.md): pickled pretrained weights (tests/models/test_weights.py), run store name
and symlink checks (tests/runner/test_store.py), notebook parameter injection
(tests/reports/test_render.py).

The payload is a real exploit: an object whose ``__reduce__`` makes the unpickler call ``open(marker, "w")``.
Each test first proves the payload works (``torch.load(weights_only=False)`` does create the marker), so
"marker absent" after the refused load means the protection held, not that the payload was inert.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import reliability_harness as H
import torch

from cxr_bench.config import RunConfig
from cxr_bench.engine.checkpoint import FORMAT_VERSION, load_checkpoint
from cxr_bench.errors import ConfigError, TrainingError, WeightsError

PACKAGE = Path(__file__).resolve().parents[2] / "cxr_bench"


class Exploit:
    """Unpickling this calls ``open(marker, "w")``: a file appears if any code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _armed(path: Path, obj: object, marker: Path) -> Path:
    """Save ``obj`` (holding an :class:`Exploit`) to ``path`` and prove that a plain unpickle fires it."""
    probe = path.with_name("probe.pt")  # torch.load dispatches a .safetensors name to safetensors
    torch.save(obj, probe)
    torch.load(probe, weights_only=False)  # the unsafe load: the payload runs
    assert marker.exists(), "the payload did not fire; the test would prove nothing"
    marker.unlink()
    return probe.rename(path)


def _checkpoint(run_id: str, marker: Path) -> dict:
    """A plausible last.pt (right format and run id) with the payload where the model state should be."""
    return {"format": FORMAT_VERSION, "run_id": run_id, "epoch": 1, "step": 2, "finished": False,
            "best_metric": 0.5, "best_epoch": 1, "history": [], "model": Exploit(marker)}


def test_pickled_checkpoint_is_refused_by_load_resume_and_evaluate(phantom_root, tmp_path):
    from cxr_bench.engine.trainer import evaluate_checkpoint, train_run

    cfg = RunConfig.from_dict(H.config_dict(phantom_root, **{"optim.epochs": 1}))
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = _armed(run / "checkpoints" / "last.pt", _checkpoint(cfg.run_id(), marker), marker)

    with pytest.raises(TrainingError, match="last.pt"):
        load_checkpoint(last)
    assert not marker.exists()
    # A resumed run reads checkpoints/last.pt first thing.
    with pytest.raises(TrainingError, match="last.pt"):
        train_run(cfg, run, progress=False)
    assert not marker.exists()
    with pytest.raises(TrainingError, match="last.pt"):
        evaluate_checkpoint(cfg, last, splits=("test",))
    assert not marker.exists()
    assert not (run / "metrics.json").exists()


def test_pickle_in_safetensors_clothing_is_refused(tmp_path):
    from cxr_bench.models import create_model

    marker = tmp_path / "PWNED"
    fake = _armed(tmp_path / "model.safetensors", {"w": Exploit(marker)}, marker)
    with pytest.raises(WeightsError, match="model.safetensors"):
        create_model("timm:test_resnet", num_labels=3, pretrained=fake)
    assert not marker.exists()


def _calls(tree: ast.AST, dotted: str) -> list[ast.Call]:
    head, _, attr = dotted.rpartition(".")
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == attr and isinstance(n.func.value, ast.Name) and n.func.value.id == head]


def test_no_unsafe_deserialisation_anywhere_in_the_package():
    """Every torch.load in the package passes weights_only=True; no pickle/marshal/yaml.load, no
    np.load(allow_pickle=True). A new loader that forgets it fails here, before it ships."""
    torch_loads = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _calls(tree, "torch.load"):
            torch_loads += 1
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                f"{path}:{call.lineno}: torch.load without weights_only=True"
        for bad in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "yaml.load", "dill.load",
                    "joblib.load"):
            found = _calls(tree, bad)
            assert not found, f"{path}:{found[0].lineno}: {bad} can run code from a file"
        for call in _calls(tree, "np.load") + _calls(tree, "numpy.load"):
            for k in call.keywords:
                assert not (k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant)
                                                             and k.value.value is False)), \
                    f"{path}:{call.lineno}: np.load(allow_pickle=...)"
    assert torch_loads >= 2  # checkpoint.py and weights.py: the scan sees them


# ---------------------------------------------------------------------------------------------- run store
@pytest.mark.parametrize("where", ["suite", "block", "profile"])
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "a/b"])
def test_suite_file_names_cannot_escape_the_store(tmp_path, capsys, monkeypatch, where, name):
    from cxr_bench.cli import main

    suite = H.write_suite(tmp_path / "evil.toml", "evil", {"optim.lr": [0.01]})
    text = suite.read_text()
    if where == "suite":
        text = text.replace('name = "evil"', f"name = {json.dumps(name)}")
    elif where == "block":
        text = text.replace('name = "main"', f"name = {json.dumps(name)}")
    else:
        text += f"\n[profiles.{json.dumps(name)}]\nset = {{ \"optim.epochs\" = 1 }}\n"
    suite.write_text(text)
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = sorted(p for p in tmp_path.rglob("*"))

    assert main(["run", "--suite", str(suite), "--runs", "runs", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr-bench: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert "evil.toml" in err and repr(name) in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing created anywhere
    with pytest.raises(ConfigError):
        from cxr_bench.runner.suite import load_suite

        load_suite(suite)


# ---------------------------------------------------------------------------------------------- SLURM options
def _sbatch_script(tmp_path: Path, params: dict) -> str:
    """The sbatch script submitit renders from executor parameters (a do-nothing ``srun`` on PATH lets its
    SLURM executor start; nothing is submitted)."""
    import os

    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old}"
    try:
        executor = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="slurm")
        executor.update_parameters(**params)
        return executor._executor._make_submission_file_text("true", "uid")
    finally:
        os.environ["PATH"] = old


def _run_script(tmp_path: Path, script: str) -> None:
    import os
    import subprocess

    path = tmp_path / "job.sh"
    path.write_text(script)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(path)], env=env, cwd=tmp_path, check=False, capture_output=True, timeout=60)


@pytest.mark.parametrize("source", ["suite", "command line", "environment", "option name", "partition"])
def test_slurm_options_cannot_inject_shell_lines(tmp_path, source):
    """A newline in any SLURM option ends the ``#SBATCH`` comment: the rest is a shell line run on the
    cluster. Proven live first (the raw value, rendered by submitit and run by bash, creates the marker),
    then refused from every source before a script exists."""
    from cxr_bench.runner.launchers import SlurmOptions
    from cxr_bench.runner.suite import load_suite

    marker = tmp_path / "PWNED"
    # submitit shell-quotes the value; the trailing "#" comments out the closing quote on the new line.
    payload = f"abc\ntouch {marker} #"
    _run_script(tmp_path, _sbatch_script(tmp_path, {"slurm_additional_parameters": {"account": payload}}))
    assert marker.exists(), "the payload did not fire; the test would prove nothing"
    marker.unlink()

    with pytest.raises(ConfigError) as err:
        if source == "suite":
            suite = H.write_suite(tmp_path / "evil.toml", "evil", {"optim.lr": [0.01]})
            suite.write_text(suite.read_text() + f"\n[slurm]\nextra = {{ account = {json.dumps(payload)} }}\n")
            load_suite(suite)
        elif source == "command line":
            SlurmOptions.resolve({"extra": [f"account={payload}"]}, {}, {})
        elif source == "environment":
            SlurmOptions.resolve({}, {}, {"CXR_BENCH_SLURM_EXTRA": f"account={payload}"})
        elif source == "option name":
            SlurmOptions.resolve({"extra": [f"{payload}=1"]}, {}, {})
        else:
            SlurmOptions.resolve({"partition": payload}, {}, {})
    msg = str(err.value)
    assert "\n" not in msg and ("control character" in msg or "not an sbatch option name" in msg
                                or "not a partition name" in msg), msg
    assert {"suite": "evil.toml: [slurm]", "environment": "environment"}.get(source, "command line") in msg
    assert not marker.exists()


@pytest.mark.parametrize("option,value", [("output", "{home}/.bashrc"), ("export", "LD_PRELOAD={home}/x.so"),
                                          ("chdir", "{home}"), ("wrap", "touch x"), ("open_mode", "truncate")])
def test_slurm_options_that_redirect_the_job_are_refused(tmp_path, option, value):
    """``output`` (the job's log, opened for append) would write into any file the user owns; ``export``
    sets the job's environment; ``chdir``, ``wrap``, ``open-mode`` change what runs or where. Each reaches
    the script as an ``#SBATCH`` line when passed through (shown), and is refused by name."""
    from cxr_bench.runner.launchers import SlurmOptions

    value = value.format(home=tmp_path)
    script = _sbatch_script(tmp_path, {"slurm_additional_parameters": {option: value}})
    assert f"#SBATCH --{option.replace('_', '-')}=" in script
    with pytest.raises(ConfigError, match=f"SLURM extra option {option!r} is not allowed"):
        SlurmOptions.resolve({}, {"extra": {option: value}}, {}, suite_source="evil.toml: [slurm]")


@pytest.mark.slow
def test_slurm_injection_through_cxr_bench_run(tmp_path, capsys):
    from cxr_bench.cli import main

    marker = tmp_path / "PWNED"
    out = tmp_path / "runs"
    rc = main(["run", "--suite", "smoke", "--runs", str(out), "--launcher", "submitit",
               "--slurm-extra", f"account=abc\ntouch {marker}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("cxr-bench: error: command line: SLURM extra option 'account'")
    assert not marker.exists() and not (out / "smoke" / "submitit").exists()


# ---------------------------------------------------------------------------------------------- run_name
def test_run_name_cannot_reach_objects_or_the_environment(tmp_path, monkeypatch, capsys):
    """A ``run_name`` formatted with ``str.format`` on the config objects reads module globals and
    environment variables into manifests and reports. The payload is proven live on the config objects
    (as the old code formatted them), then refused at load, naming the file and the key."""
    import dataclasses

    from cxr_bench.cli import main
    from cxr_bench.runner.suite import load_suite

    monkeypatch.setenv("CXR_X1_SECRET", "hunter2")
    template = "{model.__init__.__globals__[dataclasses].sys.modules[os].environ[CXR_X1_SECRET]}"
    cfg = RunConfig()
    assert template.format(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}) == "hunter2"

    suite = H.write_suite(tmp_path / "evil.toml", "evil", {"optim.lr": [0.01]})
    suite.write_text(suite.read_text().replace('name = "evil"', f'name = "evil"\nrun_name = {json.dumps(template)}', 1))
    with pytest.raises(ConfigError, match=r"evil.toml: \[suite\] run_name .* is not a config field"):
        load_suite(suite)
    assert main(["run", "--suite", str(suite), "--runs", str(tmp_path / "runs"), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err and err.startswith("cxr-bench: error:") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()

    # A width of a billion characters would be a 1 GB name per run: refused, not rendered.
    suite.write_text(suite.read_text().replace(json.dumps(template), '"{seed:>999999999}"'))
    with pytest.raises(ConfigError, match="format spec"):
        load_suite(suite)


# Characters that end a line or reorder text without being below U+0020: NEL, the line and paragraph
# separators, bidi overrides and isolates, zero-width and BOM format characters, private use, unassigned.
INVISIBLE = ["\u0085", "\u2028", "\u2029", "\u202e", "\u2066", "\u200b", "\ufeff", "\ue000", "\u0378",
             "\x7f", "\x1b"]


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_names_refuse_line_breaking_and_format_characters(tmp_path, capsys, char):
    """Every way user text becomes a name: a run_name's literal text, a field value it renders (a weights
    path), a config's name, an sbatch value, a download's part name; one line each, naming the character."""
    import unicodedata

    from cxr_bench.cli import main
    from cxr_bench.data.download import DownloadError, check_file_name
    from cxr_bench.runner.launchers import SlurmOptions
    from cxr_bench.runner.suite import load_suite

    code = f"U+{ord(char):04X}"
    assert ord(char) >= 32 or unicodedata.category(char) == "Cc"
    suite = H.write_suite(tmp_path / "evil.toml", "evil", {"optim.lr": [0.01]})
    text = suite.read_text()
    suite.write_text(text.replace('name = "evil"', f'name = "evil"\nrun_name = {json.dumps("a" + char + "{seed}")}', 1))
    with pytest.raises(ConfigError, match=re.escape(code)) as err:
        load_suite(suite)
    assert "evil.toml: [suite] run_name" in str(err.value) and "\n" not in str(err.value)
    assert main(["run", "--suite", str(suite), "--runs", str(tmp_path / "runs"), "--dry-run"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("cxr-bench: error:") and err_text.count("\n") == 1 and code in err_text

    # A field's value rendered into the name.
    weights = tmp_path / f"w{char}.pt"
    suite.write_text(text.replace('name = "evil"', 'name = "evil"\nrun_name = "{model.pretrained}"', 1)
                     .replace("[base]", f"[base]\n\"model.pretrained\" = {json.dumps(str(weights))}", 1))
    with pytest.raises(ConfigError, match=re.escape(code)):
        load_suite(suite)

    with pytest.raises(ConfigError, match=re.escape(code)):
        RunConfig.from_dict({"name": f"x{char}y"})
    with pytest.raises(ConfigError, match=re.escape(code)):
        SlurmOptions.resolve({}, {"extra": {"comment": f"x{char}y"}}, {})
    with pytest.raises(DownloadError, match=re.escape(code)):
        check_file_name(f"x{char}y.csv", "urls.json: parts[0]")


# ---------------------------------------------------------------------------------------------- plugins
def test_suite_imports_cannot_run_code_shipped_beside_the_suite(tmp_path):
    """``[suite] imports`` names installed modules. A module placed next to a suite file is not on the
    path (the suite's folder is never added), standard-library modules that act on import and ``__main__``
    modules are refused by name."""
    import sys

    from cxr_bench.runner.suite import load_suite

    marker = tmp_path / "PWNED"
    folder = tmp_path / "download"
    folder.mkdir()
    (folder / "x1_beside_the_suite.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    suite = H.write_suite(folder / "evil.toml", "evil", {"optim.lr": [0.01]})
    text = suite.read_text()
    for module, needle in (("x1_beside_the_suite", "cannot import plugin module 'x1_beside_the_suite'"),
                           ("antigravity", "standard-library module"), ("this", "standard-library module"),
                           ("pip.__main__", "__main__ module"), ("os; import x", "not a module name"),
                           ("../x", "not a module name")):
        suite.write_text(text.replace('name = "evil"', f'name = "evil"\nimports = [{json.dumps(module)}]', 1))
        with pytest.raises(ConfigError, match=re.escape(needle)) as err:
            load_suite(suite)
        assert "evil.toml: [suite] imports" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    assert "antigravity" not in sys.modules and "x1_beside_the_suite" not in sys.modules
