"""Typed run configuration: resolved once, written whole into each run's directory.

A run is fully described by a :class:`RunConfig`. Suites (TOML) are merged into plain dicts, then turned
into a ``RunConfig`` by :meth:`RunConfig.from_dict`, which rejects unknown keys, wrong types and
out-of-range numbers with a message naming the key.

The run id is a hash of the identity fields **that differ from their defaults**. Fields that only say
*where* or *how fast* (paths, worker counts, precision flags) are never part of it, so moving a run store
or changing ``--workers`` does not orphan finished runs; and because a default-valued field is left out,
adding a new field with a default (say ``optim.label_smoothing = 0.0``) keeps every existing run id. A new
field must therefore default to the behaviour the code had before it existed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .plugins import check_module_name
from .utils.text import describe_char, first_unprintable

# Field metadata flag: the field does not change the numbers a run produces.
NOT_IDENTITY = {"identity": False}


@dataclass
class DataConfig:
    # None means the bundled real sample (cxr_bench/bundled/nih-sample).
    root: str | None = field(default=None, metadata=NOT_IDENTITY)
    label_set: str = "chestxray14"
    # official | random-image | random-patient
    split: str = "official"
    val_fraction: float = 0.1
    split_seed: int = 0
    # Fractions for the random-* protocols (train, val, test); CVPR 2017 used 70/10/20 by image.
    random_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    image_size: int = 224
    resize: str = "lanczos"
    # A name in cxr_bench.data.grayscale's registry, applied when the cache is built.
    grayscale: str = "identity"
    # How a 3-channel backbone sees a 1-channel radiograph: "replicate" (repeat to 3 channels) or
    # "stem" (1-channel first convolution with summed RGB weights).
    channels: str = "replicate"
    augment: str = "flip"  # none | flip | light
    # Cap the training set (deterministic subsample by the split seed); None keeps all.
    max_train_images: int | None = None
    cache_dir: str | None = field(default=None, metadata=NOT_IDENTITY)
    workers: int = field(default=2, metadata=NOT_IDENTITY)
    # "cache" (memory-mapped prepared images) or "png" (decode on the fly, small jobs).
    source: str = field(default="cache", metadata=NOT_IDENTITY)
    # How batches reach the model: "gpu" (the whole uint8 cache resident on the device, batches drawn and
    # augmented there), "workers" (DataLoader workers, pinned memory, prefetch) or "auto" (gpu when the
    # cache fits in the device's free memory). Same batches either way, so not part of the identity.
    loader: str = field(default="auto", metadata=NOT_IDENTITY)


@dataclass
class ModelConfig:
    backbone: str = "mobilenet_v1"
    head: str = "gap"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    # None (random init), a local weights file, or "cache" (a populated timm/torchvision cache).
    pretrained: str | None = None
    freeze_backbone: bool = False
    drop_rate: float = 0.0


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # sgd | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | plateau | none
    warmup_epochs: int = 0
    # Cosine decays to lr * min_lr_ratio; plateau multiplies by plateau_factor after plateau_patience
    # epochs without a better validation mean AUC.
    min_lr_ratio: float = 0.0
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    epochs: int = 10
    batch_size: int = 32
    # Gradient accumulation: effective batch = batch_size * accum_steps (Wang et al.: 80).
    accum_steps: int = 1
    # Cap on optimizer steps per epoch (None: a full pass); lets a CPU profile run in minutes.
    max_steps_per_epoch: int | None = None
    early_stopping_patience: int | None = None
    grad_clip: float | None = None
    amp: str = field(default="none", metadata=NOT_IDENTITY)  # none | bf16 | fp16 (CUDA only)
    channels_last: bool = field(default=False, metadata=NOT_IDENTITY)
    compile: bool = field(default=False, metadata=NOT_IDENTITY)


@dataclass
class LossConfig:
    name: str = "bce"  # bce | wcel | bce_pos_weight
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    bootstrap: int = 1000
    ci_level: float = 0.95
    # How operating thresholds are chosen on the validation set: youden | f1 | sens90
    threshold: str = "youden"
    batch_size: int = field(default=64, metadata=NOT_IDENTITY)
    # Inference cost after evaluation (engine/cost.py): timed batch-1 passes on the CPU (and the run's GPU);
    # 0 skips it. A measurement of the machine, not of the model's training, hence not part of the identity.
    cost_repeats: int = field(default=30, metadata=NOT_IDENTITY)
    cost_batch: int = field(default=8, metadata=NOT_IDENTITY)
    cost_budget_s: float = field(default=30.0, metadata=NOT_IDENTITY)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = field(default="auto", metadata=NOT_IDENTITY)  # auto | cpu | cuda | cuda:N
    # Free-form name shown in tables; the run id, not the name, identifies a run.
    name: str = field(default="", metadata=NOT_IDENTITY)
    # Plugin modules (a suite's ``[suite] imports``) every process imports before it builds the run, so a
    # user's own registered backbone, head or loss exists in torchrun ranks and submitit jobs too.
    imports: list[str] = field(default_factory=list, metadata=NOT_IDENTITY)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        cfg = _from_dict(cls, d, "")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Reject values no run can use (NaN learning rates, negative seeds, fractions outside (0, 1),
        unknown choices), naming the key, before anything is built."""
        for key, (check, expected) in _CHECKS.items():
            value = get_dotted(self, key)
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config key {key!r}: {value!r} is not a finite number; expected {expected}")
            if not check(value):
                raise ConfigError(f"config key {key!r}: bad value {value!r}; expected {expected}")
        for sec in ("data", "model", "optim", "loss", "eval"):
            for f in dataclasses.fields(getattr(self, sec)):
                v = getattr(getattr(self, sec), f.name)
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"config key '{sec}.{f.name}': {v!r} is not a finite number")
        bad = first_unprintable(self.name) if isinstance(self.name, str) else None
        if bad is not None:
            raise ConfigError(f"config key 'name': {self.name!r} holds the control or format character "
                              f"{describe_char(bad)}; a name is one line of visible text")
        if not isinstance(self.imports, list):
            raise ConfigError(f"config key 'imports': expected a list of module names, got {self.imports!r}")
        for module in self.imports:
            check_module_name(module, "config key 'imports'")
        fr = self.data.random_fractions
        if any(not math.isfinite(x) or x < 0 for x in fr) or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(f"config key 'data.random_fractions': {list(fr)} must be three non-negative "
                              "fractions (train, val, test) summing to 1, with train > 0")

    def identity_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The identity fields (see NOT_IDENTITY) whose values differ from their defaults; with
        ``full=True`` every identity field, for comparing two configs factor by factor."""
        return _identity(self, None if full else _defaults(type(self)))  # type: ignore[arg-type]  # functools.cache hides the type

    def run_id(self) -> str:
        """Stable 12-hex-digit id of the resolved config's identity fields."""
        blob = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **overrides: Any) -> RunConfig:
        """Copy with dotted overrides: ``cfg.replace(**{"optim.lr": 0.1})``."""
        d = self.to_dict()
        for key, value in overrides.items():
            set_dotted(d, key, value)
        return RunConfig.from_dict(d)


