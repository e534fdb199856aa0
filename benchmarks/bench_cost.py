"""Cost curve: what the wang2017 ``paper`` profile costs on this machine, and how runtime grows.

Three measured sections, one CSV (``results/cost_curve.csv``, ``cost_curve_cuda.csv`` on a GPU; column
``section``):

- ``paper_profile``: per run of the suite's paper profile (backbone, head, image size, batch, epochs from
  ``cxr_bench/suites/wang2017.toml`` via :mod:`cxr_bench.runner.suite`; split sizes from the bundled full NIH
  metadata), the time per epoch and per run, extrapolated from *measured* per-image train and inference
  times of that backbone at that image size (taken from ``models_<device>.csv`` when it has the setting,
  else measured here). ``paper_profile_total`` sums the runs. All epochs are counted (early stopping can
  only make it shorter); the per-epoch validation pass is included.
- ``image_size``: train step time of one backbone at several image sizes, and ``image_size_fit``: the
  fitted exponent of time ~ size**b (2 would be cost proportional to pixels).
- ``dataset_size``: one epoch through the full harness (:func:`cxr_bench.engine.trainer.train_run`, data
  loading, evaluation and artifacts included) on 256/512/1024 training images of the bundled sample, and
  ``dataset_size_fit``: the exponent of epoch time ~ images**b, and of the whole run's wall time (which has
  a fixed part: start-up, evaluation on the val/test splits, writing the artifacts).

    python benchmarks/bench_cost.py            # full
    python benchmarks/bench_cost.py --quick    # small sizes; a minute or two on a laptop
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxr_bench.bench.args import comma_ints
from cxr_bench.bench.measure import fit_power_law, machine_info, measure_model, resolve_device
from cxr_bench.bench.results import read_results_csv, write_results_csv
from cxr_bench.errors import CxrBenchError

log = logging.getLogger("benchmarks.bench_cost")

COLUMNS = ("section", "backbone", "head", "image_size", "n_images", "batch_size", "epochs", "frozen_backbone",
           "step_time_s",
           "images_per_s", "epoch_seconds", "seconds", "hours", "days", "exponent", "r2", "source", "note")
SIZES = (128, 224, 320, 512)
QUICK_SIZES = (32, 48, 64, 96)
DATASET_SIZES = (256, 512, 1024)
QUICK_DATASET_SIZES = (32, 64, 128)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--suite", default="wang2017")
    p.add_argument("--profile", default="paper")
    p.add_argument("--sections", default="paper_profile,image_size,dataset_size")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--measure-batch", type=int, default=None,
                   help="batch the per-image times are measured at (default CPU 2, CUDA the profile's)")
    p.add_argument("--iters", type=int, default=None, help="timed steps per measurement (default 2)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap on timing one phase (>= 1 step)")
    p.add_argument("--models-csv", type=Path, default=None,
                   help="reuse per-image times from this bench_models CSV (default results/models_<device>.csv)")
    p.add_argument("--profile-size-cap", type=int, default=None,
                   help="measure profile runs at no more than this size and scale by pixel count (quick: 64)")
    p.add_argument("--scaling-backbone", default="resnet50", help="backbone of the image-size section")
    p.add_argument("--sizes", type=comma_ints, default=None, help="image sizes (default 128,224,320,512)")
    p.add_argument("--harness-backbone", default="mobilenet_v1")
    p.add_argument("--harness-size", type=int, default=None, help="image size of the harness runs (default 64)")
    p.add_argument("--dataset-sizes", type=comma_ints, default=None, help="training images (default 256,512,1024)")
    return p.parse_args(argv)


def _row(section: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(section=section, **kw)
    if row.get("seconds") is not None:
        row["hours"] = row["seconds"] / 3600
        row["days"] = row["seconds"] / 86400
    return row


# ---------------------------------------------------------------------------------------------- profile
def _split_sizes(cfg: Any, cache: dict[tuple, tuple[int, int, int]]) -> tuple[int, int, int]:
    """(train, val, test) image counts of ``cfg``'s split of the full NIH metadata (bundled)."""
    from cxr_bench.data.release import NIHRelease
    from cxr_bench.data.splits import make_splits

    d = cfg.data
    key = (d.split, d.val_fraction, d.split_seed, tuple(d.random_fractions))
    if key not in cache:
        release = NIHRelease.bundled_full()
        s = make_splits(release, protocol=d.split, val_fraction=d.val_fraction, seed=d.split_seed,
                        random_fractions=tuple(d.random_fractions))
        cache[key] = (len(s.train), len(s.val), len(s.test))
    n_train, n_val, n_test = cache[key]
    if d.max_train_images is not None:
        n_train = min(n_train, d.max_train_images)
    return n_train, n_val, n_test


