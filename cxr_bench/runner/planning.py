"""A suite expanded for one invocation of ``cxr-bench run``: the profile, the runs, each run's spec, the plan file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data.release import PHANTOM_PREFIX
from ..data.sample_note import SampleFacts, sample_note_lines
from ..errors import ConfigError
from ..utils.clock import utc_now
from ..utils.io import atomic_write_json
from .precheck import check_registry_names
from .store import RunStore
from .suite import Suite, SuiteRun


def sample_banner(profile: str | None, runs: Sequence[SuiteRun]) -> str:
    """The bundled-sample message (:func:`~cxr_bench.data.sample_note.sample_note_lines`, without its middle
    line: the console's budget) for a sweep, from the planned runs: their profile, image sizes, weights, step
    caps and whether a phantom sanity run is among them."""
    real = [r.config for r in runs if r.config.data.root is None]
    caps = [c.optim.epochs * c.optim.max_steps_per_epoch for c in real if c.optim.max_steps_per_epoch]
    facts = SampleFacts(
        n_runs=len(real), profiles=(profile or "default",), image_sizes=tuple(c.data.image_size for c in real),
        pretrained=tuple(c.model.pretrained or "none" for c in real),
        steps=tuple(caps) if len(caps) == len(real) else (), steps_capped=True,
        epochs=tuple(c.optim.epochs for c in real),
        sanity=any((r.config.data.root or "").startswith(PHANTOM_PREFIX) for r in runs))
    return "\n".join(sample_note_lines(facts, why=False))


@dataclass
class RunSpec:
    """Everything a process needs to execute one run; small and picklable (sent to submitit jobs)."""

    store_root: str
    suite: str
    run_id: str
    config: RunConfig
    suite_record: dict[str, Any]
    nproc: int = 1
    launcher: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    data: dict[str, Any] | None = None  # data_record of the run's root, taken by the sweep; None: at the run

    @property
    def name(self) -> str:
        return self.config.name or self.run_id


def plan_specs(suite: Suite, runs: Sequence[SuiteRun], profile: str | None, out: str | os.PathLike,
               *, nproc: int = 1, launcher: str = "local") -> list[RunSpec]:
    store = RunStore(out, suite.name)
    return [RunSpec(str(store.root), suite.name, r.run_id, r.config, r.suite_record(suite, profile),
                    nproc=nproc, launcher={"kind": launcher}) for r in runs]


def write_plan(suite: Suite, runs: Sequence[SuiteRun], profile: str | None, store: RunStore) -> Path:
    """``plan-<profile>.json``: the expanded suite, with every run's blocks and ablation pairs in one file
    (what a report needs to pair runs without reading every manifest)."""
    path = store.plan_path(profile)
    atomic_write_json(path, {
        "suite": suite.name, "file": str(suite.path), "file_sha256": suite.sha256, "profile": profile,
        "written_at": utc_now(),
        "blocks": [{"name": b.name, "description": b.description, "grid": b.grid, "reference": b.reference}
                   for b in suite.blocks],
        "runs": [{"run_id": r.run_id, "name": r.name, **r.suite_record(suite, profile)} for r in runs],
    })
    return path



@dataclass
class SweepPlan:
    """A suite expanded for one invocation: the profile chosen, the runs selected, what to tell the user."""

    suite: Suite
    profile: str | None
    runs: list[SuiteRun]
    total: int  # runs in the suite before --only
    banner: str | None  # set when running on the bundled sample
    without_data: bool = False  # a dry run of a profile that needs --data-root, planned without one


def plan_sweep(suite_name: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
               profile: str | None = None, overrides: dict[str, Any] | None = None,
               only: Sequence[str] = (), seeds: int | None = None, dry_run: bool = False) -> SweepPlan:
    """Load and expand a suite the way ``cxr-bench run`` does.

    No ``data_root``: the suite's sample profile on the bundled real sample (with a banner saying so).
    With one: the suite's full profile (``paper`` for wang2017). ``only`` keeps the runs whose id, name,
    backbone or block matches one of the fnmatch patterns.
    """
    from .suite import load_suite

    suite = load_suite(suite_name if isinstance(suite_name, str) else Path(suite_name))
    profile = profile if profile is not None else suite.default_profile(str(data_root) if data_root else None)
    prof = suite.check_profile(profile)
    overrides = dict(overrides or {})
    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--data-root {root} is not a directory (the folder holding Data_Entry_2017*.csv "
                              "and the images)")
        overrides["data.root"] = str(root.resolve())
    elif prof is not None and prof.needs_data_root and not dry_run:  # a dry run may plan without the data
        raise ConfigError(f"profile {profile!r} of suite {suite.name!r} runs on the full NIH release: pass "
                          f"--data-root DIR (or use --profile {suite.sample_profile or '<a sample profile>'})")
    runs = suite.expand(profile, overrides, seeds=seeds)
    check_registry_names(runs, overrides)
    total = len(runs)
    if only:
        runs = [r for r in runs if r.matches(only)]
        if not runs:
            raise ConfigError(f"--only {' '.join(only)} matches none of the {total} runs of {suite.name} "
                              "(patterns match run id, name, backbone or block; see --dry-run)")
    without_data = data_root is None and prof is not None and prof.needs_data_root
    # The bundled sample, possibly beside the sanity block's synthetic phantom release, but no real data.
    roots = {r.config.data.root for r in runs}
    is_sample = None in roots and all(r is None or r.startswith(PHANTOM_PREFIX) for r in roots) and not without_data
    banner = sample_banner(profile, runs) if is_sample else None
    return SweepPlan(suite, profile, runs, total, banner, without_data)
