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


def test_new_field_with_a_default_keeps_existing_run_ids():
    # What a maintainer does next year: add `optim.label_smoothing = 0.0`. Every finished run keeps its id.
    import dataclasses

    from cxr_bench import config

    cfg = RunConfig.from_dict({"optim": {"lr": 0.01}, "model": {"backbone": "resnet50"}, "seed": 3})
    ext_optim = dataclasses.make_dataclass(
        "OptimConfig", [("label_smoothing", float, dataclasses.field(default=0.0))], bases=(config.OptimConfig,))
    ext_run = dataclasses.make_dataclass(
        "RunConfig", [("optim", ext_optim, dataclasses.field(default_factory=ext_optim))], bases=(RunConfig,))
    grown = ext_run.from_dict(cfg.to_dict())
    assert "label_smoothing" in grown.to_dict()["optim"]
    assert grown.run_id() == cfg.run_id()
    assert RunConfig().run_id() == ext_run().run_id()
    # ...and a run that sets the new field is a different run.
    assert ext_run.from_dict({**cfg.to_dict(), "optim": {**cfg.to_dict()["optim"], "label_smoothing": 0.1}}
                             ).run_id() != cfg.run_id()


def test_identity_lists_only_what_differs_from_defaults():
    cfg = RunConfig.from_dict({"optim": {"lr": 0.01}, "data": {"workers": 7}})
    assert cfg.identity_dict() == {"optim": {"lr": 0.01}}
    full = cfg.identity_dict(full=True)
    assert full["optim"]["lr"] == 0.01 and "workers" not in full["data"] and "epochs" in full["optim"]


@pytest.mark.parametrize("key,value,match", [
    ("optim.lr", float("nan"), r"optim\.lr.*finite"),
    ("optim.lr", 0.0, r"optim\.lr"),
    ("seed", -1, r"'seed'"),
    ("data.val_fraction", 1.5, r"data\.val_fraction"),
    ("optim.epochs", 0, r"optim\.epochs"),
    ("optim.batch_size", -4, r"optim\.batch_size"),
    ("optim.weight_decay", float("inf"), r"optim\.weight_decay"),
    ("data.loader", "fast", r"data\.loader.*auto, gpu, workers"),
    ("eval.ci_level", 95, r"eval\.ci_level"),
    ("device", "tpu", r"'device'"),
    ("data.random_fractions", [0.5, 0.5, 0.5], r"random_fractions"),
])
def test_numeric_and_choice_fields_are_validated_at_load(key, value, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig().replace(**{key: value})
