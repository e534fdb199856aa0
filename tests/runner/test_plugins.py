"""Plugins: ``[suite] imports`` makes a user's own component usable without editing the package, in this
process and in the worker processes that re-create a run from its ``config.json``.

README_PLUGIN and README_SUITE are the README's example, verbatim: the test runs exactly what a reader
copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cxr_bench.config import RunConfig
from cxr_bench.errors import ConfigError
from cxr_bench.models.heads import HEADS
from cxr_bench.runner.suite import load_suite

README_PLUGIN = '''\
# mypkg/cxr_plugins.py: importable where cxr-bench runs (pip install -e ., or on PYTHONPATH)
from torch import nn

from cxr_bench.models.heads import HEADS, Head, class_activation_map


@HEADS.register("gem")
class GeMHead(Head):
    """Generalised-mean pooling (p = 3), then a linear layer."""

    def __init__(self, in_features, num_labels, *, drop_rate=0.0, p=3.0):
        super().__init__(in_features, num_labels)
        self.p, self.drop, self.fc = p, nn.Dropout(drop_rate), nn.Linear(in_features, num_labels)

    def forward(self, feat):
        return self.fc(self.drop(feat.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1 / self.p)))

    def heatmap(self, feat):
        return class_activation_map(feat, self.fc)
'''

README_SUITE = '''\
# gem.toml: cxr-bench run --suite gem.toml
[suite]
name = "gem"
imports = ["mypkg.cxr_plugins"]

[[block]]
name = "pooling"
set = { "model.backbone" = "resnet50" }
grid = { "model.head" = ["gap", "gem"] }
reference = { "model.head" = "gap" }
'''


def _forget(prefix: str, heads: tuple[str, ...] = ()) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]
    for head in heads:
        HEADS._entries.pop(head, None)  # the registry has no public removal: a test cleans up after itself


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path/plugins/mypkg/cxr_plugins.py`` (the README's module) on ``sys.path``; forgotten after."""
    root = tmp_path / "plugins"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "cxr_plugins.py").write_text(README_PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    _forget("mypkg", ("gem",))
    yield root
    _forget("mypkg", ("gem",))


def test_readme_example(plugin_dir: Path, tmp_path: Path):
    from cxr_bench.models import create_model

    assert "gem" not in HEADS
    path = tmp_path / "gem.toml"
    path.write_text(README_SUITE)
    runs = load_suite(path).expand()
    assert "gem" in HEADS  # registered when the suite was loaded
    assert sorted(r.config.model.head for r in runs) == ["gap", "gem"]
    (pair,) = [p for r in runs for p in r.pairs]
    assert (pair.factor, pair.value, pair.reference_value) == ("model.head", "gem", "gap")
    # Every run's config carries the list, and keeps it through config.json.
    for r in runs:
        assert r.config.imports == ["mypkg.cxr_plugins"]
        assert RunConfig.from_dict(r.config.to_dict()).imports == ["mypkg.cxr_plugins"]
    # Where the plugin lives is not what a run computes: the same suite without the import has the same ids
    # (its registry names are checked by the run pre-check, not at load).
    plain = tmp_path / "plain.toml"
    plain.write_text(README_SUITE.replace('imports = ["mypkg.cxr_plugins"]\n', ""))
    assert sorted(r.run_id for r in load_suite(plain).expand()) == sorted(r.run_id for r in runs)

    # The head works in a model: logits are GeM pooling of the features through the head's own linear layer.
    model = create_model("timm:test_resnet", head="gem", num_labels=3).eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feat = model.features(x)
        gem = feat.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        expected = gem @ model.head.fc.weight.T + model.head.fc.bias
        assert torch.allclose(model(x), expected, atol=1e-5)
        # One hot spot of 16 on a 4 x 4 map: the mean is 1, GeM is (16^3 / 16)^(1/3) = 256^(1/3) = 6.3496.
        spot = torch.zeros(1, model.head.in_features, 4, 4)
        spot[..., 0, 0] = 16.0
        w, b = model.head.fc.weight, model.head.fc.bias
        assert torch.allclose(model.head(spot), 256 ** (1 / 3) * w.sum(dim=1) + b, atol=1e-4)


@pytest.mark.parametrize("body,needle", [
    ("raise RuntimeError('plugin is broken')\n", "RuntimeError: plugin is broken"),
    ("def f(:\n", "SyntaxError"),
    ("import no_such_dependency_x1\n", "No module named 'no_such_dependency_x1'"),
    ("from cxr_bench.models.heads import HEADS, GapHead\nHEADS.register('gap')(GapHead)\n",
     "head 'gap' is registered twice"),
])
def test_plugin_import_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, needle: str):
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "x1_bad_plugin.py").write_text(body)
    monkeypatch.syspath_prepend(str(root))
    path = tmp_path / "bad.toml"
    path.write_text(README_SUITE.replace("mypkg.cxr_plugins", "x1_bad_plugin"))
    try:
        with pytest.raises(ConfigError) as err:
            load_suite(path)
    finally:
        _forget("x1_bad_plugin")
    msg = str(err.value)
    assert msg.startswith(f"{path.resolve()}: [suite] imports: cannot import plugin module 'x1_bad_plugin'"), msg
    assert needle in msg and "\n" not in msg


