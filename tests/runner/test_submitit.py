"""The submitit launcher: SLURM options (precedence, the sbatch script submitit renders from them) and a
real end-to-end sweep through submitit's local executor (each run a subprocess job)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cxr_bench.cli import main as cli_main
from cxr_bench.errors import ConfigError
from cxr_bench.runner.launchers import SlurmOptions
from cxr_bench.runner.store import RunStore


def test_slurm_option_precedence():
    suite = {"partition": "suite-part", "timeout_min": 100, "gpus_per_node": 1, "extra": {"qos": "low"}}
    env = {"CXR_BENCH_SLURM_PARTITION": "env-part", "CXR_BENCH_SLURM_MEM_GB": "32", "UNRELATED": "x"}
    cli = {"partition": None, "timeout_min": 30, "extra": ["account=abc", "qos=high"]}
    opts = SlurmOptions.resolve(cli, suite, env)
    assert (opts.partition, opts.timeout_min, opts.gpus_per_node, opts.mem_gb) == ("env-part", 30, 1, 32.0)
    assert opts.extra == {"qos": "high", "account": "abc"}
    assert SlurmOptions.resolve({}, {}, {}) == SlurmOptions()
    with pytest.raises(ConfigError, match="unknown SLURM option 'partion'"):
        SlurmOptions.resolve({}, {"partion": "x"}, {})
    with pytest.raises(ConfigError, match="mem_gb"):
        SlurmOptions.resolve({}, {}, {"CXR_BENCH_SLURM_MEM_GB": "lots"})
    with pytest.raises(ConfigError, match="key=value"):
        SlurmOptions.resolve({"extra": ["account"]}, {}, {})
    with pytest.raises(ConfigError, match="one node"):
        SlurmOptions.resolve({"nodes": 2}, {}, {})


def test_sbatch_script_from_options(tmp_path: Path, monkeypatch):
    """submitit itself turns our parameters into the sbatch script. Its SLURM executor refuses to start
    without ``srun`` on PATH, so a do-nothing ``srun`` stands in; nothing is submitted."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opts = SlurmOptions.resolve({"partition": "gpu", "gpus_per_node": 4, "mem_gb": 200, "timeout_min": 720,
                                 "extra": ["account=abc"]}, {}, {})
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(**opts.executor_parameters(nproc=4))
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=4", "--mem=200GB", "--time=720", "--account=abc",
                 "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in script, line
    with pytest.raises(ConfigError, match="needs as many GPUs"):
        opts.executor_parameters(nproc=8)


@pytest.mark.slow
def test_submitit_local_executor_end_to_end(two_head_suite: Path, phantom_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "runs"
    args = ["run", "--suite", str(two_head_suite), "--data-root", str(phantom_root), "--out", str(out),
            "--no-report", "--launcher", "submitit", "--submitit-cluster", "local", "--local-parallelism", "2",
            "--slurm-gpus-per-node", "0", "--slurm-timeout-min", "20"]
    assert cli_main(args) == 0
    assert "2 completed, 0 skipped, 0 failed" in capsys.readouterr().out
    store = RunStore(out, "tiny")
    assert len(store.run_ids()) == 2
    for rid in store.run_ids():
        rd = store.run(rid)
        m = rd.manifest()
        assert m["status"] == "completed" and rd.completed
        assert m["launcher"]["kind"] == "submitit" and m["launcher"]["cluster"] == "local"
        assert m["pid"] != os.getpid()  # ran in a job process, not here
        assert len(m["cache_key"]) == 64  # built once, before the jobs
        assert json.loads(rd.metrics_path.read_text())["test"]["n_images"] > 0
    # submitit's job folders (pickled calls, stdout/stderr) live under the run store.
    logs = list((store.path / "submitit").rglob("*_log.out"))
    assert len(logs) == 2

    # Submitting again is safe: the jobs find their runs completed and skip them.
    assert cli_main(args) == 0
    assert "0 completed, 2 skipped, 0 failed" in capsys.readouterr().out
