"""Suites are data: a TOML file that expands into a list of fully resolved runs.

A suite file has a base config, blocks of runs (each a grid of axes expanded as a product) and profiles
(how the same experiment is sized for a GPU cluster or for a laptop). Everything is checked when the file
is loaded, so a typo fails before the first hour of training rather than after it::

    [suite]
    name = "mysuite"                       # default: the file name
    description = "..."
    run_name = "{model.backbone}-{data.label_set}"   # display name template (str.format on the config)
    sample_profile = "sample"              # profile used with no --data-root (bundled sample)
    full_profile = "paper"                 # profile used with --data-root

    [base]                                 # a partial RunConfig (tables or "dotted.keys")
    "optim.optimizer" = "sgd"

    [[block]]
    name = "ablation-grayscale"
    set = { "model.backbone" = "mobilenet_v1" }
    grid = { "data.grayscale" = ["identity", "gamma", "lstar"] }
    reference = { "data.grayscale" = "identity" }   # optional: makes the ablation pairs

    [profiles.sample]
    description = "..."
    needs_data_root = false
    set = { "data.image_size" = 64 }
    [[profiles.sample.when]]               # conditional overrides, in order
    match = { "model.backbone" = ["vgg16"], block = "replication" }
    set = { "optim.max_steps_per_epoch" = 4 }

    [slurm]                                # defaults for --launcher submitit (see docs/running.md)
    timeout_min = 1440

Resolution order for one run: ``base`` < block ``set`` < profile ``set`` < the grid point < the profile's
``when`` rules < command-line ``--set``. A profile may not set a key that is a grid axis (that would
collapse the grid), and every ablation pair must differ from its reference run in exactly its factor once
everything is resolved: otherwise the comparison would measure two things at once, so loading fails.

Runs with identical identity (same :meth:`RunConfig.run_id`) are merged: one run that belongs to every
block that asked for it (the MobileNetV1 baseline is both a replication run and the ablations'
reference).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import functools
import importlib.resources
import itertools
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, deep_merge, set_dotted
from ..errors import ConfigError, RunStoreError
from .store import validate_name
from ..utils.io import sha256_bytes

DEFAULT_RUN_NAME = ("{model.backbone}-{model.head}-{data.label_set}-{data.grayscale}-{data.channels}"
                    "-{loss.name}-s{seed}")
SUITE_PACKAGE = "cxr_bench.suites"

_SUITE_KEYS = {"name", "description", "run_name", "sample_profile", "full_profile"}
_TOP_KEYS = {"suite", "base", "block", "profiles", "slurm"}
_BLOCK_KEYS = {"name", "description", "set", "grid", "reference"}
_PROFILE_KEYS = {"description", "needs_data_root", "set", "when"}
_RULE_KEYS = {"match", "set"}
SLURM_KEYS = {"partition", "timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "nodes",
              "array_parallelism", "extra"}


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Block:
    """A named group of runs: fixed overrides plus grid axes (dotted config key -> values)."""

    name: str
    description: str
    set: dict[str, Any]
    grid: dict[str, list[Any]]
    reference: dict[str, Any]

    def points(self) -> list[dict[str, Any]]:
        """Grid points in file order (the last axis varies fastest)."""
        axes = list(self.grid)
        return [dict(zip(axes, values)) for values in itertools.product(*(self.grid[a] for a in axes))]


@dataclass(frozen=True)
class WhenRule:
    match: dict[str, list[Any]]  # dotted key (or "block") -> accepted values
    set: dict[str, Any]

    def matches(self, flat: Mapping[str, Any], block: str) -> bool:
        for key, accepted in self.match.items():
            value = block if key == "block" else flat.get(key, _MISSING)
            if value not in accepted:
                return False
        return True


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    needs_data_root: bool
    set: dict[str, Any]
    when: tuple[WhenRule, ...]


@dataclass(frozen=True)
class Pair:
    """One ablation comparison: this run differs from ``reference`` in ``factor`` only."""

    block: str
    factor: str
    reference: str  # run id of the reference run
    reference_value: Any
    value: Any

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SuiteRun:
    """One resolved run of a suite: its config, id, the blocks it belongs to and its ablation pairs."""

    config: RunConfig
    blocks: list[str]
    grid: dict[str, dict[str, Any]]  # block -> the grid point of this run in that block
    pairs: list[Pair] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    @property
    def name(self) -> str:
        return self.config.name

    def suite_record(self, suite: Suite, profile: str | None) -> dict[str, Any]:
        """The ``manifest["suite"]`` block (format documented in docs/running.md)."""
        return {
            "name": suite.name,
            "file": str(suite.path),
            "file_sha256": suite.sha256,
            "profile": profile,
            "blocks": list(self.blocks),
            "grid": copy.deepcopy(self.grid),
            "pairs": [p.to_dict() for p in self.pairs],
        }

    def matches(self, patterns: Sequence[str]) -> bool:
        """fnmatch ``patterns`` (any) against the run id, name, backbone and block names."""
        fields = [self.run_id, self.name, self.config.model.backbone, *self.blocks]
        return any(fnmatch.fnmatchcase(f, p) for p in patterns for f in fields)


@dataclass
class Suite:
    name: str
    path: Path
    sha256: str
    description: str
    run_name: str
    sample_profile: str | None
    full_profile: str | None
    base: dict[str, Any]
    blocks: list[Block]
    profiles: dict[str, Profile]
    slurm: dict[str, Any]

    # ------------------------------------------------------------------ profiles
    def default_profile(self, data_root: str | None) -> str | None:
        """``full_profile`` with a data root, ``sample_profile`` without (None if the suite has neither)."""
        return self.full_profile if data_root else self.sample_profile

    def check_profile(self, profile: str | None) -> Profile | None:
        if profile is None:
            return None
        if profile not in self.profiles:
            known = ", ".join(self.profiles) or "(none)"
            raise ConfigError(f"{self.path}: suite {self.name!r} has no profile {profile!r}; known: {known}")
        return self.profiles[profile]

    # ------------------------------------------------------------------ expansion
    def expand(self, profile: str | None = None, overrides: Mapping[str, Any] | None = None,
               ) -> list[SuiteRun]:
        """All runs of the suite under ``profile`` with dotted command-line ``overrides`` on top.

        Identical runs (same run id) are merged across blocks. Raises :class:`ConfigError` naming the
        suite file, block and key for an invalid config or an ablation pair that differs in more than
        its factor.
        """
        prof = self.check_profile(profile)
        overrides = dict(overrides or {})
        runs: dict[str, SuiteRun] = {}
        for block in self.blocks:
            by_point: list[tuple[dict[str, Any], SuiteRun]] = []
            for point in block.points():
                cfg = self._resolve(block, prof, point, overrides)
                run = runs.get(cfg.run_id())
                if run is None:
                    run = runs[cfg.run_id()] = SuiteRun(cfg, [], {})
                if block.name not in run.blocks:
                    run.blocks.append(block.name)
                    run.grid[block.name] = point
                by_point.append((point, run))
            self._add_pairs(block, by_point, profile)
        return list(runs.values())

    def _resolve(self, block: Block, prof: Profile | None, point: dict[str, Any],
                 overrides: Mapping[str, Any]) -> RunConfig:
        where = f"block {block.name!r}" + (f", profile {prof.name!r}" if prof else "")
        d: dict[str, Any] = {}
        layers = [self.base, block.set, prof.set if prof else {}, point]
        for layer in layers:
            d = _apply(d, layer)
        try:
            if prof and prof.when:
                flat = {**_default_flat(), **_flat(d)}
                for rule in prof.when:
                    if rule.matches(flat, block.name):
                        d = _apply(d, rule.set)
            cfg = RunConfig.from_dict(_apply(d, overrides))
        except ConfigError as e:
            raise ConfigError(f"{self.path}: {where}, grid point {point}: {e}") from None
        if not cfg.name:
            try:
                cfg.name = self.run_name.format(**{f.name: getattr(cfg, f.name)
                                                   for f in dataclasses.fields(cfg)})
            except (AttributeError, KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"{self.path}: [suite] run_name {self.run_name!r}: {e}") from None
        return cfg

    def _add_pairs(self, block: Block, by_point: list[tuple[dict[str, Any], SuiteRun]],
                   profile: str | None) -> None:
        if not block.reference:
            return
        index = {_freeze(point): run for point, run in by_point}
        for point, run in by_point:
            differing = [a for a, v in block.reference.items() if point[a] != v]
            if len(differing) != 1:
                continue
            factor = differing[0]
            ref_point = {**point, **block.reference}
            ref = index[_freeze(ref_point)]
            if ref.run_id == run.run_id:  # a --set on this axis made both sides the same run
                continue
            diff = _identity_diff(ref.config, run.config)
            allowed = {factor, *_DEPENDENT.get(factor, ())}
            extra = sorted(k for k in diff if k not in allowed)
            if extra:
                raise ConfigError(
                    f"{self.path}: block {block.name!r}"
                    + (f" under profile {profile!r}" if profile else "")
                    + f": the pair {factor}={point[factor]!r} vs reference {block.reference[factor]!r} also "
                    f"differs in {', '.join(extra)}; a profile or rule changes them for one side only. "
                    "Make both sides of the pair resolve to the same values."
                )
            pair = Pair(block.name, factor, ref.run_id, block.reference[factor], point[factor])
            if pair not in run.pairs:
                run.pairs.append(pair)


# ---------------------------------------------------------------------------------------------- loading
def shipped_suites() -> list[str]:
    """Names of the suites shipped in ``cxr_bench/suites/``."""
    root = importlib.resources.files(SUITE_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a shipped suite by name or any suite file by path; everything is validated here."""
    text, path = _read_suite_text(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_suite(raw, path, sha256_bytes(text.encode()))


def _read_suite_text(name_or_path: str | Path) -> tuple[str, Path]:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file() or len(p.parts) > 1:
        if not p.is_file():
            raise ConfigError(f"suite file {p} does not exist")
        try:
            return p.read_text(encoding="utf-8"), p.resolve()
        except UnicodeDecodeError as e:
            raise ConfigError(f"suite file {p} is not valid UTF-8 (byte {e.start}): save it as UTF-8") from None
    name = str(name_or_path)
    res = importlib.resources.files(SUITE_PACKAGE) / f"{name}.toml"
    if not res.is_file():
        known = ", ".join(shipped_suites()) or "(none)"
        raise ConfigError(f"unknown suite {name!r}; shipped suites: {known}; or pass a path to a .toml file")
    return res.read_text(encoding="utf-8"), Path(str(res))


def parse_suite(raw: dict[str, Any], path: Path, sha256: str = "") -> Suite:
    """Validate a parsed suite file; every error names ``path`` and the offending key."""
    _check_keys(raw, _TOP_KEYS, path, "top level")
    meta = _table(raw.get("suite", {}), path, "[suite]")
    _check_keys(meta, _SUITE_KEYS, path, "[suite]")
    name = meta.get("name", path.stem)
    _check_name(name, path, "[suite] name")
    run_name = _typed(meta.get("run_name", DEFAULT_RUN_NAME), str, path, "[suite] run_name")

    base = _partial(raw.get("base", {}), path, "[base]")

    blocks_raw = raw.get("block", [])
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise ConfigError(f"{path}: a suite needs at least one [[block]] (an array of tables)")
    blocks: list[Block] = []
    for i, b in enumerate(blocks_raw):
        where = f"[[block]] #{i + 1}"
        b = _table(b, path, where)
        _check_keys(b, _BLOCK_KEYS, path, where)
        if "name" not in b:
            raise ConfigError(f"{path}: {where} has no name")
        bname = b["name"]
        _check_name(bname, path, f"{where} name")
        where = f"block {bname!r}"
        if any(x.name == bname for x in blocks):
            raise ConfigError(f"{path}: {where} is defined twice; block names must be unique")
        grid = _partial(b.get("grid", {}), path, f"{where} grid")
        for axis, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {where} grid axis {axis!r} must be a non-empty list, got {values!r}")
            if len({_freeze(v) for v in values}) != len(values):
                raise ConfigError(f"{path}: {where} grid axis {axis!r} lists a value twice: {values!r}")
        bset = _partial(b.get("set", {}), path, f"{where} set")
        both = sorted(set(bset) & set(grid))
        if both:
            raise ConfigError(f"{path}: {where}: {both[0]!r} is both in set and grid; keep one")
        reference = _partial(b.get("reference", {}), path, f"{where} reference")
        for axis, value in reference.items():
            if axis not in grid:
                raise ConfigError(f"{path}: {where} reference key {axis!r} is not a grid axis of the block "
                                  f"(axes: {', '.join(grid) or 'none'})")
            if value not in grid[axis]:
                raise ConfigError(f"{path}: {where} reference {axis} = {value!r} is not one of the axis "
                                  f"values {grid[axis]!r}")
        blocks.append(Block(bname, str(b.get("description", "")), bset, grid, reference))
    all_axes = {a for blk in blocks for a in blk.grid}

    profiles: dict[str, Profile] = {}
    for pname, p in _table(raw.get("profiles", {}), path, "[profiles]").items():
        _check_name(pname, path, "profile name")
        where = f"[profiles.{pname}]"
        p = _table(p, path, where)
        _check_keys(p, _PROFILE_KEYS, path, where)
        pset = _partial(p.get("set", {}), path, f"{where} set")
        _no_axes(pset, all_axes, path, f"{where} set")
        rules = []
        when = p.get("when", [])
        if not isinstance(when, list):
            raise ConfigError(f"{path}: {where} when must be an array of tables ([[profiles.{pname}.when]])")
        for j, r in enumerate(when):
            rwhere = f"{where} when #{j + 1}"
            r = _table(r, path, rwhere)
            _check_keys(r, _RULE_KEYS, path, rwhere)
            match_raw = _table(r.get("match", {}), path, f"{rwhere} match")
            block_match = {"block": match_raw.pop("block")} if "block" in match_raw else {}
            match = {k: (v if isinstance(v, list) else [v])
                     for k, v in {**block_match, **_partial(match_raw, path, f"{rwhere} match")}.items()}
            for blk_name in match.get("block", []):
                if not any(blk.name == blk_name for blk in blocks):
                    raise ConfigError(f"{path}: {rwhere} match block {blk_name!r} is not a block of the suite")
            rset = _partial(r.get("set", {}), path, f"{rwhere} set")
            if not rset:
                raise ConfigError(f"{path}: {rwhere} has no set table")
            _no_axes(rset, all_axes, path, f"{rwhere} set")
            rules.append(WhenRule(match, rset))
        needs = _typed(p.get("needs_data_root", False), bool, path, f"{where} needs_data_root")
        profiles[pname] = Profile(pname, str(p.get("description", "")), needs, pset, tuple(rules))

    sample_profile = meta.get("sample_profile", "sample" if "sample" in profiles else None)
    full_profile = meta.get("full_profile", "paper" if "paper" in profiles else None)
    for key, value in (("sample_profile", sample_profile), ("full_profile", full_profile)):
        if value is not None and value not in profiles:
            raise ConfigError(f"{path}: [suite] {key} = {value!r} is not a profile of the suite "
                              f"(profiles: {', '.join(profiles) or 'none'})")

    slurm = _table(raw.get("slurm", {}), path, "[slurm]")
    _check_keys(slurm, SLURM_KEYS, path, "[slurm]")

    suite = Suite(name, path, sha256, str(meta.get("description", "")), run_name, sample_profile,
                  full_profile, base, blocks, profiles, dict(slurm))
    # Expanding every profile once turns every later surprise (bad value, pair that differs in two
    # factors) into an error at load time that names the file.
    for prof in [None] if not profiles else list(profiles):
        suite.expand(prof)
    return suite


# ---------------------------------------------------------------------------------------------- helpers
_MISSING = object()
# The kwargs of a registry choice belong to the choice: a head ablation may change both.
_DEPENDENT = {"model.head": ("model.head_kwargs",), "loss.name": ("loss.kwargs",)}


def _table(value: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where} must be a table, got {value!r}")
    return dict(value)


def _typed(value: Any, tp: type, path: Path, where: str) -> Any:
    if not isinstance(value, tp):
        raise ConfigError(f"{path}: {where} must be a {tp.__name__}, got {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], known: set[str], path: Path, where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")


def _check_name(name: Any, path: Path, where: str) -> None:
    if not isinstance(name, str):
        raise ConfigError(f"{path}: {where} must be a string, got {name!r}")
    try:
        validate_name(name, where)
    except RunStoreError as e:  # re-raised as a ConfigError that names the suite file
        raise ConfigError(f"{path}: {e}") from None


def _no_axes(table: Mapping[str, Any], axes: set[str], path: Path, where: str) -> None:
    clash = sorted(set(table) & axes)
    if clash:
        raise ConfigError(f"{path}: {where} sets {clash[0]!r}, which is a grid axis; a profile may not "
                          "collapse a grid (change the block's grid instead)")


def _partial(table: Any, path: Path, where: str) -> dict[str, Any]:
    """A partial RunConfig (nested tables and/or quoted dotted keys) as ``{dotted key: value}``.

    Unknown keys are rejected here, with the file and section named; value types are checked when each
    run's config is built.
    """
    table = _table(table, path, where)
    out: dict[str, Any] = {}
    _flatten_into(RunConfig, table, "", out, path, where)
    return out


def _flatten_into(cls: type, table: Mapping[str, Any], prefix: str, out: dict[str, Any], path: Path,
                  where: str) -> None:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in table.items():
        head, _, rest = key.partition(".")
        full = prefix + head
        if head not in fields:
            raise ConfigError(f"{path}: {where}: unknown config key {prefix + key!r}; known keys here: "
                              f"{', '.join(sorted(fields))}")
        tp = hints[head]
        if dataclasses.is_dataclass(tp):
            sub = {rest: value} if rest else value
            if not isinstance(sub, dict):
                raise ConfigError(f"{path}: {where}: {full!r} is a section; give a table or a dotted key")
            _flatten_into(tp, sub, full + ".", out, path, where)
        elif rest:
            # Only a dict-valued field (head_kwargs, loss.kwargs) may be reached by a deeper dotted key.
            if typing.get_origin(tp) is not dict:
                raise ConfigError(f"{path}: {where}: {full!r} is not a section, so {prefix + key!r} is unknown")
            out[prefix + key] = value
        else:
            out[full] = value


def _apply(d: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    for key, value in flat.items():
        if isinstance(value, dict):
            cur = d
            for part in key.split(".")[:-1]:
                cur = cur.setdefault(part, {})
            last = key.split(".")[-1]
            cur[last] = deep_merge(cur.get(last, {}) if isinstance(cur.get(last), dict) else {}, value)
        else:
            set_dotted(d, key, copy.deepcopy(value))
    return d


_SECTIONS = {name for name, tp in typing.get_type_hints(RunConfig).items() if dataclasses.is_dataclass(tp)}


def _flat(d: Mapping[str, Any]) -> dict[str, Any]:
    """A whole config dict (``to_dict()``/``identity_dict()``) as ``{dotted key: value}``; dict-valued
    fields such as ``model.head_kwargs`` stay one value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in _SECTIONS and isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


@functools.lru_cache(maxsize=1)
def _default_flat() -> dict[str, Any]:
    return _flat(RunConfig().to_dict())


def _identity_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted identity keys whose values differ between two configs."""
    fa, fb = _flat(a.identity_dict(full=True)), _flat(b.identity_dict(full=True))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, _MISSING) != fb.get(k, _MISSING))


def _freeze(obj: Any) -> Any:
    if isinstance(obj, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["optim.epochs=2", "data.grayscale=gamma"]`` -> dotted overrides; values are parsed as TOML
    (numbers, booleans, lists, inline tables) and fall back to a plain string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optim.epochs=2")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key] = value
    return _partial(out, Path("--set"), "command line")