def test_missing_plugin_and_bad_imports_key(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(README_SUITE)
    with pytest.raises(ConfigError, match=r"cannot import plugin module 'mypkg.cxr_plugins': ModuleNotFoundError: "
                                          r"No module named 'mypkg' \(is the package installed"):
        load_suite(path)
    path.write_text(README_SUITE.replace('imports = ["mypkg.cxr_plugins"]', 'imports = "mypkg.cxr_plugins"'))
    with pytest.raises(ConfigError, match=r"\[suite\] imports must be a list of module names"):
        load_suite(path)
    path.write_text(README_SUITE.replace('imports = ["mypkg.cxr_plugins"]\n', "")
                    .replace('set = { "model.backbone" = "resnet50" }', 'set = { imports = ["x"] }'))
    with pytest.raises(ConfigError, match=r"block 'pooling' set: 'imports': plugin modules go in \[suite\] imports"):
        load_suite(path)


@pytest.mark.slow
def test_plugin_reaches_a_worker_process(plugin_dir: Path, tmp_path: Path, phantom_root: Path):
    """A torchrun rank (and a submitit job) is a fresh process that re-creates the run from its
    ``config.json``: it knows the plugin only through the config. The worker started here is the command
    torchrun starts for each rank (asserted), without torchrun's own agent process.

    Checked by mutation: with the engine not importing ``cfg.imports``, the worker exits non-zero with
    "unknown head 'gem'".
    """
    from cxr_bench.runner.suite import parse_overrides
    from cxr_bench.runner.torchrun import torchrun_command

    path = tmp_path / "gem.toml"
    path.write_text(README_SUITE.replace('"resnet50"', '"timm:test_resnet"'))
    tiny = ["data.root=" + str(phantom_root), "device=cpu", "data.image_size=32", "data.workers=0",
            "data.val_fraction=0.25", "data.label_set=chestxray8", "optim.epochs=1", "optim.batch_size=8",
            "optim.max_steps_per_epoch=1", "eval.bootstrap=20"]
    (run,) = [r for r in load_suite(path).expand(None, parse_overrides(tiny)) if r.config.model.head == "gem"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(run.config.to_dict()))
    rank_cmd = ["-m", "cxr_bench", "train", "--config", str(run_dir / "config.json"), "--run-dir", str(run_dir)]
    assert torchrun_command(run_dir, 2)[-len(rank_cmd):] == rank_cmd

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *rank_cmd, "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n_images"] > 0


def test_the_readme_shows_exactly_the_tested_example():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"```python\n{README_PLUGIN}```" in readme
    assert f"```toml\n{README_SUITE}```" in readme


@pytest.mark.slow
@pytest.mark.parametrize("where", ["beside the suite", "in the working directory"])
@pytest.mark.parametrize("command", [["suites"], ["run", "--dry-run", "--suite"]])
def test_python_dash_m_never_imports_a_module_from_the_cwd_or_the_suite_folder(tmp_path: Path, where, command):
    """``python -m`` puts the working directory first on sys.path; a plugin is still taken only from the
    installed modules. A real module file that would create a marker, a real subprocess."""
    marker = tmp_path / "PWNED"
    cwd = tmp_path / "cwd"
    folder = tmp_path / "download" if where == "beside the suite" else cwd
    for d in (cwd, folder):
        d.mkdir(exist_ok=True)
    (folder / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    suite = folder / "evil.toml"
    suite.write_text(README_SUITE.replace('"mypkg.cxr_plugins"', '"evil_plugin"').replace('"resnet50"', '"alexnet"'))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.realpath(p) != str(cwd))
    done = subprocess.run([sys.executable, "-m", "cxr_bench", *command, str(suite)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert err[-1].startswith("cxr-bench: error: ") and "cannot import plugin module 'evil_plugin'" in err[-1]
    assert not marker.exists()


def test_a_folder_named_in_pythonpath_is_still_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cxr_bench.plugins import plugin_search_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), "/usr/lib/python3/x"])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert plugin_search_path() == ["/usr/lib/python3/x"]
    assert plugin_search_path(beside="/usr/lib/python3/x") == []
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert plugin_search_path() == [str(tmp_path), "/usr/lib/python3/x"]
