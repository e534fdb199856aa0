"""``cxr-bench run --suite NAME``: run (or resume) every run of a suite into a run store.

With no ``--data-root`` it runs the suite's sample profile on the bundled real sample; with one, the
suite's full profile (``paper``). Completed runs are skipped, interrupted ones resumed; the exit status
is 1 if any run failed. See docs/running.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..runner.suite import parse_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run or resume a suite (e.g. --suite wang2017)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, help="a shipped suite name (see `cxr-bench suites`) or a .toml path")
    p.add_argument("--data-root", help="the NIH release folder; omitted: the bundled 1,673-image sample")
    p.add_argument("--profile", help="suite profile (default: 'sample' without --data-root, 'paper' with it)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run store root (default: ./runs)")
    p.add_argument("--cache-dir", metavar="DIR", help="image cache root of every run (sets data.cache_dir; default "
                   "$CXR_BENCH_CACHE, else ~/.cache/cxr-bench), as for `cxr-bench prepare`")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="run only runs whose id, name, backbone or block matches this fnmatch pattern "
                        "(repeatable, or comma-separated)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config key for every run, e.g. --set optim.epochs=2 (value parsed as TOML)")
    p.add_argument("--seeds", type=int, metavar="N", help="run seeds 0..N-1 of every configuration (overrides the "
                   "suite's seed list; each seed is its own run)")
    p.add_argument("--offline", action="store_true",
                   help="never download (pretrained weights must be in the torch hub / Hugging Face caches; "
                        "`cxr-bench weights fetch --suite NAME` fills them where there is a network)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print the plan: the runs (what differs, done or not, expected time), "
                        "hours in total and per block, the disk the image caches, checkpoints and predictions take, "
                        "and what would stop the sweep; then exit without writing anything")
    p.add_argument("--wide", action="store_true", help="with --dry-run: every differing factor in its own column")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="device of every run (sets the config key device); with --dry-run, the hours are also "
                        "given for this machine's CPU or GPU where it was benchmarked (default: the suite's, auto)")
    p.add_argument("--launcher", choices=["local", "submitit"], default="local",
                   help="local: in this process, one run after another; submitit: one job per run "
                        "(a SLURM job array on a cluster)")
    p.add_argument("--nproc-per-run", type=int, default=None, metavar="N",
                   help="processes per run under torchrun (one per GPU; default 1, or --slurm-gpus-per-node)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
    p.add_argument("--no-report", action="store_true", help="do not write the leaderboard and report at the end")
    g = p.add_argument_group("submitit / SLURM (also CXR_BENCH_SLURM_<NAME> variables and the suite's [slurm])")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-gpus-per-node", type=int)
    g.add_argument("--slurm-timeout-min", type=int)
    g.add_argument("--slurm-cpus-per-task", type=int)
    g.add_argument("--slurm-mem-gb", type=float)
    g.add_argument("--slurm-array-parallelism", type=int, help="max jobs of the array running at once")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-extra account=abc --slurm-extra qos=high")
    g.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"],
                   help="force submitit's executor (default: slurm when available, else local)")
    g.add_argument("--local-parallelism", type=int, default=1,
                   help="jobs at once with submitit's local executor (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import sweep_console

    with sweep_console(args.verbose - args.quiet):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.offline:  # inherited by torchrun ranks and submitit jobs started from here
        os.environ["CXR_BENCH_OFFLINE"] = "1"
    from ..runner.planning import plan_sweep
    from ..runner.sweep import run_suite

    only = [p for item in args.only for p in item.split(",") if p]
    overrides = parse_overrides(args.overrides)
    if args.cache_dir:
        overrides["data.cache_dir"] = args.cache_dir
    if args.device:
        overrides["device"] = args.device
    plan = plan_sweep(args.suite, data_root=args.data_root, profile=args.profile,
                      overrides=overrides, only=only, seeds=args.seeds, dry_run=args.dry_run)
    if plan.banner:
        print(plan.banner, file=sys.stderr)
    selected = f"{len(plan.runs)} of {plan.total}" if len(plan.runs) != plan.total else str(plan.total)
    print(f"suite {plan.suite.name} ({plan.suite.path}), profile {plan.profile}: {selected} runs -> "
          f"{Path(args.runs) / plan.suite.name}", file=sys.stderr)
    if args.dry_run:
        return _dry_run(args, plan)
    launcher, nproc = _launcher(args, plan.suite.slurm, Path(args.runs) / plan.suite.name)
    result = run_suite(plan.suite, plan.runs, profile=plan.profile, out=args.runs, launcher=launcher, nproc=nproc,
                       progress=False if args.no_progress else None)
    print(result.summary() if args.verbose - args.quiet > 0 else result.totals())
    for failed in result.failed:
        print(f"FAILED {failed.run_id} {failed.name}: {failed.detail}", file=sys.stderr)
    if not args.no_report:
        from ..pipeline import finish_outputs

        for line in finish_outputs(args.runs, plan.suite.name):
            print(line)
    if plan.banner:
        print("(bundled sample: these numbers are not comparable with the paper)", file=sys.stderr)
    return result.exit_code


def _dry_run(args: argparse.Namespace, plan) -> int:
    """The plan (runs, hours, disk), then what would stop the sweep. Exit 0 whenever the suite itself is valid:
    missing weights, data, GPU or disk are this machine's state, and planning on a laptop for a cluster is what
    a dry run is for; each is said on stderr, as the real run would refuse it."""
    import json

    from ..runner.dryrun import make_dry_run
    from ..runner.planning import plan_specs
    from ..runner.precheck import check_sweep
    from ..runner.store import RunStore

    store = RunStore(args.runs, plan.suite.name)
    check = check_sweep(plan_specs(plan.suite, plan.runs, plan.profile, args.runs), store, data=not plan.without_data)
    dry = make_dry_run(plan, store, check, device=args.device)
    if args.json:
        print(json.dumps({**dry.to_json(), "problems": [str(p) for p in check.problems]}, indent=1))
    else:
        print(dry.table(wide=args.wide))
        print()
        for line in dry.summary():
            print(line)
    if check.to_fetch:
        print("pretrained checkpoints downloaded first: " + "; ".join(m.describe() for m in check.to_fetch),
              file=sys.stderr)
    if plan.without_data:
        print(f"no --data-root: the data, image and disk checks wait for it (profile {plan.profile} runs on the "
              "full NIH release)", file=sys.stderr)
    for note in check.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in check.problems:
        print(f"cxr-bench run would stop before any work: {problem}", file=sys.stderr)
    return 0


def _launcher(args: argparse.Namespace, suite_slurm: dict, store_dir: Path):
    from ..runner.launchers import LocalLauncher, SlurmOptions, SubmititLauncher

    nproc = args.nproc_per_run
    if args.launcher == "local":
        return LocalLauncher(), nproc or 1
    _check_submitit_cluster(args.submitit_cluster)
    cli = {"partition": args.slurm_partition, "gpus_per_node": args.slurm_gpus_per_node,
           "timeout_min": args.slurm_timeout_min, "cpus_per_task": args.slurm_cpus_per_task,
           "mem_gb": args.slurm_mem_gb, "array_parallelism": args.slurm_array_parallelism,
           "extra": args.slurm_extra or None}
    opts = SlurmOptions.resolve(cli, suite_slurm, os.environ)
    nproc = nproc or max(1, opts.gpus_per_node)
    launcher = SubmititLauncher(store_dir / "submitit", opts, cluster=args.submitit_cluster, nproc=nproc,
                                local_parallelism=args.local_parallelism)
    return launcher, nproc


def _check_submitit_cluster(cluster: str | None) -> None:
    """A forced submitit executor must be usable here; submitit's own test (``affinity() < 0``: for SLURM,
    no ``srun`` on PATH) says so before anything is submitted or written, as one line instead of its
    RuntimeError."""
    if cluster is None:
        return
    from submitit.core.plugins import get_executors

    from ..errors import ConfigError

    executor = get_executors().get(cluster)
    if executor is not None and executor.affinity() < 0:
        hint = "no `srun` on PATH: run it on a SLURM login node" if cluster == "slurm" else "not available here"
        raise ConfigError(f"--submitit-cluster {cluster}: submitit cannot use {cluster} on this machine ({hint}); "
                          "use --submitit-cluster local, or --launcher local")
