"""What a sweep checks before any work: nothing here builds a cache, creates a folder or trains a model.

``cxr-bench run`` (and ``--dry-run``) checks, after the suite is expanded and before the first image cache:

- every registry name of every run (:func:`check_registry_names`; numeric fields are checked at load);
- a run that names a CUDA device (``device = "cuda"`` or ``"cuda:N"``) finds that GPU here;
- the run store (``--runs``) and each image cache root (``--cache-dir`` / ``data.cache_dir``) are folders,
  or can be made, on a writable filesystem;
- each data root holds images its metadata lists (none at all is refused; some missing is said once);
- the pretrained weights of every run still to do are on this machine: one list, with the command that
  fetches them. ImageNet checkpoints that may still be downloaded are fetched by the sweep right after
  these checks (:func:`fetch_weights`), so a run never fails for its weights after a cache was built;
- the filesystem of each cache root has room for the caches the sweep will build (:mod:`cxr_bench.data.cache`
  computes what each still needs from one ``stat`` per image);
- no run that is completed, or that has a checkpoint to resume, was computed on other image files.

Stale images. The manifest records the image cache key of the run (it hashes every image's name, byte size
and mtime, see :func:`cxr_bench.data.cache.cache_status`), and each sweep recomputes it, for completed runs
too. A mismatch, with the same metadata files, means the images were written anew since the run. The sweep
refuses, naming both keys, the data root and the two ways out (another ``--runs`` for these images, or
delete the runs to redo them). It neither reuses nor re-runs, because only the user knows which is right:
the key also changes when identical pixels are rewritten (an archive extracted again, a copy without
``cp -p``), and a silent re-run would spend the whole sweep again (weeks of GPU time for the paper profile)
and overwrite complete results, while silent reuse would report numbers computed from other pixels.
A change of the metadata files themselves is a different dataset; a run finds that out on its own
(:func:`cxr_bench.runner.sweep.check_same_data`) and fails alone.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import RunConfig, get_dotted
from ..errors import CacheError, ConfigError, CxrBenchError, ImageError, RunStoreError, WeightsError
from .store import RunStore, Status, verify_artifacts

if TYPE_CHECKING:
    from ..data.release import NIHRelease
    from ..models.weights import MissingWeights
    from .planning import RunSpec
    from .suite import SuiteRun

log = logging.getLogger(__name__)
R = TypeVar("R")  # a run of any kind (RunSpec, SuiteRun)


# ---------------------------------------------------------------------------------------------- names
def check_registry_names(runs: Sequence[SuiteRun], overrides: dict[str, Any] | None = None) -> None:
    """Every registry name of every run (backbone, head, loss, label set, grayscale conversion, split protocol,
    augmentation, optimizer, scheduler, threshold method) exists in its registry (plugins included),
    checked before a cache is built or a run directory made. One error lists every bad value, where it came
    from (``--set`` or the suite file) and the closest known names."""
    from ..data.augment import AUGMENTATIONS
    from ..data.grayscale import CONVERSIONS
    from ..data.labels import LABEL_SETS, get_label_set
    from ..data.splits import PROTOCOLS
    from ..engine.losses import LOSSES
    from ..engine.optim import OPTIMIZERS, SCHEDULERS
    from ..metrics.roc import THRESHOLD_METHODS
    from ..models.backbones import BACKBONES, TIMM_PREFIX
    from ..models.heads import HEADS

    def label_set_ok(name: str) -> bool:
        try:
            get_label_set(name)
        except ConfigError:
            return False
        return True

    def timm_ok(name: str) -> bool:
        import timm

        base = name[len(TIMM_PREFIX):]
        return bool(timm.list_models(base.split(".")[0]))

    checks = {
        "model.backbone": (lambda n: n in BACKBONES or (n.startswith(TIMM_PREFIX) and timm_ok(n)),
                           BACKBONES.names()),
        "model.head": (lambda n: n in HEADS, HEADS.names()),
        "loss.name": (lambda n: n in LOSSES, LOSSES.names()),
        "data.label_set": (label_set_ok, LABEL_SETS.names()),
        "data.grayscale": (lambda n: n in CONVERSIONS, CONVERSIONS.names()),
        **{key: (reg.__contains__, reg.names()) for key, reg in (
            ("data.split", PROTOCOLS), ("data.augment", AUGMENTATIONS), ("optim.optimizer", OPTIMIZERS),
            ("optim.scheduler", SCHEDULERS), ("eval.threshold", THRESHOLD_METHODS))},
    }
    overrides = overrides or {}
    problems = []
    for key, (ok, known) in checks.items():
        for v in sorted({str(get_dotted(r.config, key)) for r in runs}):
            if ok(v):
                continue
            near = difflib.get_close_matches(v, known, n=3, cutoff=0.6)
            where = f"--set {key}={v}" if key in overrides else f"{key} = {v!r} in the suite"
            problems.append(f"{where}: unknown {key.split('.')[-1].replace('_', ' ')} {v!r}"
                            + (f" (did you mean {', '.join(near)}?)" if near else f"; known: {', '.join(known)}"))
    if problems:
        raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------------------------------------- images
def run_image_names(cfg: RunConfig, release: NIHRelease) -> list[str]:
    """:func:`cxr_bench.engine.trainer.run_image_names` (the images of the run's cache), imported when asked:
    the engine imports torch."""
    from ..engine import trainer

    return trainer.run_image_names(cfg, release)


def image_group(cfg: RunConfig) -> tuple:
    """Runs with the same value read the same images at the same pixel settings (same image cache key)."""
    d = cfg.data
    return (d.root, d.split, d.val_fraction, d.split_seed, tuple(d.random_fractions), d.max_train_images,
            d.image_size, d.resize, d.grayscale)


def cache_group(cfg: RunConfig) -> tuple:
    """Runs with the same value read the same image cache: the same images at the same pixel settings
    (:func:`image_group`) under the same cache root (``data.cache_dir``)."""
    return (*image_group(cfg), cfg.data.cache_dir)


def cache_groups(runs: Iterable[R], config: Callable[[R], RunConfig]) -> dict[tuple, list[R]]:
    """The runs that read an image cache (``data.source = "cache"``), grouped by that cache
    (:func:`cache_group`), in first-seen order; ``config`` gives a run's config.

    The engine caches exactly the images a run needs (train, possibly capped, + val + test), so the cache
    key follows the data fields that choose those images as well as the pixel fields.
    """
    groups: dict[tuple, list[R]] = {}
    for run in runs:
        cfg = config(run)
        if cfg.data.source == "cache":
            groups.setdefault(cache_group(cfg), []).append(run)
    return groups


def cache_root(cache_dir: str | None) -> Path:
    """The image cache root a run with ``data.cache_dir = cache_dir`` uses."""
    from ..data.cache import default_cache_root

    return Path(cache_dir).expanduser() if cache_dir else default_cache_root()


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class CacheNeed:
    """One image cache the runs read: its settings, its images, where it lives and what it still needs."""

    root: str  # the cache root (--cache-dir / data.cache_dir)
    image_size: int
    grayscale: str
    resize: str
    n_images: int
    bytes: int  # its size when complete (:func:`cxr_bench.data.cache.estimate_cache_bytes`)
    bytes_needed: int  # what building it still writes (0: complete)
    runs: tuple[str, ...]  # the run ids that read it
    directory: str | None = None  # known once the images were stat-ed (a data root was given)


@dataclass
class SweepCheck:
    """What :func:`check_sweep` found. ``problems`` would each stop the sweep; ``notes`` are worth saying."""

    problems: list[CxrBenchError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    image_keys: dict[str, str] = field(default_factory=dict)  # run id -> key of its images now
    done: set[str] = field(default_factory=set)  # run ids completed with intact files (nothing to do)
    to_fetch: list[MissingWeights] = field(default_factory=list)  # downloadable, downloaded by the sweep
    cache_bytes: dict[str, int] = field(default_factory=dict)  # cache root -> bytes the sweep will write
    caches: list[CacheNeed] = field(default_factory=list)  # every image cache the runs read (data checked)

    def raise_problems(self) -> None:
        """One error for all the problems (of the first problem's type, so the CLI says it in one line)."""
        if not self.problems:
            return
        if len(self.problems) == 1:
            raise self.problems[0]
        raise type(self.problems[0])("; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1)))


def check_sweep(specs: Sequence[RunSpec], store: RunStore, *, data: bool = True) -> SweepCheck:
    """Every check of the module docstring for these runs of one store; reads and stats, writes nothing.

    ``data=False`` leaves out what needs the runs' data (roots, image keys, disk): a dry run planned without
    the ``--data-root`` its profile needs.
    """
    check = SweepCheck()
    configs = {s.run_id: s.config for s in specs}
    cache_roots = sorted({cache_root(c.data.cache_dir) for c in configs.values() if c.data.source == "cache"})
    folders = [folder_problem(store.path, "the run store (--runs)", RunStoreError)]
    folders += [folder_problem(r, "the image cache folder (--cache-dir / data.cache_dir)", CacheError)
                for r in cache_roots]
    check.problems += [p for p in folders if p is not None]
    for s in specs:
        try:
            rd = store.run(s.run_id)
            if rd.completed and not verify_artifacts(rd.path):
                check.done.add(s.run_id)
        except RunStoreError:  # a damaged manifest or a linked folder: the run itself reports and redoes it
            continue
    todo = [s for s in specs if s.run_id not in check.done]
    _check_devices([configs[s.run_id] for s in todo], check)
    _check_weights([configs[s.run_id] for s in todo], check)
    if data:
        releases = _check_data_roots(configs.values(), check)
        _image_keys(specs, configs, releases, store, check)
    return check


def folder_problem(path: str | os.PathLike, what: str, error: type[CxrBenchError]) -> CxrBenchError | None:
    """Why ``path`` cannot be (made into) a folder we write to, or None. Makes nothing."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    where = f"{what} {path}" + (f": {existing}" if existing != path else "")
    if not existing.is_dir():
        return error(f"{where} is a file, not a folder; pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "is on a read-only filesystem" if read_only else "is not writable by this user"
        return error(f"{where} {why}; pass a folder you can write to")
    return None


def _check_devices(configs: Sequence[RunConfig], check: SweepCheck) -> None:
    """A named CUDA device must be visible here: one problem for the sweep instead of a failure per run."""
    wanted = sorted({c.device for c in configs if c.device.startswith("cuda")})
    if not wanted:
        return
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [d for d in wanted if (int(d.split(":")[1]) if ":" in d else 0) >= visible]
    if missing:
        have = "no CUDA GPU is visible" if visible == 0 else f"only {visible} CUDA GPU(s) are visible"
        check.problems.append(ConfigError(
            f"device = {missing[0]!r} (--device / --set device): {have} on this machine (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); run it where the GPU is, or pass "
            "--device cpu or --device auto"))


def _check_weights(configs: Sequence[RunConfig], check: SweepCheck) -> None:
    from ..models.weights import IMAGENET, format_missing_weights, missing_weights, offline_reason

    missing = missing_weights(configs)
    offline = offline_reason()
    check.to_fetch = [m for m in missing if offline is None and m.pretrained == IMAGENET and m.url is not None]
    rest = [m for m in missing if m not in check.to_fetch]
    if rest:
        why = f" (downloads are off ({offline}), so the sweep cannot fetch them itself)" \
            if offline and any(m.pretrained == IMAGENET for m in rest) else ""
        check.problems.append(WeightsError(format_missing_weights(rest) + why))


def fetch_weights(missing: Sequence[MissingWeights]) -> None:
    """Download the ImageNet checkpoints :func:`check_sweep` found missing (before any cache is built)."""
    from ..models.weights import fetch_command, fetch_pretrained

    if not missing:
        return
    command = fetch_command(m.backbone for m in missing)
    log.info("downloading %d pretrained checkpoint(s) before any work: %s", len(missing),
             "; ".join(m.describe() for m in missing))
    for m in missing:
        fetch_pretrained(m.backbone, m.pretrained, command=command)


def _check_data_roots(configs: Any, check: SweepCheck) -> dict[str | None, NIHRelease]:
    """Open each release once and count its listed images on disk; a root with none is a problem."""
    from ..data.release import NIHRelease, is_phantom, phantom_release_root

    releases: dict[str | None, NIHRelease] = {}
    for root in sorted({c.data.root for c in configs}, key=lambda r: (r is not None, r or "")):
        if is_phantom(root) and not (phantom_release_root(str(root)) / "phantom.json").is_file():
            check.notes.append(f"data root {root}: a synthetic phantom release, written to "
                               f"{phantom_release_root(str(root))} when the sweep starts")
            continue
        try:
            release = NIHRelease.open(root)
        except CxrBenchError as e:
            check.problems.append(e)
            continue
        releases[root] = release
        if root is None:
            continue  # the bundled sample: its images ship with the package
        try:
            found = set(release.image_paths())
        except CxrBenchError as e:
            check.problems.append(e)
            continue
        listed = release.metadata["image"]
        n_found = int(listed.isin(list(found)).sum())
        if n_found == 0:
            check.problems.append(ImageError(
                f"data root {root}: none of the {len(listed)} images listed in {release.data_entry_path.name} "
                f"is there (looked in {root}, images/, images_NNN/ and images_NNN/images/); extract the image "
                f"archives there, or check with `cxr-bench data info --data-root {root} --check-images`"))
        elif n_found < len(listed):
            check.notes.append(
                f"data root {root}: {len(listed) - n_found} of the {len(listed)} listed images are missing; the "
                f"runs leave them out (`cxr-bench data info --data-root {root} --check-images` lists them)")
    return releases


def _image_keys(specs: Sequence[RunSpec], configs: dict[str, RunConfig], releases: dict[str | None, NIHRelease],
                store: RunStore, check: SweepCheck) -> None:
    """The image key of every run (one ``stat`` per image and group), the disk the caches still need, and
    the runs whose recorded key is not the current one (stale, see the module docstring)."""
    from ..data.cache import cache_status, check_free_space, estimate_cache_bytes

    groups: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        if configs[s.run_id].data.root in releases:
            groups.setdefault(image_group(configs[s.run_id]), []).append(s)
    to_build: dict[Path, dict[str, int]] = {}  # cache root -> {cache dir: bytes still needed}
    for group in groups.values():
        cfg = configs[group[0].run_id]
        d = cfg.data
        release = releases[d.root]
        try:
            names = run_image_names(cfg, release)
        except CxrBenchError as e:
            check.problems.append(e)
            continue
        by_cache: dict[tuple, list[RunSpec]] = {}  # the group's runs by source and cache (cache_group)
        for s in group:
            by_cache.setdefault((configs[s.run_id].data.source, cache_group(configs[s.run_id])), []).append(s)
        for (source, key), members in sorted(by_cache.items(), key=lambda kv: str(kv[0])):
            cache_dir = key[-1]
            status = cache_status(release, d.image_size, names=names, resize=d.resize, conversion=d.grayscale,
                                  cache_dir=cache_dir)
            check.image_keys.update({s.run_id: status.key for s in members})
            if source == "cache":
                check.caches.append(CacheNeed(
                    str(cache_root(cache_dir)), d.image_size, d.grayscale, d.resize, len(names),
                    estimate_cache_bytes(len(names), d.image_size), 0 if status.complete else status.bytes_needed,
                    tuple(s.run_id for s in members), str(status.dir)))
            if source == "cache" and not status.complete and any(s.run_id not in check.done for s in members):
                to_build.setdefault(cache_root(cache_dir), {})[
                    str(status.dir)] = status.bytes_needed
    for root, dirs in sorted(to_build.items()):
        check.cache_bytes[str(root)] = total = sum(dirs.values())
        try:
            check_free_space(root, total, what=f"the {len(dirs)} image cache(s) this sweep builds")
        except CxrBenchError as e:
            check.problems.append(e)
    stale = _stale_runs(specs, configs, releases, store, check.image_keys)
    if stale:
        check.problems.append(stale)


def _stale_runs(specs: Sequence[RunSpec], configs: dict[str, RunConfig], releases: dict[str | None, NIHRelease],
                store: RunStore, keys: dict[str, str]) -> RunStoreError | None:
    stale: list[tuple[str, str, str, str | None]] = []  # run id, recorded key, current key, data root
    for s in specs:
        current = keys.get(s.run_id)
        try:
            rd = store.run(s.run_id)
            if current is None or not rd.manifest_path.is_file():
                continue
            m = rd.manifest()
        except RunStoreError:  # reported and redone by the run itself
            continue
        recorded = m.get("cache_key")
        if not recorded or recorded == current:
            continue
        root = configs[s.run_id].data.root
        before = (m.get("data") or {}).get("file_hashes")
        if before and before != releases[root].file_hashes():
            continue  # other metadata files: another dataset, which the run itself refuses
        if rd.status is Status.COMPLETED or rd.last_checkpoint.is_file():
            stale.append((s.run_id, str(recorded), current, root))
    if not stale:
        return None
    run_id, old, new, root = stale[0]
    where = root or "the bundled sample"
    others = f" (and {len(stale) - 1} more run(s): {', '.join(r for r, *_ in stale[1:6])}" \
             f"{', ...' if len(stale) > 6 else ''})" if len(stale) > 1 else ""
    return RunStoreError(
        f"the images under {where} changed since run {run_id}{others} in {store.path} used them: its image "
        f"cache key was {old[:16]}..., the images give {new[:16]}... now (same metadata files). Results from "
        f"other pixels are not reused and complete runs are not redone silently: to keep those results, run "
        f"these images into another --runs; to redo the runs on the current images, delete "
        + ", ".join(str(store.path / r) for r, *_ in stale[:6]) + (" ..." if len(stale) > 6 else ""))
