"""Suites are data: a TOML file that expands into a list of fully resolved runs.

A suite file has a base config, blocks of runs (each a grid of axes expanded as a product) and profiles
(how the same experiment is sized for a GPU cluster or for a laptop). Everything is checked when the file
is loaded, so a typo fails before the first hour of training rather than after it::

    [suite]
    name = "mysuite"                       # default: the file name
    description = "..."
    run_name = "{model.backbone}-{data.label_set}-s{seed}"   # plain field references, optional {optim.lr:g}
    sample_profile = "sample"              # profile used with no --data-root (bundled sample)
    full_profile = "paper"                 # profile used with --data-root
    imports = ["mypkg.models"]             # plugin modules that register components (cxr_bench.plugins)

    [base]                                 # a partial RunConfig (tables or "dotted.keys")
    "optim.optimizer" = "sgd"
    seeds = [0]                            # the list form of `seed`: each seed is its own run

    [[block]]
    name = "ablation-grayscale"
    set = { "model.backbone" = "mobilenet_v1" }
    grid = { "data.grayscale" = ["identity", "gamma", "lstar"] }
    reference = { "data.grayscale" = "identity" }   # optional: makes the ablation pairs

    [profiles.paper]
    description = "..."
    needs_data_root = true
    seeds = [0, 1, 2, 3, 4]
    set = { "data.image_size" = 1024 }
    [profiles.paper.block.chexnet]         # this profile's settings for one block
    set = { "data.image_size" = 224 }
    [[profiles.paper.when]]                # settings for the runs that match (values and/or block)
    match = { "model.backbone" = ["vgg16"] }
    set = { "optim.max_steps_per_epoch" = 4 }

    [slurm]                                # defaults for --launcher submitit (see runner/slurm.py)
    timeout_min = 1440

Where each value of a run comes from (the one statement of this order; docs link here). A key takes its
value from the highest level that sets it, the config's defaults below all:

1. ``[base]``.
2. The profile's ``set`` and the block's ``set``. They are one level: if both give a key, the values must
   be equal, otherwise loading fails naming both. A profile changes one block's settings at level 4.
3. The block's grid point. Nothing at levels 2 and 4 may set a grid axis, so a grid is never collapsed.
4. The profile's settings for this block (``[profiles.P.block.B] set``) and its ``[[profiles.P.when]]``
   rules that match the run (``match`` is tested on levels 1-3 and the block name). They are one level
   too: two of them may not give one key different values.
5. The command line: ``--set KEY=VALUE`` and ``--seeds N``.

So no value is silently replaced by a sibling: a level only overrides the levels below it. ``seeds`` is the
list form of ``seed`` and follows the same order (``[base]``; a profile or a block; a grid axis ``seed``;
``[profiles.P.block.B]``; ``--seeds N`` = seeds 0..N-1, which also replaces a ``seed`` axis); each seed is
its own run, runs that differ only in seed share a :func:`configuration_id`, and ablation pairs are formed
within one seed. ``when`` rules may not choose seeds.

Every ablation pair must differ from its reference run in exactly its factor once everything is resolved:
otherwise the comparison would measure two things at once, so loading fails. Runs with identical identity
(same :meth:`RunConfig.run_id`) are merged: one run belongs to every block that asked for it (the
MobileNetV1 baseline is both a replication run and the ablations' reference).

A bad value is reported with its source: the suite file and the table it came from, or the command-line
flag (``--set optim.lr=nan: config key 'optim.lr': ...``).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import functools
import hashlib
import importlib.resources
import itertools
import json
import re
import string
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, deep_merge, set_dotted, unknown_key
from ..errors import ConfigError, RunStoreError
from ..plugins import check_module_name, import_plugins
from ..utils.io import sha256_bytes
from ..utils.text import describe_char, first_unprintable
from .slurm import SlurmOptions
from .store import validate_name

DEFAULT_RUN_NAME = ("{model.backbone}-{model.head}-{data.label_set}-{data.grayscale}-{data.channels}"
                    "-{loss.name}-s{seed}")
SUITE_PACKAGE = "cxr_bench.suites"
MAX_SEEDS = 1000

_SUITE_KEYS = {"name", "description", "run_name", "sample_profile", "full_profile", "imports"}
_TOP_KEYS = {"suite", "base", "block", "profiles", "slurm"}
_BLOCK_KEYS = {"name", "description", "set", "grid", "reference", "seeds"}
_PROFILE_KEYS = {"description", "needs_data_root", "set", "seeds", "block", "when"}
_PROFILE_BLOCK_KEYS = {"set", "seeds", "skip"}
_RULE_KEYS = {"match", "set"}
# Config fields a suite sets elsewhere than in a partial config: the list form of `seed`, and the plugins.
_NOT_SETTABLE = {"seeds": "seeds = [...] is a key of [base], a block or a profile, not of a set/grid table",
                 "imports": "plugin modules go in [suite] imports"}


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Block:
    """A named group of runs: fixed overrides plus grid axes (dotted config key -> values)."""

    name: str
    description: str
    set: dict[str, Any]
    grid: dict[str, list[Any]]
    reference: dict[str, Any]
    seeds: tuple[int, ...] | None = None

    def points(self) -> list[dict[str, Any]]:
        """Grid points in file order (the last axis varies fastest); seeds not included."""
        return _product(self.grid)


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
class BlockSettings:
    """``[profiles.P.block.B]``: a profile's settings for one block (level 4 of the order)."""

    set: dict[str, Any]
    seeds: tuple[int, ...] | None = None
    skip: bool = False  # ``skip = true``: the block has no runs under this profile


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    needs_data_root: bool
    set: dict[str, Any]
    when: tuple[WhenRule, ...]
    seeds: tuple[int, ...] | None = None
    blocks: dict[str, BlockSettings] = field(default_factory=dict)


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


