"""One whole run: data, model, resumable training, evaluation, artifacts (:func:`train_run`).

What a run writes into its directory (rank 0 only; the runner adds config/manifest/status/log)::

    history.csv              one row per epoch (HISTORY_COLUMNS)
    checkpoints/last.pt      full training state after the latest epoch (see checkpoint.py)
    checkpoints/best.pt      model weights of the epoch with the best validation mean AUC
    predictions/val.csv      predictions of the best model (image, patient_id, true_*, prob_*)
    predictions/test.csv
    metrics.json             val and test blocks of cxr_bench.metrics.roc.summarize + run facts
    cost.json                inference cost of the evaluated model on this machine (engine/cost.py)

Reproducibility contract: on CPU with a fixed seed, a run killed at any moment and started again with
the same config and directory ends with the same metrics.json and predictions, byte for byte, as a run
that was never interrupted (cost.json, timings of the machine, is the one file that differs). That holds because a run resumes only from an epoch boundary, and each
epoch is a pure function of the checkpointed state: the data order and augmentation depend on
``(seed, epoch)`` only (see seeding.py), and the global torch RNG state (dropout) is restored.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import RunConfig
from ..errors import ConfigError, TrainingError
from ..metrics.predictions import Predictions
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.progress import progress as progress_bar
from .checkpoint import BEST, LAST, load_checkpoint, load_model_state, load_training_state, save_checkpoint
from .cost import COST_FILE
from .distributed import DistContext, EpochTagged, ShardedSampler, init_distributed, resolve_device
from .evaluate import (
    AMP_DTYPES,
    SplitOutput,
    autocast,
    predict,
    split_predictions,
    to_model_input,
)
from .losses import build_loss
from .optim import build_optimizer, build_schedule
from .seeding import capture_rng_state, derive_seed, make_generator, restore_rng_state, scoped_rng
from .tensorboard import RunBoard

log = logging.getLogger(__name__)

__all__ = ["train_run", "evaluate_checkpoint", "evaluate_weights", "build_model", "RunData", "load_run_data",
           "HISTORY_COLUMNS", "history_csv"]

HISTORY_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_mean_auc", "lr", "epoch_seconds",
                   "train_images_per_s")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class RunData:
    """The label set and one dataset per split of a run."""

    labels: tuple[str, ...]
    label_set: str
    train: Any  # CXRDataset
    val: Any
    test: Any


@dataclass(frozen=True)
class RunRows:
    """The metadata rows a run reads: train (capped by ``data.max_train_images``), val and test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def union(self) -> np.ndarray:
        """Every row the run reads, once, in metadata order (what its image cache holds)."""
        return np.unique(np.concatenate([self.train, self.val, self.test]))


def split_rows(cfg: RunConfig, release: Any) -> RunRows:
    """``cfg``'s split of ``release`` before ``data.max_train_images``: val and test are the rows a run of
    ``cfg`` scores, train the whole training split (:func:`run_rows` caps it)."""
    from ..data.splits import make_splits

    d = cfg.data
    splits = make_splits(release, protocol=d.split, val_fraction=d.val_fraction, seed=d.split_seed,
                         random_fractions=cast(tuple[float, float, float], tuple(d.random_fractions)))
    return RunRows(np.asarray(splits.train), np.asarray(splits.val), np.asarray(splits.test))


def run_rows(cfg: RunConfig, release: Any) -> RunRows:
    """The one choice of a run's images: its split of ``release`` (:func:`split_rows`), the training rows
    capped to a subset drawn by the split seed (kept in metadata order). The runner's checks ask this too, so
    they see what the run reads."""
    d = cfg.data
    splits = split_rows(cfg, release)
    train = splits.train
    cap = d.max_train_images
    if cap is not None and cap < len(train):
        if cap < 1:
            raise ConfigError(f"data.max_train_images must be >= 1, got {cap}")
        rng = np.random.default_rng(derive_seed(d.split_seed, "max_train_images"))
        train = np.sort(rng.choice(train, size=cap, replace=False))
    return RunRows(train, splits.val, splits.test)


