"""Provenance: git state of a checkout (in a throwaway repository), package versions, hardware."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cxr_bench.runner.provenance import collect_provenance, git_info, hardware_info, package_versions

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info_commit_and_dirty(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    subprocess.run([*GIT, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", "init"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()

    clean = git_info(repo / "pkg")
    assert clean == {"root": str(repo.resolve()), "commit": head, "dirty": False}
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert git_info(repo / "pkg")["dirty"] is True
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    (repo / "pkg" / "new.py").write_text("")  # untracked code also makes the commit insufficient
    assert git_info(repo / "pkg")["dirty"] is True


def test_git_info_outside_a_checkout(tmp_path: Path):
    assert git_info(tmp_path) == {"root": None, "commit": None, "dirty": None}


def test_package_versions():
    import numpy
    import torch

    v = package_versions()
    assert v["numpy"] == numpy.__version__
    assert torch.__version__.startswith(v["torch"])
    assert {"torchvision", "timm", "pandas", "scikit-learn", "cxr-bench"} <= set(v)
    assert package_versions(("no-such-package-xyz",)) == {"no-such-package-xyz": None}


def test_hardware_and_process():
    hw = hardware_info()
    assert hw["cpu_count"] == os.cpu_count()
    assert 1 <= hw["cpu_usable"] <= hw["cpu_count"]
    assert hw["ram_bytes"] and hw["ram_bytes"] > 2**28
    assert isinstance(hw["gpus"], list)
    prov = collect_provenance()
    assert prov["pid"] == os.getpid() and prov["hostname"]
    assert set(prov) >= {"git", "packages", "python", "hardware", "command", "cwd"}
