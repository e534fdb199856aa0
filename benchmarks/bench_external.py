"""How long scoring a run on an external test set takes, per 10,000 images, on this machine.

Trains a throw-away run (one short epoch on a phantom NIH release: the weights do not matter for timing),
writes a PadChest-shaped miniature (real metadata rows, 16-bit PNGs of ``--source-size`` px) and times
``cxr_bench.external.evaluate_run_external`` on it: the image cache (decode + resize, once per set and
preprocessing), prediction, and the metrics (bootstrap CIs, calibration, subgroups). One row per backbone
in ``results/external_eval.csv`` (plain CSV, header first), the cores, threads and load in columns beside the
numbers and the whole machine in its sidecar (``external_eval.csv.json``).

    python benchmarks/bench_external.py                         # resnet50 at 224 px, ~64 images
    python benchmarks/bench_external.py --backbones resnet50,densenet121 --images 32 --source-size 1024
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from cxr_bench.bench.measure import load_average, machine_info
from cxr_bench.bench.results import write_results_csv

log = logging.getLogger("benchmarks.bench_external")


def measure(backbone: str, n_images: int, size: int, source_size: int, work: Path,
            machine: dict[str, Any]) -> dict[str, object]:
    from cxr_bench.config import RunConfig
    from cxr_bench.data.external import open_external
    from cxr_bench.data.external.fixtures import make_external_fixture
    from cxr_bench.data.labels import CHESTXRAY14
    from cxr_bench.data.phantoms import make_phantom_release
    from cxr_bench.external import evaluate_run_external
    from cxr_bench.runner.planning import RunSpec
    from cxr_bench.runner.store import RunStore, Status
    from cxr_bench.runner.sweep import execute_run

    release = make_phantom_release(work / "nih", n_patients=24, images_per_patient=2, size=size, labels=CHESTXRAY14)
    cfg = RunConfig.from_dict({
        "data": {"root": str(release), "label_set": "chestxray14", "image_size": size, "max_train_images": 8,
                 "workers": 0, "cache_dir": str(work / "cache")},
        "model": {"backbone": backbone}, "optim": {"epochs": 1, "batch_size": 8},
        "eval": {"bootstrap": 1000, "batch_size": 16}, "device": "cpu", "seed": 0})
    # Through the runner, as `cxr-bench run` does: only a completed run (manifest and all) is scored.
    store = RunStore(work / "runs", "bench")
    outcome = execute_run(RunSpec(str(store.root), store.suite, cfg.run_id(), cfg, {}), progress=False)
    if outcome.status is not Status.COMPLETED:
        raise RuntimeError(f"the throw-away run did not complete: {outcome.detail}")
    run_dir = store.run(cfg.run_id()).path
    root = make_external_fixture("padchest", work / f"padchest-{source_size}", n_images=n_images, size=source_size)
    ext = open_external("padchest", root)
    t0 = time.perf_counter()
    m = evaluate_run_external(run_dir, ext, progress=False, workers=1)
    total = time.perf_counter() - t0
    n = int(m["test"]["n_images"])
    cache_s, pred_s = float(m["timing"]["cache_seconds"]), float(m["timing"]["predict_seconds"])
    metrics_s = total - cache_s - pred_s
    per10k = 10_000 / n
    return {"backbone": backbone, "img_size": size, "source_px": source_size, "n_images": n,
            "cache_s_per_image": cache_s / n, "predict_s_per_image": pred_s / n, "metrics_s": metrics_s,
            "hours_per_10k_images": (cache_s + pred_s) * per10k / 3600,
            "cpu_count": machine["cpu_count"], "torch_threads": __import__("torch").get_num_threads(),
            "loadavg_1m": load_average()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="resnet50")
    ap.add_argument("--images", type=int, default=64, help="frontal images of the miniature (about)")
    ap.add_argument("--size", type=int, default=224, help="the run's image size")
    ap.add_argument("--source-size", type=int, default=2048, help="px of the 16-bit source PNGs (PadChest: ~2000-2800)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "external_eval.csv"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    machine = machine_info()
    rows = []
    for backbone in args.backbones.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(backbone, args.images, args.size, args.source_size, Path(tmp), machine))
        print(rows[-1])
    print(f"wrote {write_results_csv(args.out, rows, {**machine, 'benchmark': 'bench_external'})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