def _import_plugins(cfg: RunConfig) -> None:
    """The run's plugin modules (``imports``), before any name is looked up: torchrun ranks and submitit
    jobs re-create the run from config.json, so they import them here, not from the suite."""
    from ..plugins import import_plugins

    import_plugins(cfg.imports, f"run {cfg.run_id()}: config key 'imports'")


def load_run_data(cfg: RunConfig, ctx: DistContext | None = None, *, progress: bool | None = None) -> RunData:
    """Open the release, split it, prepare (or reuse) the image cache and build the three datasets.

    The cache holds the union of the rows the run needs, in metadata order, so every run of a suite
    with the same data settings finds the same cache key and builds nothing. Under torchrun, rank 0
    builds it while the other ranks wait, then they open the finished cache.
    """
    from ..data.datasets import CXRDataset
    from ..data.labels import get_label_set
    from ..data.release import NIHRelease

    _import_plugins(cfg)
    ctx = ctx or DistContext()
    d = cfg.data
    release = NIHRelease.open(d.root)
    splits = run_rows(cfg, release)
    for name, rows in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if len(rows) == 0:
            raise ConfigError(f"the {name} split of {release.root} ({d.split}) is empty")
    label_set = get_label_set(d.label_set)

    cache = None
    if d.source == "cache":
        if ctx.is_main:
            cache = run_cache(cfg, release, splits, progress=progress)
        ctx.barrier()
        if not ctx.is_main:
            cache = run_cache(cfg, release, splits, progress=progress)
    elif d.source != "png":
        raise ConfigError(f"data.source must be 'cache' or 'png', got {d.source!r}")

    def dataset(rows: np.ndarray, augment: str) -> Any:
        return CXRDataset(release, rows, label_set, cache=cache, size=d.image_size, conversion=d.grayscale,
                          resize=d.resize, augment=augment, seed=cfg.seed)

    return RunData(labels=tuple(label_set.labels), label_set=label_set.name,
                   train=dataset(splits.train, d.augment), val=dataset(splits.val, "none"),
                   test=dataset(splits.test, "none"))


def run_image_names(cfg: RunConfig, release: Any, rows: RunRows | None = None) -> list[str]:
    """The images a run reads (``rows``, default :func:`run_rows`), once each, in metadata order: what its image
    cache holds."""
    rows = rows if rows is not None else run_rows(cfg, release)
    return list(release.metadata["image"].to_numpy(dtype=object)[rows.union()])


def run_cache(cfg: RunConfig, release: Any, rows: RunRows | None = None, *, progress: bool | None = None) -> Any:
    """The run's image cache (:class:`~cxr_bench.data.cache.ImageCache`) of :func:`run_image_names`, at its
    data settings; found, not rebuilt, once made."""
    from ..data.cache import prepare_cache

    d = cfg.data
    names = run_image_names(cfg, release, rows)
    return prepare_cache(release, d.image_size, names=names, resize=d.resize, conversion=d.grayscale,
                         cache_dir=d.cache_dir, workers=d.workers, progress=progress)


def build_model(cfg: RunConfig, labels: tuple[str, ...]) -> torch.nn.Module:
    """The run's :class:`~cxr_bench.models.CxrModel` (random init draws from torch's global generator)."""
    from ..models import create_model

    m = cfg.model
    return create_model(m.backbone, head=m.head, num_labels=len(labels), channels=cfg.data.channels,
                        pretrained=m.pretrained, head_kwargs=dict(m.head_kwargs),
                        freeze_backbone=m.freeze_backbone, drop_rate=m.drop_rate, targets=labels)