def configuration_id(cfg: RunConfig) -> str:
    """12 hex digits naming the configuration a run trains: its identity without the seed, so the runs of
    one configuration under several seeds share it (the unit a seed aggregate averages over)."""
    ident = {k: v for k, v in cfg.identity_dict().items() if k != "seed"}
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class SuiteRun:
    """One resolved run of a suite: its config, id, the blocks it belongs to and its ablation pairs."""

    config: RunConfig
    blocks: list[str]
    grid: dict[str, dict[str, Any]]  # block -> the grid point of this run in that block (seed included)
    pairs: list[Pair] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    @property
    def configuration_id(self) -> str:
        return configuration_id(self.config)

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
            "configuration": self.configuration_id,
        }

    def matches(self, patterns: Sequence[str]) -> bool:
        """fnmatch ``patterns`` (any) against the run id, name, backbone and block names."""
        fields = [self.run_id, self.name, self.config.model.backbone, *self.blocks]
        return any(fnmatch.fnmatchcase(f, p) for p in patterns for f in fields)


def varying_factors(runs: Iterable[SuiteRun | RunConfig]) -> list[str]:
    """The dotted identity keys whose value is not the same in every run, in config field order.

    These are the columns that tell the runs of an expansion apart (a dry run shows them); fields that do
    not change the numbers (paths, workers, precision flags, the name) are never listed.
    """
    flats = [_flat((r.config if isinstance(r, SuiteRun) else r).identity_dict(full=True)) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({_freeze(f.get(k, _MISSING)) for f in flats}) > 1]


