"""Untrusted files: a checkpoint that carries a pickled object never runs it, whichever engine path reads it
(load, resume, evaluate); no loader in the package can unpickle; names from a suite file cannot leave the
run store through ``cxr-bench run``.

Covered elsewhere (README.md): pickled pretrained weights (tests/models/test_weights.py), run store name
and symlink checks (tests/runner/test_runstore.py), notebook parameter injection
(tests/reports/test_render.py).

The payload is a real exploit: an object whose ``__reduce__`` makes the unpickler call ``open(marker, "w")``.
Each test first proves the payload works (``torch.load(weights_only=False)`` does create the marker), so
"marker absent" after the refused load means the protection held, not that the payload was inert.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cxr_bench.config import RunConfig
from cxr_bench.engine.checkpoint import FORMAT_VERSION, load_checkpoint
from cxr_bench.errors import ConfigError, TrainingError, WeightsError

_SPEC = importlib.util.spec_from_file_location("reliability_harness", Path(__file__).with_name("test_harness.py"))
H = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(H)

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

    assert main(["run", "--suite", str(suite), "--out", "runs", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr-bench: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert "evil.toml" in err and repr(name) in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing created anywhere
    with pytest.raises(ConfigError):
        from cxr_bench.runner.suite import load_suite

        load_suite(suite)
