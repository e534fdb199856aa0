"""Where a result came from: source tree state, package versions, hardware.

Written into every run's ``manifest.json`` so a number in a table can be traced to the code, libraries
and machine that produced it. Collecting is cheap and never fails a run: anything that cannot be read is
recorded as ``None`` with the reason logged at debug level.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..utils.host import cpu_model_name

log = logging.getLogger(__name__)

# Distribution names (as pip knows them) whose versions go into every manifest.
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "scipy", "pillow",
            "submitit", "cxr-bench")


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"root", "commit", "dirty"}`` of the git checkout holding ``path`` (default: the cxr_bench source).

    ``commit`` is None outside a checkout (an installed wheel) or before the first commit. ``dirty`` says
    whether tracked or untracked files differ from the commit, i.e. whether the commit alone does not
    reproduce the code that ran. Read-only: ``--no-optional-locks`` keeps ``git status`` from touching
    the index.
    """
    here = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "--no-optional-locks", *args], cwd=here, capture_output=True,
                                 text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("git %s failed: %s", args, e)
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if root is None:
        return {"root": None, "commit": None, "dirty": None}
    commit = git("rev-parse", "--verify", "--quiet", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=normal", "--", ".")
    return {"root": root, "commit": commit or None, "dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory)})
    return out


def hardware_info() -> dict[str, Any]:
    """CPU model, logical cores (and how many this process may use), RAM, GPUs, torch threads."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        import torch

        threads: int | None = torch.get_num_threads()
    except ImportError:
        threads = None
    return {
        "cpu_model": cpu_model_name(), "cpu_count": os.cpu_count(), "cpu_usable": usable,
        "torch_threads": threads, "ram_bytes": _ram_bytes(), "gpus": _gpus(),
        "machine": platform.machine(), "platform": platform.platform(),
    }


@functools.lru_cache(maxsize=1)
def _static_provenance() -> dict[str, Any]:
    # Git, packages and hardware do not change during a sweep: collect them once per process.
    return {
        "git": git_info(),
        "packages": package_versions(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "hardware": hardware_info(),
    }


def collect_provenance() -> dict[str, Any]:
    """Everything above plus this process: hostname, pid, command line, SLURM job id if any."""
    prov = dict(_static_provenance())
    prov.update({
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    })
    return prov