def _one_of(*choices: str) -> tuple[Any, str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def _positive() -> tuple[Any, str]:
    return (lambda v: v > 0), "a number > 0"


def _at_least(n: int) -> tuple[Any, str]:
    return (lambda v: v >= n), f"an integer >= {n}"


def _fraction() -> tuple[Any, str]:
    return (lambda v: 0 < v < 1), "a fraction strictly between 0 and 1"


def _non_negative() -> tuple[Any, str]:
    return (lambda v: v >= 0), "a number >= 0"


# Load-time range checks: every numeric field and every closed choice, by dotted key. Names a plugin may add
# (backbones, heads, losses, label sets, grayscale modes, split protocols, augmentations, optimizers,
# schedulers, threshold methods) are checked against their registries only, by the run pre-check
# (:func:`cxr_bench.runner.precheck.check_registry_names`), which may import torch; this module must not.
_CHECKS: dict[str, tuple[Any, str]] = {
    "seed": _at_least(0),
    "device": ((lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())),
               "auto, cpu, cuda or cuda:N"),
    "data.val_fraction": _fraction(),
    "data.split_seed": _at_least(0),
    "data.image_size": ((lambda v: 16 <= v <= 4096), "an integer between 16 and 4096"),
    "data.channels": _one_of("replicate", "stem"),
    "data.max_train_images": _at_least(1),
    "data.workers": _at_least(0),
    "data.source": _one_of("cache", "png"),
    "data.loader": _one_of("auto", "gpu", "workers"),
    "model.drop_rate": ((lambda v: 0 <= v < 1), "a probability in [0, 1)"),
    "optim.lr": _positive(),
    "optim.momentum": ((lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "optim.weight_decay": _non_negative(),
    "optim.warmup_epochs": _at_least(0),
    "optim.min_lr_ratio": ((lambda v: 0 <= v <= 1), "a number in [0, 1]"),
    "optim.plateau_factor": _fraction(),
    "optim.plateau_patience": _at_least(0),
    "optim.epochs": _at_least(1),
    "optim.batch_size": _at_least(1),
    "optim.accum_steps": _at_least(1),
    "optim.max_steps_per_epoch": _at_least(1),
    "optim.early_stopping_patience": _at_least(1),
    "optim.grad_clip": _positive(),
    "optim.amp": _one_of("none", "bf16", "fp16"),
    "eval.bootstrap": _at_least(1),
    "eval.ci_level": _fraction(),
    "eval.batch_size": _at_least(1),
    "eval.cost_repeats": _at_least(0),
    "eval.cost_batch": _at_least(1),
    "eval.cost_budget_s": _positive(),
}


_REQUIRED = object()


def get_dotted(obj: Any, key: str, default: Any = _REQUIRED) -> Any:
    """``get_dotted(cfg, "data.image_size")``: the value at a dotted key of a config, a config section or a
    nested dict (a manifest), the one dotted-key getter of the package. Without ``default`` a missing key
    raises :class:`ConfigError`; with it, ``default`` is returned."""
    for part in key.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif not isinstance(obj, dict) and dataclasses.is_dataclass(obj) and hasattr(obj, part):
            obj = getattr(obj, part)
        elif default is _REQUIRED:
            raise ConfigError(f"unknown config key {key!r}")
        else:
            return default
    return obj


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"config key {key!r}: {p!r} is not a section")
    cur[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge; ``over`` wins. Dict-valued fields such as head_kwargs merge too."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _identity(obj: Any, default: Any) -> Any:
    if dataclasses.is_dataclass(obj) and default is None:
        return {f.name: _identity(getattr(obj, f.name), None)
                for f in dataclasses.fields(obj) if f.metadata.get("identity", True)}
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if not f.metadata.get("identity", True):
                continue
            value = _identity(getattr(obj, f.name), getattr(default, f.name))
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                if value:  # a section all at its defaults adds nothing
                    out[f.name] = value
            elif value != _to_plain(getattr(default, f.name)):
                out[f.name] = value
        return out
    return _to_plain(obj)


@functools.cache
def _defaults(cls: type) -> Any:
    return cls()


def unknown_key(prefix: str, key: str, known: typing.Iterable[str]) -> str:
    """``unknown config key 'optim.epoch' (did you mean 'optim.epochs'?)``, else the list of known keys."""
    import difflib

    known = sorted(known)
    near = difflib.get_close_matches(key.partition(".")[0], known, n=2, cutoff=0.6)
    if near:
        return f"unknown config key {prefix + key!r} (did you mean {' or '.join(repr(prefix + n) for n in near)}?)"
    return f"unknown config key {prefix + key!r}; known keys here: {', '.join(known)}"


def _from_dict(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"config section {where or '<root>'!r} must be a table, got {d!r}")
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(unknown_key(where + "." if where else "", unknown[0], names))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        key = f"{where}.{f.name}" if where else f.name
        kwargs[f.name] = _coerce(hints[f.name], d[f.name], key)
    return cls(**kwargs)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving string annotations is slow (tens of ms); suites resolve hundreds of configs.
    return typing.get_type_hints(cls)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)  # type: ignore[arg-type]  # is_dataclass narrows to a class or instance
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {key!r}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    return value