def _per_image_times(args: argparse.Namespace, device: str,
                     models: Any) -> Callable[[Any], tuple[float, float, str]]:
    """A memoised lookup: run config -> (train s/image, infer s/image, where the numbers come from)."""
    memo: dict[tuple[str, str, int, bool], tuple[float, float, str]] = {}

    def lookup(cfg: Any) -> tuple[float, float, str]:
        m = cfg.model
        key = (m.backbone, m.head, cfg.data.image_size, m.freeze_backbone)
        if key in memo:
            return memo[key]
        if models is not None and "frozen_backbone" in models:
            hit = models[(models["backbone"] == m.backbone) & (models["head"] == m.head)
                         & (models["img_size"] == cfg.data.image_size)
                         & (models["frozen_backbone"].astype(str) == str(m.freeze_backbone))]
            if len(hit):
                r = hit.iloc[0]
                memo[key] = (1 / r["train_samples_per_sec"], 1 / r["infer_samples_per_sec"], "models_csv")
                return memo[key]
        b = args.measure_batch or (cfg.optim.batch_size if device.startswith("cuda") else 2)
        size = min(cfg.data.image_size, args.profile_size_cap or cfg.data.image_size)
        if size < cfg.data.image_size:  # not below what the architecture accepts (AlexNet: 63 px)
            from cxr_bench.models import build_backbone

            size = min(cfg.data.image_size, max(size, build_backbone(m.backbone).min_input_size))
        log.info("measuring %s+%s at %d px (frozen backbone: %s), batch %d", m.backbone, m.head, size,
                 m.freeze_backbone, b)
        r = measure_model(backbone=m.backbone, head=m.head, img_size=size, batch_size=b,
                          iters=args.iters, warmup=1, device=device, threads=args.threads,
                          max_seconds=args.max_seconds, freeze_backbone=m.freeze_backbone)
        # Scaling by pixel count is an assumption, used only when asked to (--profile-size-cap, --quick).
        scale = (cfg.data.image_size / size) ** 2
        source = f"measured_batch{b}" if size == cfg.data.image_size else f"scaled_from_{size}px_batch{b}"
        memo[key] = (scale / r["train_samples_per_sec"], scale / r["infer_samples_per_sec"], source)
        return memo[key]

    return lookup


def estimate_run_seconds(n_train: int, n_val: int, n_test: int, *, batch_size: int, epochs: int,
                         t_train: float, t_infer: float, max_steps_per_epoch: int | None = None,
                         accum_steps: int = 1) -> tuple[float, float]:
    """``(epoch seconds, run seconds)`` from per-image train and inference times, the engine's way.

    An epoch is ``n_train // batch_size`` micro-batches (the engine drops the last partial one), at most
    ``max_steps_per_epoch * accum_steps``, then one inference pass over the validation split; the run is
    ``epochs`` epochs then one pass over the test split.
    """
    micro = n_train // batch_size
    if max_steps_per_epoch is not None:
        micro = min(micro, max_steps_per_epoch * accum_steps)
    epoch_s = micro * batch_size * t_train + n_val * t_infer
    return epoch_s, epochs * epoch_s + n_test * t_infer


def paper_profile(args: argparse.Namespace, device: str) -> list[dict]:
    from cxr_bench.runner.suite import load_suite

    try:
        runs = load_suite(args.suite).expand(args.profile)
    except CxrBenchError as e:
        log.warning("paper profile not available: %s", e)
        return [_row("paper_profile_total", note=f"not available: {e}")]
    models_csv = args.models_csv or args.out / f"models_{device.split(':')[0]}.csv"
    models = read_results_csv(models_csv)[0] if models_csv.is_file() else None
    per_image = _per_image_times(args, device, models)
    splits: dict[tuple, tuple[int, int, int]] = {}
    rows, total = [], 0.0
    for run in runs:
        cfg = run.config
        o = cfg.optim
        n_train, n_val, n_test = _split_sizes(cfg, splits)
        t_train, t_infer, source = per_image(cfg)
        epoch_s, run_s = estimate_run_seconds(n_train, n_val, n_test, batch_size=o.batch_size, epochs=o.epochs,
                                              t_train=t_train, t_infer=t_infer,
                                              max_steps_per_epoch=o.max_steps_per_epoch,
                                              accum_steps=o.accum_steps)
        total += run_s
        rows.append(_row("paper_profile", backbone=cfg.model.backbone, head=cfg.model.head,
                         image_size=cfg.data.image_size, n_images=n_train, batch_size=o.batch_size,
                         epochs=o.epochs, frozen_backbone=cfg.model.freeze_backbone, step_time_s=o.batch_size * t_train, images_per_s=1 / t_train,
                         epoch_seconds=epoch_s, seconds=run_s, source=source,
                         note=f"{cfg.name}; {n_val} val, {n_test} test images; all epochs"))
    rows.append(_row("paper_profile_total", n_images=len(runs), seconds=total,
                     note=f"{len(runs)} runs of {args.suite}/{args.profile}, one after another on this machine"))
    log.info("paper profile: %d runs, %.1f days on %s", len(runs), total / 86400, device)
    return rows


