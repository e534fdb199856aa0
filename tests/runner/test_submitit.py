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


def test_slurm_values_are_typed_and_in_range():
    env = {"CXR_BENCH_SLURM_TIMEOUT_MIN": " 90 ", "CXR_BENCH_SLURM_EXTRA": "account=a,qos=b"}
    opts = SlurmOptions.resolve({}, {"mem_gb": 64, "extra": {
        "exclusive": True, "nice": 10, "constraint": "a100&ib"}}, env)
    assert (opts.timeout_min, opts.mem_gb) == (90, 64.0) and isinstance(opts.mem_gb, float)
    assert opts.extra == {"exclusive": True, "nice": "10", "constraint": "a100&ib", "account": "a", "qos": "b"}


BAD_SLURM = [
    ({"timeout_min": 0}, "out of range"),
    ({"gpus_per_node": -1}, "out of range"),
    ({"cpus_per_task": 2.5}, "not a whole number"),
    ({"gpus_per_node": True}, "not a valid int"),
    ({"mem_gb": 0}, "out of range"),
    ({"mem_gb": float("inf")}, "not a finite number"),
    ({"array_parallelism": "lots"}, "not a valid int"),
    ({"partition": "gpu part"}, "not a partition name"),
    ({"partition": 5}, "not a partition name"),
    ({"extra": {"account": ""}}, "empty"),
    ({"extra": {"account": "x" * 300}}, "300 characters"),
    ({"extra": {"account": ["a"]}}, "expected text"),
    ({"extra": {"exclusive": False}}, "expected text"),
    ({"extra": {"Account": "a"}}, "not an sbatch option name"),
    ({"extra": {"time": "10"}}, "use timeout_min"),
    ({"extra": {"mem_per_cpu": "4G", "gpus-per-node": "2"}}, "use gpus_per_node"),
    ({"extra": "account"}, "key=value"),
]


@pytest.mark.parametrize("suite,needle", BAD_SLURM, ids=[f"{next(iter(b[0]))}-{i}" for i, b in enumerate(BAD_SLURM)])
def test_bad_slurm_values_name_source_and_option(suite, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        SlurmOptions.resolve({}, suite, {}, suite_source="my.toml: [slurm]")
    assert str(err.value).startswith("my.toml: [slurm]: ") and "\n" not in str(err.value)


def test_suite_slurm_table_checked_at_load(write_suite, two_heads):
    from cxr_bench.runner.suite import load_suite

    path = write_suite(two_heads, extra='[slurm]\ntimeout_min = 30\nextra = { account = "abc", exclusive = true }\n')
    assert load_suite(path).slurm == {"timeout_min": 30, "extra": {"account": "abc", "exclusive": True}}
    path = write_suite(two_heads, extra='[slurm]\ncpus_per_task = -3\n')
    with pytest.raises(ConfigError, match=r"\[slurm\]: SLURM option cpus_per_task = -3 is out of range") as err:
        load_suite(path)
    assert str(path.resolve()) in str(err.value)


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
                                 "extra": ["account=abc"]}, {"extra": {"exclusive": True, "constraint": "a100&ib"}}, {})
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(**opts.executor_parameters(nproc=4))
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=4", "--mem=200GB", "--time=720", "--account=abc",
                 "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8", "--exclusive", "--constraint='a100&ib'"):
        assert f"#SBATCH {line}" in script, line
    with pytest.raises(ConfigError, match="needs as many GPUs"):
        opts.executor_parameters(nproc=8)


@pytest.mark.slow
def test_submitit_local_executor_end_to_end(two_head_suite: Path, phantom_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "runs"
    args = ["run", "--suite", str(two_head_suite), "--data-root", str(phantom_root), "--runs", str(out),
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
