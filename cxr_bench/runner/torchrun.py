"""Multi-process runs: one run trained by ``nproc`` ranks of ``cxr-bench train`` under ``torchrun``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from ..errors import TrainingError
from .store import LOCK_HELD_ENV

log = logging.getLogger(__name__)


def torchrun_command(run_dir: Path, nproc: int) -> list[str]:
    """The single-node torchrun command line for one run: ``nproc`` ranks of ``cxr-bench train`` on the
    run's own ``config.json`` (the one torchrun entry point; the parent process holds the run's lock).

    ``--standalone`` gives the ranks a private rendezvous on localhost, so several runs (or jobs on one
    node) never collide on a port.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "cxr_bench", "train", "--config", str(run_dir / "config.json"), "--run-dir", str(run_dir)]



def run_torchrun(run_dir: Path, nproc: int, log_path: Path) -> None:
    """Train the run in ``run_dir`` with ``nproc`` ranks; the ranks' output goes to ``log_path``."""
    cmd = torchrun_command(run_dir, nproc)
    log.info("launching: %s", " ".join(cmd))
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.flush()
        # The ranks write into the run directory whose lock this process holds for them.
        env = {**os.environ, LOCK_HELD_ENV: str(run_dir)}
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env).returncode
    if rc != 0:
        raise TrainingError(f"torchrun exited with status {rc}; the ranks' output is in {log_path}")