@dataclass(frozen=True)
class _Layer:
    """Values from one place (a table of the suite file, or a command-line flag), named for errors."""

    source: str
    values: Mapping[str, Any]


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
    base_seeds: tuple[int, ...] | None = None
    imports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._name_parts = _parse_run_name(self.run_name, f"{self.path}: [suite] run_name")

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

    def seeds(self, block: Block, profile: str | None = None) -> tuple[int, ...] | None:
        """The seed list that expands ``block`` under ``profile`` (None: one run per grid point, its seed
        set like any other key), from the highest level that chooses the seed (module docstring)."""
        prof = self.check_profile(profile)
        own = prof.blocks.get(block.name) if prof else None
        if own is not None and (own.seeds is not None or "seed" in own.set):
            return own.seeds
        if "seed" in block.grid:
            return None
        for level in (block.seeds, prof.seeds if prof else None):
            if level is not None:
                return level
        if "seed" in block.set or (prof is not None and "seed" in prof.set):
            return None
        return self.base_seeds

    def describe(self) -> dict[str, Any]:
        """A plain summary (``cxr-bench suites --json``): blocks; per profile the number of runs and the seeds
        they use."""
        profiles = [None] if not self.profiles else list(self.profiles)
        out_profiles = []
        for p in profiles:
            prof = self.profiles.get(p) if p else None
            runs = self.expand(p)
            out_profiles.append({
                "name": p, "description": prof.description if prof else "",
                "needs_data_root": bool(prof and prof.needs_data_root), "runs": len(runs),
                "seeds": sorted({r.config.seed for r in runs}),
            })
        return {
            "name": self.name, "file": str(self.path), "file_sha256": self.sha256,
            "description": self.description, "imports": list(self.imports),
            "sample_profile": self.sample_profile, "full_profile": self.full_profile,
            "blocks": [{"name": b.name, "description": b.description, "axes": list(b.grid),
                        "grid_points": len(b.points()), "reference": dict(b.reference)} for b in self.blocks],
            "profiles": out_profiles,
        }

    # ------------------------------------------------------------------ expansion
    def expand(self, profile: str | None = None, overrides: Mapping[str, Any] | None = None, *,
               seeds: int | None = None) -> list[SuiteRun]:
        """All runs of the suite under ``profile``, with dotted command-line ``overrides`` (``--set``) on
        top and, with ``seeds=N`` (``--seeds N``), seeds 0..N-1 instead of the suite's seed list.

        Identical runs (same run id) are merged across blocks. Raises :class:`ConfigError` naming the source
        of a bad value (suite file and table, or the flag) and any ablation pair that differs in more than
        its factor.
        """
        prof = self.check_profile(profile)
        overrides = dict(overrides or {})
        cli = _cli_layers(overrides, seeds)
        self._refuse_axis_overrides(prof, overrides)
        runs: dict[str, SuiteRun] = {}
        for block in self.blocks:
            if prof is not None and prof.blocks.get(block.name, BlockSettings({})).skip:
                continue
            grid = dict(block.grid)
            if seeds is not None:
                grid["seed"] = list(range(seeds))
            elif "seed" not in overrides:
                block_seeds = self.seeds(block, profile)
                if block_seeds is not None:
                    grid["seed"] = list(block_seeds)
            by_point: list[tuple[dict[str, Any], SuiteRun]] = []
            for point in _product(grid):
                cfg = self._resolve(block, prof, point, cli)
                run = runs.get(cfg.run_id())
                if run is None:
                    run = runs[cfg.run_id()] = SuiteRun(cfg, [], {})
                if block.name not in run.blocks:
                    run.blocks.append(block.name)
                    run.grid[block.name] = point
                by_point.append((point, run))
            self._add_pairs(block, by_point, profile)
        return list(runs.values())

    def _refuse_axis_overrides(self, prof: Profile | None, overrides: Mapping[str, Any]) -> None:
        """A ``--set`` of a key a block varies would make that block's runs one run (and silently drop its
        pairs): refused, naming the block and how to add a run instead."""
        for key, value in overrides.items():
            if key == "seed":  # the seed has its own rules (--seeds N, a seed axis)
                continue
            for block in self.blocks:
                if prof is not None and prof.blocks.get(block.name, BlockSettings({})).skip:
                    continue
                axis = next((a for a in block.grid if a == key or a.startswith(key + ".") or key.startswith(a + ".")),
                            None)
                if axis is not None:
                    raise ConfigError(
                        f"--set {key}={_show(value)}: block {block.name!r} of suite {self.name!r} varies {axis} "
                        f"({', '.join(_show(v) for v in block.grid[axis])}), so this would turn its runs into one; "
                        f"to add a run with your value, write a suite file with extends = \"{self.name}\" and a "
                        "[[block]] of your own (README: 'Your model beside the baselines')")

    def _resolve(self, block: Block, prof: Profile | None, point: dict[str, Any],
                 cli: Sequence[_Layer]) -> RunConfig:
        bwhere = f"block {block.name!r}"
        layers = [_Layer("[base]", self.base)]
        if self.imports:
            layers.append(_Layer("[suite] imports", {"imports": list(self.imports)}))
        if prof:
            layers.append(_Layer(f"[profiles.{prof.name}] set", prof.set))
        layers += [_Layer(f"{bwhere} set", block.set), _Layer(f"{bwhere} grid", point)]
        d, origin = _merge({}, {}, layers)
        rules: list[_Layer] = []
        if prof:
            own = prof.blocks.get(block.name)
            if own is not None and own.set:
                rules.append(_Layer(f"[profiles.{prof.name}.block.{block.name}] set", own.set))
            if prof.when:
                flat = {**_default_flat(), **_flat(d)}
                rules += [_Layer(f"[[profiles.{prof.name}.when]] #{j + 1}", rule.set)
                          for j, rule in enumerate(prof.when) if rule.matches(flat, block.name)]
        for i, a in enumerate(rules):
            for b in rules[i + 1:]:
                clash = _disagree(a.values, b.values)
                if clash:
                    k = clash[0]
                    raise ConfigError(
                        f"{self.path}: {a.source} and {b.source} both apply to a run of {bwhere} (grid point "
                        f"{point}) and disagree on {k!r} ({_leaves(a.values)[k]!r} vs {_leaves(b.values)[k]!r}); "
                        "make them agree or narrow a rule's match")
        d, origin = _merge(d, origin, [*rules, *cli])
        try:
            cfg = RunConfig.from_dict(d)
        except ConfigError as e:
            raise self._blame(e, origin, block, prof, point) from None
        if not cfg.name:
            cfg.name = _render_run_name(self._name_parts, cfg, f"{self.path}: [suite] run_name {self.run_name!r}")
        return cfg

    def _blame(self, e: ConfigError, origin: Mapping[str, str], block: Block, prof: Profile | None,
               point: Mapping[str, Any]) -> ConfigError:
        """``e`` prefixed with where the offending value came from: the flag, or the file and its table."""
        m = re.search(r"config key '([^']+)'", str(e))
        source = _origin_of(m.group(1), origin) if m else None
        if source is not None and source.startswith("--"):
            return ConfigError(f"{source}: {e}")
        run = (f"a run of block {block.name!r}" + (f" under profile {prof.name!r}" if prof else "")
               + (f", grid point {dict(point)}" if point else ""))
        return ConfigError(f"{self.path}: {source}, {run}: {e}" if source else f"{self.path}: {run}: {e}")

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
            ref = index.get(_freeze({**point, **block.reference}))
            # No reference point (--seeds replaced a seed axis the reference named), or a --set on this axis
            # made both sides the same run: no pair.
            if ref is None or ref.run_id == run.run_id:
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
    """Load a shipped suite by name or any suite file by path; everything is validated here (and the
    suite's plugin modules imported, so the names they register are known)."""
    text, path = _read_suite_text(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    raw, sha256 = resolve_extends(raw, path, sha256_bytes(text.encode()))
    return parse_suite(raw, path, sha256)


def _read_suite_text(name_or_path: str | Path) -> tuple[str, Path]:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file() or len(p.parts) > 1:
        if not p.is_file():
            raise ConfigError(f"suite file {p} does not exist")
        try:
            return p.read_text(encoding="utf-8"), p.resolve()
        except UnicodeDecodeError as e:
            raise ConfigError(f"suite file {p} is not valid UTF-8 (byte {e.start}): save it as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"suite file {p} cannot be read: {e.strerror or e}") from None
    name = str(name_or_path)
    res = importlib.resources.files(SUITE_PACKAGE) / f"{name}.toml"
    if not res.is_file():
        known = ", ".join(shipped_suites()) or "(none)"
        raise ConfigError(f"unknown suite {name!r}; shipped suites: {known}; or pass a path to a .toml file")
    return res.read_text(encoding="utf-8"), Path(str(res))


# What a suite that extends another may say in [suite]; everything else is the parent's.
_EXTENDING_SUITE_KEYS = {"extends", "description", "imports"}
_MAX_EXTENDS = 8


def resolve_extends(raw: dict[str, Any], path: Path, sha256: str, _seen: tuple[Path, ...] = ()
                    ) -> tuple[dict[str, Any], str]:
    """A suite file with ``[suite] extends = "wang2017"`` (a shipped suite, or a path relative to the file)
    as one suite: the parent's, plus the file's blocks and its profiles' settings for those blocks.

    The parent's runs keep their configs, ids and store folder (the suite keeps the parent's name), so
    ``cxr-bench run`` finds them completed and runs only the new blocks. Hence the file may not change what
    the parent's runs compute: no ``[base]``, no block of the parent's name, no profile the parent lacks, no
    profile settings for the parent's blocks. Returns the merged table and a sha256 of both files.
    """
    meta = raw.get("suite")
    if not isinstance(meta, dict) or "extends" not in meta:
        return raw, sha256
    where = f"{path}: [suite] extends"
    ref = meta["extends"]
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{where} must be a suite name or a .toml path, got {ref!r}")
    _check_keys(meta, _EXTENDING_SUITE_KEYS, f"{path}: [suite] (a suite that extends {ref!r} keeps its name, "
                "run names and profiles)")
    if len(_seen) >= _MAX_EXTENDS or path in _seen:
        raise ConfigError(f"{where} = {ref!r}: the suites extend each other in a loop")
    target: str | Path = ref
    if ref.endswith(".toml") or "/" in ref or "\\" in ref:
        target = Path(ref) if Path(ref).is_absolute() else path.parent / ref
    text, parent_path = _read_suite_text(target)
    try:
        parent = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{parent_path} (extended by {path}): not valid TOML: {e}") from None
    parent, parent_sha = resolve_extends(parent, parent_path, sha256_bytes(text.encode()), (*_seen, path))
    _check_keys(raw, {"suite", "block", "profiles", "slurm"},
                f"{path}: top level (a suite that extends {ref!r} has no [base]: it would change every run of "
                f"{ref!r}; put your settings in your blocks' set)")
    out = copy.deepcopy(parent)
    pmeta = out["suite"] = _table(out.get("suite", {}), f"{parent_path}: [suite]")
    pmeta.setdefault("name", parent_path.stem)
    if "description" in meta:
        pmeta["description"] = meta["description"]
    own_imports = meta.get("imports", [])
    if not isinstance(own_imports, list):
        raise ConfigError(f"{path}: [suite] imports must be a list of module names")
    pmeta["imports"] = list(dict.fromkeys([*pmeta.get("imports", []), *own_imports]))
    parent_blocks = {b.get("name") for b in out.get("block", []) if isinstance(b, dict)}
    blocks = raw.get("block", [])
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{path}: a suite that extends {ref!r} adds at least one [[block]]")
    own_blocks = set()
    for i, b in enumerate(blocks):
        name = b.get("name") if isinstance(b, dict) else None
        if name in parent_blocks:
            raise ConfigError(f"{path}: [[block]] #{i + 1} {name!r} is a block of {ref!r}; give yours another name "
                              "(a block of the parent cannot be changed, or its finished runs would be redone)")
        own_blocks.add(name)
    out["block"] = [*out.get("block", []), *copy.deepcopy(blocks)]
    pprofiles = out["profiles"] = _table(out.get("profiles", {}), f"{parent_path}: [profiles]")
    for pname, ptable in _table(raw.get("profiles", {}), f"{path}: [profiles]").items():
        pwhere = f"{path}: [profiles.{pname}]"
        if pname not in pprofiles:
            raise ConfigError(f"{pwhere}: {ref!r} has no profile {pname!r} (profiles: {', '.join(pprofiles)}); "
                              "a suite that extends another uses its profiles")
        ptable = _table(ptable, pwhere)
        _check_keys(ptable, {"block"}, f"{pwhere} (only [profiles.{pname}.block.<your block>] settings: the "
                    f"profile's own settings belong to {ref!r})")
        for bname, settings in _table(ptable.get("block", {}), f"{pwhere} block").items():
            if bname not in own_blocks:
                raise ConfigError(f"{path}: [profiles.{pname}.block.{bname}]: {bname!r} is not a block of this file "
                                  f"(yours: {', '.join(sorted(map(str, own_blocks)))}); the blocks of {ref!r} keep "
                                  "their settings")
            prof = pprofiles[pname] = _table(pprofiles[pname], f"{parent_path}: [profiles.{pname}]")
            prof["block"] = {**_table(prof.get("block", {}), f"{parent_path}: [profiles.{pname}.block]"),
                             bname: copy.deepcopy(settings)}
    if "slurm" in raw:
        out["slurm"] = {**_table(out.get("slurm", {}), f"{parent_path}: [slurm]"),
                        **_table(raw["slurm"], f"{path}: [slurm]")}
    return out, sha256_bytes(f"{parent_sha}\n{sha256}".encode())


def parse_suite(raw: dict[str, Any], path: Path, sha256: str = "") -> Suite:
    """Validate a parsed suite file; every error names ``path`` and the offending table and key."""
    _check_keys(raw, _TOP_KEYS, f"{path}: top level")
    meta = _table(raw.get("suite", {}), f"{path}: [suite]")
    _check_keys(meta, _SUITE_KEYS, f"{path}: [suite]")
    name = meta.get("name", path.stem)
    _check_name(name, path, "[suite] name")
    run_name = _typed(meta.get("run_name", DEFAULT_RUN_NAME), str, f"{path}: [suite] run_name")
    _parse_run_name(run_name, f"{path}: [suite] run_name")
    imports = meta.get("imports", [])
    if not isinstance(imports, list):
        raise ConfigError(f"{path}: [suite] imports must be a list of module names, e.g. imports = [\"mypkg.models\"]")
    imports = tuple(check_module_name(m, f"{path}: [suite] imports") for m in imports)
    # Before any config is built: the plugins' backbones, heads and losses must be registered by then.
    import_plugins(imports, f"{path}: [suite] imports", beside=Path(path).resolve().parent)

    base_raw = _table(raw.get("base", {}), f"{path}: [base]")
    base_seeds = _seeds_key(base_raw, f"{path}: [base]")
    base = _partial(base_raw, f"{path}: [base]")

    blocks_raw = raw.get("block", [])
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise ConfigError(f"{path}: a suite needs at least one [[block]] (an array of tables)")
    blocks: list[Block] = []
    for i, b in enumerate(blocks_raw):
        blocks.append(_parse_block(b, i, path, blocks))
    all_axes = {a for blk in blocks for a in blk.grid}

    profiles = {pname: _parse_profile(pname, p, path, blocks, all_axes)
                for pname, p in _table(raw.get("profiles", {}), f"{path}: [profiles]").items()}
    sample_profile = meta.get("sample_profile", "sample" if "sample" in profiles else None)
    full_profile = meta.get("full_profile", "paper" if "paper" in profiles else None)
    for key, value in (("sample_profile", sample_profile), ("full_profile", full_profile)):
        if value is not None and value not in profiles:
            raise ConfigError(f"{path}: [suite] {key} = {value!r} is not a profile of the suite "
                              f"(profiles: {', '.join(profiles) or 'none'})")

    slurm = _table(raw.get("slurm", {}), f"{path}: [slurm]")
    SlurmOptions.resolve({}, slurm, {}, suite_source=f"{path}: [slurm]")  # names and values checked now

    suite = Suite(name, path, sha256, str(meta.get("description", "")), run_name, sample_profile,
                  full_profile, base, blocks, profiles, dict(slurm), base_seeds, imports)
    # Expanding every profile once turns every later surprise (bad value, pair that differs in two
    # factors) into an error at load time that names the file.
    for prof in [None] if not profiles else list(profiles):
        suite.expand(prof)
    return suite


def _parse_block(b: Any, i: int, path: Path, blocks: Sequence[Block]) -> Block:
    """``[[block]]`` number ``i`` (from 0) of the file, after the ``blocks`` before it."""
    where = f"{path}: [[block]] #{i + 1}"
    b = _table(b, where)
    _check_keys(b, _BLOCK_KEYS, where)
    if "name" not in b:
        raise ConfigError(f"{where} has no name")
    bname = b["name"]
    _check_name(bname, path, f"[[block]] #{i + 1} name")
    where = f"{path}: block {bname!r}"
    if any(x.name == bname for x in blocks):
        raise ConfigError(f"{where} is defined twice; block names must be unique")
    grid = _partial(b.get("grid", {}), f"{where} grid")
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} grid axis {axis!r} must be a non-empty list, got {values!r}")
        if len({_freeze(v) for v in values}) != len(values):
            raise ConfigError(f"{where} grid axis {axis!r} lists a value twice: {values!r}")
    bset = _partial(b.get("set", {}), f"{where} set")
    both = sorted(set(bset) & set(grid))
    if both:
        raise ConfigError(f"{where}: {both[0]!r} is both in set and grid; keep one")
    bseeds = _seeds_key(b, where)
    if bseeds is not None and "seed" in grid:
        raise ConfigError(f"{where}: seeds and a grid axis 'seed' both choose the seed; keep one")
    reference = _partial(b.get("reference", {}), f"{where} reference")
    for axis, value in reference.items():
        if axis not in grid:
            raise ConfigError(f"{where} reference key {axis!r} is not a grid axis of the block "
                              f"(axes: {', '.join(grid) or 'none'})")
        if value not in grid[axis]:
            raise ConfigError(f"{where} reference {axis} = {value!r} is not one of the axis "
                              f"values {grid[axis]!r}")
    return Block(bname, str(b.get("description", "")), bset, grid, reference, bseeds)


def _parse_profile(pname: str, p: Any, path: Path, blocks: Sequence[Block], all_axes: set[str]) -> Profile:
    """``[profiles.<pname>]``: its settings, its blocks' settings and its ``when`` rules."""
    by_name = {blk.name: blk for blk in blocks}
    _check_name(pname, path, "profile name")
    where = f"{path}: [profiles.{pname}]"
    p = _table(p, where)
    _check_keys(p, _PROFILE_KEYS, where)
    pseeds = _seeds_key(p, where)
    pset = _partial(p.get("set", {}), f"{where} set")
    _no_axes(pset, all_axes, f"{where} set")
    if pseeds is not None:
        _no_axes({"seed": None}, all_axes, f"{where} seeds")
    own = {bname: _parse_profile_block(pname, bname, t, path, by_name)
           for bname, t in _table(p.get("block", {}), f"{where} block").items()}
    for blk in blocks:  # level 2: the profile's and a block's settings may not disagree
        _agree(pset, pseeds, pname, blk, own.get(blk.name), path)
    when = p.get("when", [])
    if not isinstance(when, list):
        raise ConfigError(f"{where} when must be an array of tables ([[profiles.{pname}.when]])")
    rules = [_parse_rule(pname, j, r, path, by_name, all_axes) for j, r in enumerate(when)]
    needs = _typed(p.get("needs_data_root", False), bool, f"{where} needs_data_root")
    return Profile(pname, str(p.get("description", "")), needs, pset, tuple(rules), pseeds, own)


def _parse_profile_block(pname: str, bname: str, t: Any, path: Path, by_name: Mapping[str, Block]) -> BlockSettings:
    """``[profiles.<pname>.block.<bname>]``: one block's settings under one profile."""
    bwhere = f"{path}: [profiles.{pname}.block.{bname}]"
    if bname not in by_name:
        raise ConfigError(f"{bwhere}: {bname!r} is not a block of the suite (blocks: {', '.join(by_name)})")
    t = _table(t, bwhere)
    _check_keys(t, _PROFILE_BLOCK_KEYS, bwhere)
    oseeds = _seeds_key(t, bwhere)
    oset = _partial(t.get("set", {}), f"{bwhere} set")
    _no_axes(oset, set(by_name[bname].grid), f"{bwhere} set")
    if oseeds is not None:
        _no_axes({"seed": None}, set(by_name[bname].grid), f"{bwhere} seeds")
    if "seed" in oset and oseeds is not None:
        raise ConfigError(f"{bwhere}: seed and seeds both choose the seed; keep one")
    skip = t.get("skip", False)
    if not isinstance(skip, bool):
        raise ConfigError(f"{bwhere}: skip must be true or false, got {skip!r}")
    return BlockSettings(oset, oseeds, skip)


def _parse_rule(pname: str, j: int, r: Any, path: Path, by_name: Mapping[str, Block],
                all_axes: set[str]) -> WhenRule:
    """``[[profiles.<pname>.when]]`` number ``j`` (from 0): a conditional override."""
    rwhere = f"{path}: [[profiles.{pname}.when]] #{j + 1}"
    r = _table(r, rwhere)
    _check_keys(r, _RULE_KEYS, rwhere)
    match_raw = _table(r.get("match", {}), f"{rwhere} match")
    block_match = {"block": match_raw.pop("block")} if "block" in match_raw else {}
    match = {k: (v if isinstance(v, list) else [v])
             for k, v in {**block_match, **_partial(match_raw, f"{rwhere} match")}.items()}
    for blk_name in match.get("block", []):
        if blk_name not in by_name:
            raise ConfigError(f"{rwhere} match block {blk_name!r} is not a block of the suite")
    rset = _partial(r.get("set", {}), f"{rwhere} set")
    if not rset:
        raise ConfigError(f"{rwhere} has no set table")
    if "seed" in rset:
        raise ConfigError(f"{rwhere} set: a when rule may not choose the seed; use seeds = [...] in "
                          f"[profiles.{pname}] or [profiles.{pname}.block.NAME]")
    _no_axes(rset, all_axes, f"{rwhere} set")
    return WhenRule(match, rset)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["optim.epochs=2", "data.grayscale=gamma"]`` -> dotted overrides; values are parsed as TOML
    (numbers, booleans, lists, inline tables) and fall back to a plain string. An error names the flag."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optim.epochs=2")
        if key == "seeds":
            raise ConfigError(f"--set {item}: the number of seeds is --seeds N (seeds 0..N-1)")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out.update(_partial({key: value}, f"--set {item}"))
    return out


