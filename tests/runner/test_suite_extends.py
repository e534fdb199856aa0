"""``[suite] extends``: a ten-line file puts a model of one's own into a shipped suite's protocol, beside its
runs, without changing (or re-running) any of them; and ``--set`` can no longer collapse a block's grid.

The README's example (a backbone and a suite file, plus the GeM head of the section before it) is read from
README.md itself, so the test runs exactly what a reader copies.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_bench.config import RunConfig
from cxr_bench.errors import ConfigError
from cxr_bench.models.backbones import BACKBONES
from cxr_bench.models.heads import HEADS
from cxr_bench.runner.store import RunStore, Status, artifact_record
from cxr_bench.runner.suite import load_suite
from cxr_bench.utils.io import atomic_write_json

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_block(first_line: str) -> str:
    """The fenced code block of README.md whose first line is ``first_line``."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"README.md has no code block starting with {first_line!r}")


def _forget() -> None:
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]
    HEADS._entries.pop("gem", None)  # the registries have no public removal: a test cleans up after itself
    BACKBONES._entries.pop("small_cnn", None)


@pytest.fixture
def readme_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "plugins"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "cxr_plugins.py").write_text(_readme_block("# mypkg/cxr_plugins.py"))
    (root / "mypkg" / "cxr_backbones.py").write_text(_readme_block("# mypkg/cxr_backbones.py"))
    monkeypatch.syspath_prepend(str(root))
    _forget()
    path = tmp_path / "mine.toml"
    path.write_text(_readme_block("# mine.toml"))
    yield path
    _forget()


def test_readme_suite_is_short_and_adds_only_its_block(readme_suite: Path):
    text = readme_suite.read_text()
    assert len([line for line in text.splitlines() if line.strip() and not line.startswith("#")]) <= 10
    parent, child = load_suite("wang2017"), load_suite(readme_suite)
    assert child.name == parent.name == "wang2017"  # one store folder: the parent's runs are found there
    assert [b.name for b in child.blocks] == [b.name for b in parent.blocks] + ["mine"]
    for profile, n_seeds in (("sample", 1), ("paper", 5)):
        old = {r.run_id: r for r in parent.expand(profile)}
        new = {r.run_id: r for r in child.expand(profile)}
        assert set(old) <= set(new)
        for run_id, run in old.items():  # the same configs, blocks and pairs: nothing of the parent changes
            assert new[run_id].config.to_dict() == {**run.config.to_dict(), "imports": new[run_id].config.imports}
            assert new[run_id].blocks == run.blocks and new[run_id].pairs == run.pairs
        added = [new[i] for i in set(new) - set(old)]
        assert len(added) == n_seeds and all(r.blocks == ["mine"] for r in added)
        cfg = added[0].config
        assert (cfg.model.backbone, cfg.model.head, cfg.data.label_set) == ("small_cnn", "gem", "chestxray14")
        # The profile's settings reach the new block: the sample profile's 64 px, the paper profile's 1024 px
        # (and, for paper, the file's own weights instead of ImageNet's).
        assert cfg.data.image_size == (64 if profile == "sample" else 1024)
        assert cfg.model.pretrained == (None if profile == "sample" else "/data/weights/small_cnn.pt")


def test_readme_model_builds_and_runs(readme_suite: Path):
    import torch

    from cxr_bench.models import create_model

    load_suite(readme_suite)  # imports the plugins
    model = create_model("small_cnn", head="gem", num_labels=14).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 64, 64)).shape == (2, 14)
        assert model.features(torch.rand(1, 1, 64, 64)).shape == (1, 128, 4, 4)


def _complete(store: RunStore, run: object) -> None:
    """A finished run as the runner leaves it (config, metrics, predictions, completed manifest with the
    artifacts record); its numbers do not matter here, only that the sweep recognises it as done."""
    rd = store.run(run.run_id)  # type: ignore[attr-defined]
    atomic_write_json(rd.config_path, run.config.to_dict())  # type: ignore[attr-defined]
    atomic_write_json(rd.metrics_path, {"test": {"mean_auc": 0.5}})
    (rd.path / "predictions").mkdir()
    (rd.path / "predictions" / "test.csv").write_text("image,patient_id\n")
    atomic_write_json(rd.manifest_path, {"run_id": rd.run_id, "status": Status.COMPLETED,
                                         "artifacts": artifact_record(rd.path)})


