"""Run the benchmark scripts of this folder in order and refresh the tables in benchmarks/README.md.

    python benchmarks/run_all.py                 # everything (tens of minutes on a 2-core CPU)
    python benchmarks/run_all.py --quick         # smoke run: small batches, few steps, small sizes
    python benchmarks/run_all.py --only models -- --backbones resnet50 --sizes 224,512 --iters 10

Each script is an ordinary module of this folder with a ``main(argv)``; it writes one plain CSV into
``results/``, the machine it ran on in the CSV's sidecar (``<name>.csv.json``). A failing script is reported and the others still run;
``results/machine.json`` records each script's status and duration.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from cxr_bench.bench.measure import load_average, machine_info
from cxr_bench.bench.readme import update_readme
from cxr_bench.bench.results import write_bundled_figures
from cxr_bench.utils.clock import utc_now
from cxr_bench.utils.io import atomic_write_json, read_json

HERE = Path(__file__).resolve().parent
# name -> (module of this folder, what it answers), in the order they run.
BENCHMARKS = {
    "data": ("bench_data", "prepare throughput vs a bare decode loop, worker scaling, cache reads"),
    "train": ("bench_train", "harness overhead: full harness vs the model alone"),
    "metrics": ("bench_metrics", "bootstrap, clustered tests, subgroups and calibration on 25,596 x 14"),
    "models": ("bench_models", "throughput, step time, params, GMACs, peak memory per backbone x head"),
    "latency": ("bench_latency", "batch-1 CPU latency per backbone x head at 224, 512 and 1024 px"),
    "cost": ("bench_cost", "cost of the wang2017 paper profile; runtime vs image and dataset size"),
    "analysis": ("bench_analysis", "leaderboard, paired ablations, paper comparison and reports at 30 and 120 runs"),
}
log = logging.getLogger("benchmarks")


def run(names: list[str], *, quick: bool, out_dir: Path, extra: list[str]) -> dict[str, dict]:
    outcomes: dict[str, dict] = {}
    for name in names:
        module, _ = BENCHMARKS[name]
        argv = ["--out", str(out_dir)] + (["--quick"] if quick else []) + extra
        log.info("benchmark %s: %s.py %s", name, module, " ".join(argv))
        t0 = time.perf_counter()
        try:
            rc = importlib.import_module(module).main(argv)
            status, msg = ("ok", "") if not rc else ("failed", f"{module}.py returned {rc}")
        except SystemExit as e:  # argparse in the script exits on bad arguments
            status, msg = ("ok", "") if not e.code else ("failed", f"{module}.py exited with {e.code}")
        except Exception as e:  # noqa: BLE001 - one broken script must not hide the others' results
            log.exception("benchmark %s crashed", name)
            status, msg = "failed", f"{type(e).__name__}: {e}"
        outcomes[name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1), "message": msg,
                          "finished_utc": utc_now()}
        log.info("benchmark %s: %s in %.1f s %s", name, status, outcomes[name]["seconds"], msg)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batches, few iterations, fewer sizes")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder (default: results/)")
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this one (repeatable)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="after --: arguments for the one --only script")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extra = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    names = args.only or list(BENCHMARKS)
    if extra and len(names) != 1:
        p.error("arguments after -- need exactly one --only NAME")
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    outcomes = run(names, quick=args.quick, out_dir=args.out, extra=extra)
    machine["loadavg_1m_end"] = load_average()
    machine["quick"] = args.quick
    previous = args.out / "machine.json"  # earlier --only runs into the same folder are kept
    machine["outcomes"] = {**(read_json(previous).get("outcomes", {}) if previous.is_file() else {}), **outcomes}
    atomic_write_json(previous, machine)
    if not args.no_readme:
        update_readme(HERE / "README.md", args.out)
    if args.out.resolve() == (HERE / "results").resolve():  # the committed results: what the package ships
        write_bundled_figures(args.out)
    return 1 if any(o["status"] != "ok" for o in outcomes.values()) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # the scripts are modules of this folder, imported by name
    sys.exit(main())