# ---------------------------------------------------------------------------------------------- run names
_FIELD_REF = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")
# A plain format spec: [align][sign][0][width][.precision][type], width and precision bounded.
_FORMAT_SPEC = re.compile(r"[<>^]?[+ -]?0?\d{0,2}(\.\d{1,2})?[deEfFgGs%]?")


def _parse_run_name(template: str, where: str) -> tuple[tuple[str, str | None, str], ...]:
    """``run_name`` as (literal text, dotted field or None, format spec) parts.

    Only plain references to config fields are allowed (``{model.backbone}``, ``{seed}``, ``{optim.lr:g}``):
    ``str.format`` on the config objects would let a suite reach attributes and items of any object
    (``{model.__init__.__globals__[os].environ}``) and write them into manifests and reports.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"{where} {template!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    known = {k for k in _default_flat() if k != "name"}
    parts: list[tuple[str, str | None, str]] = []
    for literal, ref, spec, conversion in parsed:
        bad = first_unprintable(literal)
        if bad is not None:
            raise ConfigError(f"{where} {template!r}: holds the control or format character {describe_char(bad)}; "
                              "a name is one line of visible text")
        if ref is None:
            parts.append((literal, None, ""))
            continue
        if conversion:
            raise ConfigError(f"{where} {template!r}: conversions such as !{conversion} are not allowed; use "
                              "plain field references like {model.backbone}")
        if not _FIELD_REF.fullmatch(ref) or ref not in known:
            raise ConfigError(f"{where} {template!r}: {{{ref}}} is not a config field; use plain field "
                              "references like {model.backbone}, {data.label_set} or {seed}")
        if spec and not _FORMAT_SPEC.fullmatch(spec):
            raise ConfigError(f"{where} {template!r}: format spec {spec!r} of {{{ref}}} is not allowed; use a "
                              "simple one like :g, :.0e or :03d")
        parts.append((literal, ref, spec or ""))
    return tuple(parts)


def _render_run_name(parts: Sequence[tuple[str, str | None, str]], cfg: RunConfig, where: str) -> str:
    flat = _flat(cfg.to_dict())
    out = []
    for literal, ref, spec in parts:
        out.append(literal)
        if ref is not None:
            try:
                out.append(format(flat[ref], spec))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: {{{ref}:{spec}}} cannot format {flat[ref]!r}: {e}") from None
    name = "".join(out)
    bad = first_unprintable(name)
    if bad is not None:
        raise ConfigError(f"{where}: the name {name!r} holds the control or format character {describe_char(bad)} "
                          "(from a field's value); a name is one line of visible text")
    return name


# ---------------------------------------------------------------------------------------------- helpers
_MISSING = object()
# The kwargs of a registry choice belong to the choice: a head ablation may change both.
_DEPENDENT = {"model.head": ("model.head_kwargs",), "loss.name": ("loss.kwargs",)}


def _product(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    axes = list(grid)
    return [dict(zip(axes, values)) for values in itertools.product(*(grid[a] for a in axes))]


def _cli_layers(overrides: Mapping[str, Any], seeds: int | None) -> list[_Layer]:
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"--seeds {seeds!r}: expected a whole number of seeds from 1 to {MAX_SEEDS}")
        if "seed" in overrides:
            raise ConfigError(f"--seeds {seeds} and --set seed={overrides['seed']!r} both choose the seed; "
                              "give one of them")
    return [_Layer(f"--set {k}={_show(v)}", {k: v}) for k, v in overrides.items()]


def _show(value: Any) -> str:
    """A value as a user would have typed it after ``--set KEY=``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # nan, inf as TOML writes them
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _merge(d: dict[str, Any], origin: dict[str, str], layers: Iterable[_Layer]
           ) -> tuple[dict[str, Any], dict[str, str]]:
    origin = dict(origin)
    for layer in layers:
        d = _apply(d, layer.values)
        origin.update(dict.fromkeys(layer.values, layer.source))
    return d, origin