def test_extending_suite_runs_only_its_block_in_the_parents_store(readme_suite: Path, tmp_path: Path):
    """With every wang2017 sample run finished in the store, the extended suite has exactly one run to do."""
    from cxr_bench.runner.dryrun import make_dry_run
    from cxr_bench.runner.planning import plan_specs, plan_sweep
    from cxr_bench.runner.precheck import check_sweep

    out = tmp_path / "runs"
    store = RunStore(out, "wang2017")
    for run in load_suite("wang2017").expand("sample"):
        _complete(store, run)
    plan = plan_sweep(readme_suite, dry_run=True)
    assert plan.profile == "sample" and plan.total == 18
    check = check_sweep(plan_specs(plan.suite, plan.runs, plan.profile, out), store, data=False)
    todo = [r for r in plan.runs if r.run_id not in check.done]
    assert [r.blocks for r in todo] == [["mine"]]
    dry = make_dry_run(plan, store, check)
    assert sum(v == "done" for v in dry.status.values()) == 17
    assert dry.status[todo[0].run_id] != "done"


@pytest.mark.parametrize("extra, needle", [
    ('[base]\n"optim.lr" = 0.5\n', "has no [base]"),
    ('[[block]]\nname = "replication"\nset = { "model.backbone" = "resnet50" }\n', "'replication' is a block of"),
    ('[profiles.laptop.block.x]\nset = { "optim.epochs" = 1 }\n', "has no profile 'laptop'"),
    ('[profiles.sample.block.chexnet]\nset = { "optim.epochs" = 1 }\n', "'chexnet' is not a block of this file"),
    ('[profiles.sample]\nset = { "optim.epochs" = 1 }\n', "[profiles.sample]"),
])
def test_an_extending_suite_cannot_change_the_parents_runs(tmp_path: Path, extra: str, needle: str):
    path = tmp_path / "bad.toml"
    path.write_text('[suite]\nextends = "wang2017"\n\n[[block]]\nname = "x"\nset = { "model.backbone" = "resnet50" }\n'
                    + extra)
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    assert needle in str(e.value) and str(path) in str(e.value)


def test_extends_a_file_by_relative_path_and_refuses_loops(tmp_path: Path):
    (tmp_path / "a.toml").write_text('[suite]\nname = "a"\n[[block]]\nname = "one"\n'
                                     'grid = { "model.head" = ["gap", "wang2017"] }\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.toml").write_text('[suite]\nextends = "../a.toml"\n[[block]]\nname = "two"\n'
                                             'set = { "model.backbone" = "resnet50" }\n')
    suite = load_suite(tmp_path / "sub" / "b.toml")
    assert suite.name == "a" and [b.name for b in suite.blocks] == ["one", "two"]
    assert len(suite.expand()) == 3
    (tmp_path / "loop.toml").write_text('[suite]\nextends = "loop.toml"\n[[block]]\nname = "z"\n')
    with pytest.raises(ConfigError, match="in a loop"):
        load_suite(tmp_path / "loop.toml")


def test_set_on_a_key_a_block_varies_is_refused_naming_the_block(capsys):
    from cxr_bench.cli import main

    with pytest.raises(ConfigError) as e:
        load_suite("wang2017").expand("sample", {"model.backbone": "timm:resnet18"})
    msg = str(e.value)
    assert "block 'replication'" in msg and 'extends = "wang2017"' in msg and "[[block]]" in msg
    # a key no block varies is still a plain override
    runs = load_suite("wang2017").expand("sample", {"optim.lr": 0.002})
    assert {r.config.optim.lr for r in runs} == {0.002}
    assert RunConfig.from_dict(runs[0].config.to_dict()).optim.lr == 0.002
    assert main(["run", "--suite", "wang2017", "--dry-run", "--set", "model.backbone=timm:resnet18",
                 "--set", "optim.lr=0.002"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--set model.backbone=timm:resnet18: block 'replication'" in err
