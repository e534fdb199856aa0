"""``cxr-bench train``: train and evaluate one run from a config file (also the torchrun entry point).

    cxr-bench train --config run.toml --run-dir runs/x --set optim.lr=0.01 --set data.image_size=128
    torchrun --nproc_per_node=2 -m cxr_bench train --config run.toml --run-dir runs/x
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train and evaluate one run (resumes from RUN_DIR/checkpoints/last.pt)",
        description="Train one run described by a config file (a RunConfig as JSON or TOML), then evaluate "
                    "the best checkpoint on val and test. Run it again with the same arguments to resume an "
                    "interrupted run. Under `torchrun --nproc_per_node=N -m cxr_bench train ...` every process "
                    "runs this command and rank 0 writes the files.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="run config (.json or .toml)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="where checkpoints, predictions and "
                   "metrics.json go")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config field, e.g. optim.lr=0.01 (value parsed as TOML, else a string); "
                        "repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as a plain dict: ``.toml`` via tomllib, anything else as JSON."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        if path.suffix == ".toml":
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not valid UTF-8 (byte {e.start}): save it as UTF-8") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from None


def run(args: argparse.Namespace) -> int:
    from ..config import RunConfig
    from ..data.release import is_phantom, materialize_phantom
    from ..engine.trainer import train_run
    from ..runner.store import writer_lock
    from ..runner.suite import parse_overrides

    rank = int(os.environ.get("RANK", "0"))  # the CLI's logging setup already quiets ranks > 0
    cfg = RunConfig.from_dict(load_config_file(args.config))
    if args.overrides:
        cfg = cfg.replace(**parse_overrides(args.overrides))
    if is_phantom(cfg.data.root) and rank == 0:
        materialize_phantom(str(cfg.data.root))
    with writer_lock(args.run_dir, "cxr-bench train"):
        metrics = train_run(cfg, Path(args.run_dir), progress=False if args.no_progress else None)
    if rank == 0:
        test = metrics.get("test", {})
        print(f"run {cfg.run_id()} done: best epoch {metrics.get('best_epoch')}, "
              f"test mean AUC {test.get('mean_auc')}, metrics in {Path(args.run_dir) / 'metrics.json'}")
    return 0