def _origin_of(key: str, origin: Mapping[str, str]) -> str | None:
    """The source of ``key`` (or of a key under it, or of the section above it)."""
    if key in origin:
        return origin[key]
    for k, source in reversed(list(origin.items())):
        if k.startswith(key + ".") or key.startswith(k + "."):
            return source
    return None


def _leaves(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys down to the leaves of dict values (``model.head_kwargs.r``), for comparing two tables."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        if isinstance(v, dict) and v:
            out.update(_leaves({f"{k}.{kk}": vv for kk, vv in v.items()}))
        else:
            out[k] = v
    return out


def _disagree(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    la, lb = _leaves(a), _leaves(b)
    return sorted(k for k in la.keys() & lb.keys() if _freeze(la[k]) != _freeze(lb[k]))


def _agree(pset: Mapping[str, Any], pseeds: tuple[int, ...] | None, pname: str, block: Block,
           own: BlockSettings | None, path: Path) -> None:
    """Level 2 of the order: a profile's and a block's settings may not give one key two values, unless the
    profile says which one the block takes (``own``: its ``[profiles.P.block.B]``, level 4)."""
    ps = {**pset, **({"seed": list(pseeds)} if pseeds is not None else {})}
    bs = {**block.set, **({"seed": list(block.seeds)} if block.seeds is not None else {})}
    for d in (ps, bs):  # `seed = 3` and `seeds = [3]` say the same
        if "seed" in d and not isinstance(d["seed"], list):
            d["seed"] = [d["seed"]]
    decided = set(_leaves(own.set)) | ({"seed"} if own.seeds is not None or "seed" in own.set else set()) \
        if own is not None else set()
    clash = [k for k in _disagree(ps, bs) if k not in decided and not any(k.startswith(f"{d}.") for d in decided)]
    if clash:
        k = clash[0]
        raise ConfigError(
            f"{path}: [profiles.{pname}] and block {block.name!r} disagree on {k!r} ({_leaves(ps)[k]!r} vs "
            f"{_leaves(bs)[k]!r}) and neither overrides the other; say which value this block takes under "
            f"this profile in [profiles.{pname}.block.{block.name}] set, or remove one of them")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return dict(value)


def _typed(value: Any, tp: type, where: str) -> Any:
    if not isinstance(value, tp):
        raise ConfigError(f"{where} must be a {tp.__name__}, got {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")


def _check_name(name: Any, path: Path, where: str) -> None:
    if not isinstance(name, str):
        raise ConfigError(f"{path}: {where} must be a string, got {name!r}")
    try:
        validate_name(name, where)
    except RunStoreError as e:  # re-raised as a ConfigError that names the suite file
        raise ConfigError(f"{path}: {e}") from None


def _seeds_key(table: dict[str, Any], where: str) -> tuple[int, ...] | None:
    """Pop and check ``seeds`` from a table: a non-empty list of distinct whole numbers >= 0."""
    if "seeds" not in table:
        return None
    value = table.pop("seeds")
    if "seed" in table:
        raise ConfigError(f"{where}: seed and seeds both choose the seed; keep one")
    if not isinstance(value, list) or not value or len(value) > MAX_SEEDS:
        raise ConfigError(f"{where} seeds must be a list of 1 to {MAX_SEEDS} seeds, e.g. seeds = [0, 1, 2], "
                          f"got {value!r}")
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{where} seeds: {s!r} is not a seed (a whole number >= 0)")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} seeds lists a seed twice: {value!r}")
    return tuple(value)


def _no_axes(table: Mapping[str, Any], axes: set[str], where: str) -> None:
    clash = sorted(set(table) & axes)
    if clash:
        raise ConfigError(f"{where} sets {clash[0]!r}, which is a grid axis; it may not collapse a grid "
                          "(change the block's grid instead)")


def _partial(table: Any, where: str) -> dict[str, Any]:
    """A partial RunConfig (nested tables and/or quoted dotted keys) as ``{dotted key: value}``.

    Unknown keys are rejected here, with ``where`` (file and table, or the flag) named; value types are
    checked when each run's config is built.
    """
    table = _table(table, where)
    out: dict[str, Any] = {}
    _flatten_into(RunConfig, table, "", out, where)
    return out


def _flatten_into(cls: type, table: Mapping[str, Any], prefix: str, out: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in table.items():
        head, _, rest = key.partition(".")
        full = prefix + head
        if not prefix and head in _NOT_SETTABLE:
            raise ConfigError(f"{where}: {key!r}: {_NOT_SETTABLE[head]}")
        if head not in fields:
            raise ConfigError(f"{where}: {unknown_key(prefix, key, fields)}")
        tp = hints[head]
        if dataclasses.is_dataclass(tp):
            sub = {rest: value} if rest else value
            if not isinstance(sub, dict):
                raise ConfigError(f"{where}: {full!r} is a section; give a table or a dotted key")
            _flatten_into(tp, sub, full + ".", out, where)  # type: ignore[arg-type]  # is_dataclass narrows to a class or instance
        elif rest:
            # Only a dict-valued field (head_kwargs, loss.kwargs) may be reached by a deeper dotted key.
            if typing.get_origin(tp) is not dict:
                raise ConfigError(f"{where}: {full!r} is not a section, so {prefix + key!r} is unknown")
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
