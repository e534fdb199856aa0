import pytest

from cxr_bench.config import RunConfig, deep_merge
from cxr_bench.errors import ConfigError


def test_roundtrip_and_stable_id():
    cfg = RunConfig()
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.run_id() == cfg.run_id()
    assert len(cfg.run_id()) == 12


def test_id_ignores_where_and_how_fast_but_not_what():
    cfg = RunConfig()
    moved = cfg.replace(**{"data.root": "/elsewhere", "data.workers": 8, "data.cache_dir": "/tmp/c",
                           "device": "cuda", "name": "x", "optim.amp": "bf16"})
    assert moved.run_id() == cfg.run_id()
    assert cfg.replace(**{"optim.lr": 0.5}).run_id() != cfg.run_id()
    assert cfg.replace(**{"data.grayscale": "gamma"}).run_id() != cfg.run_id()
    assert cfg.replace(**{"model.head_kwargs": {"r": 10}}).run_id() != cfg.run_id()


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        RunConfig.from_dict({"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match="colour"):
        RunConfig.from_dict({"colour": 1})


@pytest.mark.parametrize(
    "section,key,value",
    [("optim", "epochs", "ten"), ("optim", "epochs", 1.5), ("optim", "epochs", True),
     ("model", "freeze_backbone", 1), ("data", "image_size", None), ("optim", "lr", "0.1")],
)
def test_wrong_types_are_rejected(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        RunConfig.from_dict({section: {key: value}})


def test_coercions():
    cfg = RunConfig.from_dict({"optim": {"lr": 1, "max_steps_per_epoch": None},
                               "data": {"random_fractions": [0.6, 0.2, 0.2]}})
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.data.random_fractions == (0.6, 0.2, 0.2)


def test_deep_merge_merges_nested_tables():
    base = {"model": {"backbone": "a", "head_kwargs": {"r": 10, "pool": "lse"}}}
    over = {"model": {"head_kwargs": {"r": 5}}}
    assert deep_merge(base, over) == {"model": {"backbone": "a", "head_kwargs": {"r": 5, "pool": "lse"}}}
    assert base["model"]["head_kwargs"]["r"] == 10  # inputs untouched