# ---------------------------------------------------------------------------------------------- scaling
def image_size_scaling(args: argparse.Namespace, device: str) -> list[dict]:
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    backbone = args.scaling_backbone
    b = args.measure_batch or 2
    rows, xs, ys = [], [], []
    for size in sizes:
        r = measure_model(backbone=backbone, head="gap", img_size=size, batch_size=b, iters=args.iters, warmup=1,
                    device=device, threads=args.threads, max_seconds=args.max_seconds, phases=("train",))
        step = r["train_step_time"] / 1e3
        xs.append(size)
        ys.append(step)
        rows.append(_row("image_size", backbone=backbone, head="gap", image_size=size, batch_size=b,
                         step_time_s=step, images_per_s=r["train_samples_per_sec"], source=f"measured_batch{b}"))
    exp, _, r2 = fit_power_law(xs, ys)
    rows.append(_row("image_size_fit", backbone=backbone, head="gap", exponent=exp, r2=r2,
                     note=f"train step time ~ image_size**b over {', '.join(map(str, sizes))} px"))
    return rows


def dataset_size_scaling(args: argparse.Namespace, device: str) -> list[dict]:
    import pandas as pd

    from cxr_bench.config import RunConfig
    from cxr_bench.engine.trainer import train_run

    sizes = args.dataset_sizes or (QUICK_DATASET_SIZES if args.quick else DATASET_SIZES)
    image_size = args.harness_size or (32 if args.quick else 64)
    batch = 8 if args.quick else 32

    def config(n: int, tmp: str) -> RunConfig:
        return RunConfig.from_dict({
            "data": {"image_size": image_size, "max_train_images": n, "augment": "flip", "workers": 0,
                     "cache_dir": str(Path(tmp) / "cache")},
            "model": {"backbone": args.harness_backbone, "head": "gap"},
            "optim": {"epochs": 1, "batch_size": batch, "optimizer": "sgd", "lr": 0.01},
            "eval": {"bootstrap": 20},
            "device": device, "name": f"cost-n{n}",
        })

    rows, xs, epoch_ys, wall_ys = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-cost-") as tmp:
        # Untimed first run: builds the image cache every timed run then reuses, and warms imports.
        train_run(config(sizes[0], tmp), Path(tmp) / "warmup", progress=False)
        for n in sizes:
            run_dir = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            train_run(config(n, tmp), run_dir, progress=False)
            wall = time.perf_counter() - t0
            hist = pd.read_csv(run_dir / "history.csv")
            epoch_s = float(hist["epoch_seconds"].iloc[-1])
            xs.append(n)
            epoch_ys.append(epoch_s)
            wall_ys.append(wall)
            rows.append(_row("dataset_size", backbone=args.harness_backbone, head="gap", image_size=image_size,
                             n_images=n, batch_size=batch, epochs=1, epoch_seconds=epoch_s, seconds=wall,
                             images_per_s=float(hist["train_images_per_s"].iloc[-1]), source="train_run",
                             note="seconds: whole run incl. start, eval of val+test, artifacts"))
    exp, _, r2 = fit_power_law(xs, epoch_ys)
    rows.append(_row("dataset_size_fit", backbone=args.harness_backbone, exponent=exp, r2=r2,
                     note="epoch time ~ n_images**b (training epoch through the harness)"))
    exp, _, r2 = fit_power_law(xs, wall_ys)
    rows.append(_row("dataset_size_fit", backbone=args.harness_backbone, exponent=exp, r2=r2,
                     note="whole run wall time ~ n_images**b (fixed eval/start-up part flattens it)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    args.iters = args.iters or 2
    if args.quick and args.profile_size_cap is None:
        args.profile_size_cap = 64
    meta = machine_info()
    sections = [s for s in args.sections.split(",") if s]
    known = {"paper_profile", "image_size", "dataset_size"}
    if set(sections) - known:
        raise SystemExit(f"unknown section(s) {sorted(set(sections) - known)}; known: {sorted(known)}")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if "paper_profile" in sections:
        rows += paper_profile(args, device)
    if "image_size" in sections:
        rows += image_size_scaling(args, device)
    if "dataset_size" in sections:
        rows += dataset_size_scaling(args, device)
    meta.update(benchmark="bench_cost", quick=args.quick, suite=args.suite, profile=args.profile,
                seconds=round(time.perf_counter() - t0, 1),
                extrapolation="per-image times measured at a small batch, scaled linearly to the profile batch")
    # A GPU's figures go beside the CPU's (the dry run shows both), not over them.
    name = "cost_curve.csv" if device == "cpu" else f"cost_curve_{device.split(':')[0]}.csv"
    write_results_csv(args.out / name, rows, meta, columns=COLUMNS)
    for r in rows:
        if r["section"] == "paper_profile_total" and r["seconds"] is not None and math.isfinite(r["seconds"]):
            log.info("wang2017 %s profile on %s: %.1f days", args.profile, device, r["days"])
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