def eval_batch_size(cfg: RunConfig, device: torch.device) -> int:
    """``eval.batch_size``, raised on CUDA to about 256 images of 224 px (12.8 Mpx) per batch.

    Inference keeps no activations for backward, so a GPU takes far larger batches than training; on the
    CPU the configured size is kept (it changes nothing there but memory).
    """
    size = cfg.data.image_size
    if device.type != "cuda":
        return cfg.eval.batch_size
    return max(cfg.eval.batch_size, (256 * 224 * 224) // (size * size))


class InputPath:
    """How batches reach the model in this run: ``data.loader`` resolved (see cxr_bench/data/gpu_loader.py).

    ``kind`` is ``"gpu"`` (the images the run needs resident on its device, batches drawn and augmented
    there) or ``"workers"`` (DataLoader workers, pinned memory and a side-stream prefetch on CUDA). Built
    after the model is on the device, so ``auto`` measures the memory really left.
    """

    def __init__(self, cfg: RunConfig, ctx: DistContext, data: RunData) -> None:
        from ..data.gpu_loader import ResidentImages, choose_loader

        self.cfg = cfg
        self.ctx = ctx
        cache = data.train.cache
        slots = np.concatenate([ds.slots for ds in (data.train, data.val, data.test)])
        nbytes = ResidentImages.needed_bytes(cache, slots) if cache is not None else None
        self.kind, self.reason = choose_loader(cfg.data.loader, ctx.device, nbytes)
        self.resident = ResidentImages(cache, slots, ctx.device) if self.kind == "gpu" else None
        log.info("input path: %s (%s)", self.kind, self.reason)

    def loader(self, dataset: Any, sampler: ShardedSampler, batch_size: int, *, train: bool,
               persistent: bool) -> Any:
        """An iterable of ``(uint8 images, targets, rows)`` batches with ``len()``, like a DataLoader."""
        from ..data.gpu_loader import CudaPrefetcher, DeviceLoader

        # A partial last training batch is dropped (BatchNorm on a batch of 1 fails); never for evaluation.
        drop_last = train and len(sampler) >= batch_size
        if self.resident is not None:
            return DeviceLoader(dataset, self.resident, sampler, batch_size, drop_last=drop_last)
        workers = int(self.cfg.data.workers)
        cuda = self.ctx.device.type == "cuda"
        loader = DataLoader(
            EpochTagged(dataset) if sampler.tag_epoch else dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            pin_memory=cuda,
            drop_last=drop_last,
            # Its own generator (only used for worker base seeds): the global RNG stream stays untouched.
            generator=make_generator(self.cfg.seed, "loader"),
        )
        return CudaPrefetcher(loader, self.ctx.device) if cuda else loader

    def eval_loader(self, dataset: Any, *, persistent: bool) -> Any:
        sampler = ShardedSampler(len(dataset), seed=self.cfg.seed, shuffle=False, rank=self.ctx.rank,
                                 world_size=self.ctx.world_size)
        return self.loader(dataset, sampler, eval_batch_size(self.cfg, self.ctx.device), train=False,
                           persistent=persistent)


# ----------------------------------------------------------------------------------------- history
def history_csv(rows: list[dict[str, Any]]) -> str:
    """``history.csv``'s text: :data:`HISTORY_COLUMNS`, one row per epoch."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def _aucs(y_true: np.ndarray, prob: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean over labels with a defined AUC, per-label AUC with NaN where undefined)."""
    from ..metrics.roc import mean_defined, per_label_auc

    per_label = per_label_auc(y_true, prob)
    return float(mean_defined(per_label)), per_label


# ------------------------------------------------------------------------------------------- state
@dataclass
class _State:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_metric: float = -math.inf
    best_epoch: int | None = None
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _note_cpu_noops(cfg: RunConfig, device: torch.device) -> None:
    if device.type == "cuda":
        return
    o = cfg.optim
    ignored = [name for name, on in (("amp=" + o.amp, o.amp != "none"), ("channels_last", o.channels_last),
                                     ("compile", o.compile)) if on]
    if ignored:
        log.info("running on %s: %s only apply on CUDA and are ignored here", device, ", ".join(ignored))


class Trainer:
    """The state and loop of one run; :func:`train_run` is its public face.

    Building one loads the data, builds model, loss, loaders, optimizer and schedule, and resumes from
    ``run_dir/checkpoints/last.pt`` if present. :meth:`fit` trains the remaining epochs (checkpointing
    after each), :meth:`evaluate` scores the best checkpoint. :meth:`train_epoch` alone (no validation,
    no checkpoint) is what ``benchmarks/bench_train.py`` times as "the harness".
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, ctx: DistContext, progress: bool | None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.ctx = ctx
        self.progress = progress if ctx.is_main else False
        self.ckpt_dir = run_dir / "checkpoints"
        o = cfg.optim
        if o.amp not in AMP_DTYPES:
            raise ConfigError(f"optim.amp must be one of {', '.join(AMP_DTYPES)}, got {o.amp!r}")
        if o.epochs < 1 or o.batch_size < 1 or o.accum_steps < 1:
            raise ConfigError(f"optim.epochs, batch_size and accum_steps must be >= 1, got "
                              f"{o.epochs}, {o.batch_size}, {o.accum_steps}")
        cuda = ctx.device.type == "cuda"
        _note_cpu_noops(cfg, ctx.device)
        self.amp = o.amp if cuda else "none"
        self.channels_last = bool(o.channels_last and cuda)

        self.data = load_run_data(cfg, ctx, progress=self.progress)
        self.labels = self.data.labels

        self.model = build_model(cfg, self.labels)
        # Initialisation above is identical on every rank; from here on each rank draws its own dropout.
        torch.manual_seed(derive_seed(cfg.seed, "torch-train", ctx.rank))
        self.model.to(ctx.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = build_loss(cfg.loss, np.asarray(self.data.train.labels)).to(ctx.device)

        micro = o.max_steps_per_epoch * o.accum_steps if o.max_steps_per_epoch is not None else None
        self.train_sampler = ShardedSampler(
            len(self.data.train), seed=cfg.seed, shuffle=True, rank=ctx.rank, world_size=ctx.world_size,
            drop_last=True, limit=micro * o.batch_size if micro is not None else None, tag_epoch=True,
        )
        if len(self.train_sampler) == 0:
            raise ConfigError(f"{len(self.data.train)} training images cannot be shared by {ctx.world_size} ranks")
        self.inputs = InputPath(cfg, ctx, self.data)
        self.train_loader = self.inputs.loader(self.data.train, self.train_sampler, o.batch_size, train=True,
                                               persistent=True)
        self.val_loader = self.inputs.eval_loader(self.data.val, persistent=True)
        self.micro_per_epoch = len(self.train_loader)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / o.accum_steps)

        self.optimizer = build_optimizer(self.model, o)
        self.schedule = build_schedule(self.optimizer, o, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.amp == "fp16")
        self.state = _State()
        # Val logits of the best epoch, when it ran in this process: the final evaluation reuses them
        # instead of predicting val again (they are the same numbers; a resumed run recomputes them).
        self.best_val: SplitOutput | None = None
        self._resume()

        # Any: DDP and torch.compile wrap the module in types the training loop only calls.
        self.net: Any = self.model
        if ctx.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if cuda else None)
        if o.compile and cuda:
            self.net = cast(Any, torch.compile(self.net))

    # ------------------------------------------------------------------------------- checkpoints
    def _resume(self) -> None:
        path = self.ckpt_dir / LAST
        if not path.is_file():
            return
        ck = load_checkpoint(path, map_location=self.ctx.device)
        if ck.get("run_id") != self.cfg.run_id():
            raise TrainingError(
                f"{path} belongs to run {ck.get('run_id')}, not to this config (run {self.cfg.run_id()}); "
                "use a fresh run directory or delete the checkpoints"
            )
        if "model" in ck:
            load_model_state(self.model, ck["model"], path)
            load_training_state(self.optimizer, self.schedule, ck, path)
            if self.scaler.is_enabled() and ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
        elif not ck.get("finished"):
            raise TrainingError(f"{path} holds no training state and is not finished; delete it to restart")
        rng = ck.get("rng") or []
        if ck.get("world_size") == self.ctx.world_size and self.ctx.rank < len(rng):
            restore_rng_state(rng[self.ctx.rank])
        else:
            log.warning("%s was written by %s rank(s), this job has %d: dropout continues from a fresh "
                        "random stream, so the result will not match an uninterrupted run exactly",
                        path, ck.get("world_size"), self.ctx.world_size)
        self.state = _State(epoch=int(ck["epoch"]), step=int(ck["step"]), best_metric=float(ck["best_metric"]),
                            best_epoch=ck.get("best_epoch"), finished=bool(ck["finished"]),
                            history=list(ck["history"]))
        log.info("resumed %s at epoch %d (step %d)%s", path, self.state.epoch, self.state.step,
                 "; training had finished" if self.state.finished else "")

    def _save_last(self) -> None:
        # Every rank takes part in the gather (a collective); only rank 0 writes.
        rng = self.ctx.all_gather_object(capture_rng_state())
        if not self.ctx.is_main:
            return
        s = self.state
        save_checkpoint(self.ckpt_dir / LAST, {
            "run_id": self.cfg.run_id(), "epoch": s.epoch, "step": s.step, "finished": s.finished,
            "best_metric": s.best_metric, "best_epoch": s.best_epoch, "history": s.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng, "world_size": self.ctx.world_size,
        })

    def _save_best(self) -> None:
        if self.ctx.is_main:
            save_checkpoint(self.ckpt_dir / BEST, {
                "run_id": self.cfg.run_id(), "epoch": self.state.best_epoch,
                "best_metric": self.state.best_metric, "model": self.model.state_dict(),
            })

    # -------------------------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """One epoch; returns (mean train loss, images seen by all ranks, seconds)."""
        o = self.cfg.optim
        dev = self.ctx.device
        self.train_sampler.set_epoch(epoch)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, n_steps, images = 0.0, 0, 0
        group_loss = torch.zeros((), device=dev)
        pending: tuple[torch.Tensor, int, int] | None = None  # (loss, step in epoch, step of run) to check
        t0 = time.perf_counter()
        bar = progress_bar(self.train_loader, desc=f"epoch {epoch + 1}/{o.epochs}", total=self.micro_per_epoch,
                           unit="batch", enabled=self.progress)
        for i, (images_u8, target, _rows) in enumerate(bar):
            group_start = (i // o.accum_steps) * o.accum_steps
            group_size = min(o.accum_steps, self.micro_per_epoch - group_start)
            last_in_group = i - group_start == group_size - 1
            x = to_model_input(images_u8, dev, self.channels_last)
            y = target.to(dev, non_blocking=True)
            # DDP all-reduces gradients only on the last micro-batch of an accumulation group.
            skip_sync = self.ctx.distributed and not last_in_group
            with self.net.no_sync() if skip_sync else contextlib.nullcontext():
                with autocast(dev, self.amp):
                    logits = self.net(x)
                loss = self.criterion(logits.float(), y)
                self.scaler.scale(loss / group_size).backward()
            group_loss += loss.detach() / group_size
            images += x.shape[0]
            if not last_in_group:
                continue
            reduced = self.ctx.all_reduce_sum(group_loss)
            if o.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step_batch()
            # The loss is read one step late: the host queues step k+1 before it waits for step k's loss, so
            # the GPU never idles on that sync. A non-finite loss still stops the run within the epoch, before
            # any checkpoint holds the weights it produced.
            if pending is not None:
                loss_sum += self._settle(*pending, epoch, bar)
            pending = (reduced, n_steps, self.state.step)
            self.state.step += 1
            n_steps += 1
            group_loss = torch.zeros((), device=dev)
        if pending is not None:
            loss_sum += self._settle(*pending, epoch, bar)
        bar.close()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        return loss_sum / max(n_steps, 1), images * self.ctx.world_size, seconds

    def _settle(self, reduced: torch.Tensor, step_in_epoch: int, run_step: int, epoch: int, bar: Any) -> float:
        """The all-reduced loss of one optimizer step, checked (one host sync)."""
        value = reduced.item() / self.ctx.world_size
        if not math.isfinite(value):
            self._non_finite(value, epoch, step_in_epoch, run_step)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        return value

    def _non_finite(self, value: float, epoch: int, step_in_epoch: int, run_step: int) -> None:
        last = (f"the last good checkpoint is {self.ckpt_dir / LAST} (epoch {self.state.epoch}); it is kept and "
                "a new run resumes from it" if self.state.epoch else "no epoch had finished, so there is no checkpoint")
        raise TrainingError(
            f"non-finite training loss ({value}) at epoch {epoch + 1}, step {step_in_epoch + 1} of the epoch "
            f"(optimizer step {run_step + 1} of the run); {last}. Lower optim.lr, set optim.grad_clip "
            "or use amp = 'bf16' instead of 'fp16'"
        )

    def _validate(self) -> tuple[float, float, np.ndarray, SplitOutput]:
        """(val loss, val mean AUC, per-label val AUC, val logits) of the current weights, identical on every rank.

        Scores the plain module (not the DDP wrapper, whose forward may run collectives) after giving every
        rank rank 0's BatchNorm statistics, so each shard is scored by the model that gets checkpointed.
        """
        self.ctx.broadcast_buffers(self.model)
        out = predict(self.model, self.val_loader, self.data.val.rows, self.ctx, amp=self.amp,
                      channels_last=self.channels_last, progress=self.progress, desc="val")
        y = np.asarray(self.data.val.labels, dtype=np.float32)
        with torch.no_grad():
            val_loss = float(self.criterion(torch.from_numpy(out.logits).to(self.ctx.device),
                                            torch.from_numpy(y).to(self.ctx.device)))
        return (val_loss, *_aucs(y, out.probabilities()), out)

    def fit(self) -> None:
        s = self.state
        board = RunBoard(self.run_dir, resume_epoch=s.epoch, enabled=None if self.ctx.is_main and not s.finished
                         else False)
        try:
            self._fit(board)
        finally:
            board.close()

    def _fit(self, board: RunBoard) -> None:
        o = self.cfg.optim
        s = self.state
        while not s.finished and s.epoch < o.epochs:
            epoch = s.epoch
            t0 = time.perf_counter()
            lr = self.schedule.lr
            train_loss, images, train_seconds = self.train_epoch(epoch)
            val_loss, val_auc, val_per_label, val_out = self._validate()
            self.schedule.step_epoch(val_auc)
            s.epoch += 1
            s.history.append({
                "epoch": s.epoch, "step": s.step, "train_loss": train_loss, "val_loss": val_loss,
                "val_mean_auc": val_auc, "lr": lr, "epoch_seconds": round(time.perf_counter() - t0, 3),
                "train_images_per_s": round(images / max(train_seconds, 1e-9), 2),
            })
            improved = math.isfinite(val_auc) and val_auc > s.best_metric
            if improved:
                s.best_metric, s.best_epoch = val_auc, s.epoch
                self._save_best()
                self.best_val = val_out
            patience = o.early_stopping_patience
            if s.epoch >= o.epochs:
                s.finished = True
            elif patience is not None and s.best_epoch is not None and s.epoch - s.best_epoch >= patience:
                log.info("early stopping: no better val mean AUC for %d epoch(s) since epoch %d", patience,
                         s.best_epoch)
                s.finished = True
            # best.pt is written before last.pt: last.pt naming a best epoch implies best.pt holds it.
            self._save_last()
            if self.ctx.is_main:
                atomic_write_text(self.run_dir / "history.csv", history_csv(s.history))
                board.epoch(s.history[-1], dict(zip(self.labels, val_per_label.tolist())))
            log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUC %.4f%s, lr %.3g, %.1f s "
                     "(%.1f img/s)", s.epoch, o.epochs, train_loss, val_loss, val_auc,
                     " (best)" if improved else "", lr, s.history[-1]["epoch_seconds"],
                     s.history[-1]["train_images_per_s"])

    # ------------------------------------------------------------------------------ evaluation
    def _cost(self) -> dict[str, Any]:
        return measure_model_cost(self.model, self.cfg, self.ctx.device, self.ckpt_dir / BEST)

    def evaluate(self) -> dict[str, Any]:
        """Predictions and metrics of the best checkpoint on val and test; written by rank 0."""
        from ..metrics.extended import eval_settings, score_run
        from ..models import model_complexity

        s = self.state
        if self.ctx.is_main:  # also repairs a history.csv older than last.pt (a kill between the two writes)
            atomic_write_text(self.run_dir / "history.csv", history_csv(s.history))
        best_path = self.ckpt_dir / BEST
        if s.best_epoch is not None and best_path.is_file():
            load_model_state(self.model, load_checkpoint(best_path, map_location=self.ctx.device).get("model"),
                             best_path)
            used = s.best_epoch
        else:
            log.warning("no epoch had a defined validation mean AUC; evaluating the last epoch's weights")
            used = s.epoch
            self.ctx.broadcast_buffers(self.model)
        test_loader = self.inputs.eval_loader(self.data.test, persistent=False)
        outs: dict[str, SplitOutput] = {}
        if self.best_val is not None and used == s.best_epoch:
            outs["val"] = self.best_val
        for split, loader, ds in (("val", self.val_loader, self.data.val), ("test", test_loader, self.data.test)):
            if split not in outs:
                outs[split] = predict(self.model, loader, ds.rows, self.ctx, amp=self.amp,
                                      channels_last=self.channels_last, progress=self.progress, desc=split)
        if not self.ctx.is_main:
            return {}
        val = split_predictions(self.data.val, outs["val"], self.labels)
        test = split_predictions(self.data.test, outs["test"], self.labels)
        rates = [r["train_images_per_s"] for r in s.history if r.get("train_images_per_s")]
        m = self.cfg.model
        # By name: built on the meta device and cached per process, so a suite pays for it once per model.
        complexity = model_complexity(m.backbone, self.cfg.data.image_size, head=m.head, num_labels=len(self.labels),
                                      channels=self.cfg.data.channels, head_kwargs=dict(m.head_kwargs),
                                      drop_rate=m.drop_rate)
        metrics = score_run(self.run_dir, test, val, self.data.test.csv, val_metadata=self.data.val.csv,
                            label_set=self.data.label_set, **eval_settings(self.cfg))
        metrics.update({
            "best_epoch": used,
            "epochs_run": s.epoch,
            "steps": s.step,
            # Median over epochs: the first epoch also pays for worker start-up.
            "train_images_per_s": float(np.median(rates)) if rates else None,
            "params": complexity["params"],
            "gmacs": complexity["gmacs"],
            "world_size": self.ctx.world_size,
            "device": str(self.ctx.device),
            # How batches reached the model (data.loader resolved): "gpu" (resident) or "workers".
            "loader": self.inputs.kind,
        })
        atomic_write_json(self.run_dir / "metrics.json", metrics)
        if self.cfg.eval.cost_repeats > 0:  # a measurement of this machine: beside metrics.json, which stays reproducible
            atomic_write_json(self.run_dir / COST_FILE, self._cost())
        return metrics


def measure_model_cost(model: torch.nn.Module, cfg: RunConfig, device: torch.device,
                       weights_file: Path) -> dict[str, Any]:
    """A run's ``cost.json``: inference cost of the evaluated weights (engine/cost.py) and the size of the
    file they came from (``best.pt``, or an outside model's weights file)."""
    from .cost import CostSettings, measure_cost

    e = cfg.eval
    # A CxrModel takes a gray (B, 1, H, W) batch whatever its stem, so one input channel.
    cost = measure_cost(model, cfg.data.image_size, in_chans=1, device=device,
                        settings=CostSettings(repeats=e.cost_repeats, batch=e.cost_batch, budget_s=e.cost_budget_s),
                        seed=cfg.seed)
    cost["checkpoint_mb"] = weights_file.stat().st_size / 2**20 if weights_file.is_file() else None
    return cost


def train_run(cfg: RunConfig, run_dir: str | Path, *, progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) and evaluate one run in ``run_dir``; returns the metrics dict (``{}`` on ranks > 0).

    Works unchanged under ``torchrun``: every rank calls it, rank 0 writes the files. The caller's
    global torch RNG state is restored on return (see seeding.py).
    """
    run_dir = Path(run_dir)
    _import_plugins(cfg)
    ctx = init_distributed(cfg.device)
    benchmark = torch.backends.cudnn.benchmark
    try:
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        # Shapes are fixed within a run, so cuDNN's autotuner pays for itself after a few steps (CUDA runs
        # are not bitwise reproducible anyway: see tests/cuda/test_cuda.py for the tolerances).
        torch.backends.cudnn.benchmark = benchmark or ctx.device.type == "cuda"
        with scoped_rng(cfg.seed, "torch-global"):
            trainer = Trainer(cfg, run_dir, ctx, progress)
            trainer.fit()
            return trainer.evaluate()
    finally:
        torch.backends.cudnn.benchmark = benchmark
        ctx.shutdown()


def evaluate_checkpoint(cfg: RunConfig, checkpoint: str | Path, *, splits: tuple[str, ...] = ("val", "test"),
                        progress: bool | None = None) -> dict[str, Predictions]:
    """Predictions of a saved model (``best.pt`` or ``last.pt``) on ``splits``, in one process.

    The same data, model construction and prediction path as :func:`train_run`, without training: for
    re-scoring a finished run, localization, or checking that a distributed evaluation was exact.
    """
    _import_plugins(cfg)
    ctx = DistContext(device=resolve_device(cfg.device))
    data = load_run_data(cfg, ctx, progress=progress)
    with scoped_rng(cfg.seed, "torch-global"):  # random init is overwritten, but must not touch the caller
        model = build_model(cfg, data.labels)
    load_model_state(model, load_checkpoint(checkpoint, map_location=ctx.device).get("model"), checkpoint)
    return _predict_splits(cfg, ctx, data, model, splits, progress)[0]


def _predict_splits(cfg: RunConfig, ctx: DistContext, data: RunData, model: torch.nn.Module,
                    splits: tuple[str, ...], progress: bool | None) -> tuple[dict[str, Predictions], InputPath]:
    """One process's predictions of ``model`` on ``splits``, with the run's device, AMP and channels_last."""
    cuda = ctx.device.type == "cuda"
    _note_cpu_noops(cfg, ctx.device)
    amp = cfg.optim.amp if cuda else "none"
    channels_last = bool(cfg.optim.channels_last and cuda)
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    inputs = InputPath(cfg, ctx, data)
    out: dict[str, Predictions] = {}
    for split in splits:
        ds = getattr(data, split, None)
        if ds is None or split not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {split!r}; use train, val or test")
        loader = inputs.eval_loader(ds, persistent=False)
        res = predict(model, loader, ds.rows, ctx, amp=amp, channels_last=channels_last, progress=progress,
                      desc=split)
        out[split] = split_predictions(ds, res, data.labels)
    return out, inputs


def evaluate_weights(cfg: RunConfig, weights: str | Path, run_dir: str | Path, *,
                     progress: bool | None = None) -> dict[str, Any]:
    """Score a model trained elsewhere: build ``cfg``'s model, load ``weights`` (a whole model's state dict:
    :func:`cxr_bench.models.model_weights.load_model_weights`), predict val and test, and write
    ``predictions/`` and ``metrics.json`` into ``run_dir`` exactly as a trained run's evaluation does (the same
    data, prediction path and :func:`~cxr_bench.metrics.extended.split_metrics`). Returns the metrics."""
    from ..metrics.extended import eval_settings, score_run
    from ..models import model_complexity
    from ..models.model_weights import load_model_weights

    run_dir = Path(run_dir)
    _import_plugins(cfg)
    ctx = DistContext(device=resolve_device(cfg.device))
    data = load_run_data(cfg, ctx, progress=progress)
    with scoped_rng(cfg.seed, "torch-global"):  # random init is overwritten, but must not touch the caller
        model = build_model(cfg, data.labels)
    info = load_model_weights(cast(Any, model), weights)
    preds, inputs = _predict_splits(cfg, ctx, data, model, ("val", "test"), progress)
    metrics = score_run(run_dir, preds["test"], preds["val"], data.test.csv, val_metadata=data.val.csv,
                        label_set=data.label_set, **eval_settings(cfg))
    m = cfg.model
    complexity = model_complexity(m.backbone, cfg.data.image_size, head=m.head, num_labels=len(data.labels),
                                  channels=cfg.data.channels, head_kwargs=dict(m.head_kwargs), drop_rate=m.drop_rate)
    metrics.update({"params": complexity["params"], "gmacs": complexity["gmacs"], "world_size": 1,
                    "device": str(ctx.device), "loader": inputs.kind, "weights": info})
    atomic_write_json(run_dir / "metrics.json", metrics)
    if cfg.eval.cost_repeats > 0:  # what the outside model costs, measured like a trained run's
        atomic_write_json(run_dir / COST_FILE, measure_model_cost(model, cfg, ctx.device, Path(weights)))
    return metrics
