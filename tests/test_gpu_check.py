"""benchmarks/gpu_check.sh and bench_train's CUDA preset, without a GPU: the script parses, and the preset
measures the four GPU settings as the wang2017 suite trains them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import bench_train  # benchmarks/ is on pytest's pythonpath
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_script_is_valid_bash_and_documents_itself():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--cpu-smoke" in out.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


def test_cuda_preset_settings():
    args = bench_train.parse_args(["--preset", "cuda", "--compile", "both"])
    s = {x.name: x.overrides for x in bench_train.settings(args, cuda=True)}
    assert len(s) == 8 and sum(name.endswith("-compiled") for name in s) == 4
    paper = s["resnet50-frozen-1024-paper"]
    # The paper profile's setting (cxr_bench/suites/wang2017.toml): 1024 px, frozen, 16 x 5, W-CEL, SGD, bf16.
    assert (paper["data.image_size"], paper["model.freeze_backbone"], paper["optim.batch_size"],
            paper["optim.accum_steps"], paper["loss.name"], paper["optim.optimizer"], paper["optim.amp"]) == \
        (1024, True, 16, 5, "wcel", "sgd", "bf16")
    assert s["densenet121-224-b16-chexnet"]["optim.batch_size"] == 16
    assert s["mobilenet_v1-224-b256"]["optim.batch_size"] == s["resnet50-224-b256"]["optim.batch_size"] == 256
    assert s["mobilenet_v1-224-b256-compiled"]["optim.compile"] and not s["mobilenet_v1-224-b256"]["optim.compile"]
    ordered = bench_train.settings(bench_train.parse_args(["--preset", "cuda", "--only", "densenet,mobilenet"]),
                                   cuda=True)
    assert [x.name for x in ordered] == ["densenet121-224-b16-chexnet", "mobilenet_v1-224-b256"]
    tiny = bench_train.settings(bench_train.parse_args(["--preset", "cuda", "--tiny"]), cuda=False)
    assert all(x.overrides["data.image_size"] == 32 and x.overrides["data.workers"] == 0 for x in tiny)
