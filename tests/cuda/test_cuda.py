"""The engine on a GPU: mixed precision, memory format, torch.compile, NCCL under torchrun, kill/resume, and
the GPU-resident input path against the CPU's batches.

Tolerances, and why they are not zero:
- bf16 / fp16 autocast against fp32: relative L2 error of the logits of a randomly initialised ResNet-50
  below 10 % / 2 % (bf16 keeps 8 bits of mantissa, fp16 11; 50 layers compound the rounding);
- channels_last against contiguous, compiled against eager (fp32, TF32 off): cuDNN and Triton choose other
  kernels, which sum in another order: relative error below 1e-4;
- kill and resume: on CUDA some backward kernels accumulate with atomics in no fixed order, so the weights
  of a resumed run differ in the last bits: mean AUCs agree within 0.005 and probabilities within 1e-3
  (on the CPU the same check is exact, tests/engine/test_resume.py);
- the light affine on the GPU: bilinear weights rounded differently from the CPU's move a pixel by at
  most one gray level, in under 1 % of the pixels; flips and plain batches are exact.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cxr_bench.data.cache import prepare_cache
from cxr_bench.data.datasets import CXRDataset
from cxr_bench.data.gpu_loader import CudaPrefetcher, DeviceLoader, ResidentImages, choose_loader
from cxr_bench.engine.checkpoint import load_checkpoint
from cxr_bench.engine.distributed import EpochTagged, ShardedSampler
from cxr_bench.engine.evaluate import autocast
from cxr_bench.errors import ConfigError
from cxr_bench.metrics.predictions import read_predictions
from cxr_bench.models import create_model
from cxr_bench.utils.io import read_json

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

DEV = torch.device("cuda", 0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = create_model("resnet50", head="gap", num_labels=14).to(DEV).eval()
    x = torch.rand(8, 1, 224, 224, generator=torch.Generator().manual_seed(1)).to(DEV)
    with torch.no_grad():
        ref = model(x).float()
    return model, x, ref


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_close_to_fp32(resnet, amp):
    model, x, ref = resnet
    with torch.no_grad(), autocast(DEV, amp):
        out = model(x)
    assert out.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert torch.isfinite(out).all() and _rel(out, ref) < {"bf16": 0.1, "fp16": 0.02}[amp]


def test_channels_last_equals_contiguous(resnet):
    model, x, ref = resnet
    cl = create_model("resnet50", head="gap", num_labels=14).to(DEV).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = cl(x.contiguous(memory_format=torch.channels_last))
    assert _rel(out, ref) < 1e-4


def test_compiled_equals_eager_forward_and_backward():
    torch.manual_seed(0)
    eager = create_model("mobilenet_v1", head="gap", num_labels=14).to(DEV).train()
    comp_model = create_model("mobilenet_v1", head="gap", num_labels=14).to(DEV).train()
    comp_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(comp_model)
    x = torch.rand(16, 1, 96, 96, generator=torch.Generator().manual_seed(2)).to(DEV)
    y = (torch.rand(16, 14, generator=torch.Generator().manual_seed(3)) < 0.2).float().to(DEV)
    outs, grads = [], []
    for m, params in ((eager, eager), (compiled, comp_model)):
        out = m(x)
        torch.nn.functional.binary_cross_entropy_with_logits(out, y).backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in params.parameters() if p.grad is not None]))
    assert _rel(outs[1], outs[0]) < 1e-4
    assert _rel(grads[1], grads[0]) < 1e-3  # BatchNorm's backward sums over the batch: a little more slack


# The engine's entry without the CLI (whose optional report packages a GPU image may lack): one run from a
# config file, logging at INFO so the process group's backend shows in stderr.
TRAIN_SCRIPT = """
import json, logging, sys
from cxr_bench.config import RunConfig
from cxr_bench.engine.trainer import train_run
logging.basicConfig(level=logging.INFO)
with open(sys.argv[1]) as fh:
    train_run(RunConfig.from_dict(json.load(fh)), sys.argv[2], progress=False)
"""


def _train_cmd(config, run_dir, torchrun: bool = False) -> list[str]:
    script = config.parent / "train_one.py"
    script.write_text(TRAIN_SCRIPT)
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if torchrun \
        else [sys.executable]
    return [*head, str(script), str(config), str(run_dir)]


def _write_config(tmp_path, cfg):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def _assert_close_runs(a, b, auc_tol=0.005, prob_tol=1e-3):
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert ma["epochs_run"] == mb["epochs_run"] and ma["steps"] == mb["steps"]
    for split in ("val", "test"):
        assert abs(ma[split]["mean_auc"] - mb[split]["mean_auc"]) <= auc_tol, split
        pa = read_predictions(a / "predictions" / f"{split}.csv")
        pb = read_predictions(b / "predictions" / f"{split}.csv")
        np.testing.assert_array_equal(pa.images, pb.images)
        np.testing.assert_allclose(pa.y_prob, pb.y_prob, atol=prob_tol)


@pytest.mark.slow
def test_torchrun_one_gpu_nccl_equals_plain_run(tmp_path, learning_phantom_cuda, cuda_config):
    cfg = cuda_config(learning_phantom_cuda, optim={"epochs": 2, "max_steps_per_epoch": 4})
    config = _write_config(tmp_path, cfg)
    plain, ddp = tmp_path / "plain", tmp_path / "torchrun"
    for run_dir, torchrun in ((plain, False), (ddp, True)):
        proc = subprocess.run(_train_cmd(config, run_dir, torchrun), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(ddp / "metrics.json")["world_size"] == 1
    assert read_json(ddp / "metrics.json")["device"] == "cuda:0"
    assert "joined the nccl process group" in proc.stderr  # DDP over NCCL, not the single-process path
    _assert_close_runs(plain, ddp)


@pytest.fixture(scope="session")
def learning_phantom_cuda(tmp_path_factory):
    from cxr_bench.data.phantoms import make_phantom_release

    return make_phantom_release(tmp_path_factory.mktemp("learning_cuda") / "nih", n_patients=150,
                                images_per_patient=2, size=64, seed=0)


@pytest.mark.slow
def test_kill_and_resume_on_cuda(tmp_path, learning_phantom_cuda, cuda_config):
    # 6 short epochs: on a GPU an epoch of this phantom takes a fraction of a second, so the kill comes as soon
    # as the first checkpoint appears (polled every 5 ms) and still lands well before the end.
    cfg = cuda_config(learning_phantom_cuda, model={"drop_rate": 0.3},
                      optim={"epochs": 6, "amp": "bf16", "channels_last": True})
    config = _write_config(tmp_path, cfg)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    proc = subprocess.run(_train_cmd(config, reference), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(reference / "metrics.json")["loader"] == "gpu"  # auto: the phantom fits on the device
    last = resumed / "checkpoints" / "last.pt"
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(_train_cmd(config, resumed), stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not last.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (resumed / "metrics.json").exists(), "finished before the kill: nothing tested"
    assert 1 <= load_checkpoint(last)["epoch"] < 6
    proc = subprocess.run(_train_cmd(config, resumed), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_close_runs(reference, resumed)


@pytest.fixture(scope="module")
def cache(phantom_release, tmp_path_factory):
    return prepare_cache(phantom_release, 64, cache_dir=tmp_path_factory.mktemp("cudacache"), workers=1)


@pytest.mark.parametrize("augment", ["none", "flip", "light"])
def test_resident_loader_on_cuda_matches_cpu_batches(phantom_release, cache, augment):
    ds = CXRDataset(phantom_release, np.arange(40), "chestxray14", cache=cache, augment=augment, seed=4)
    sampler = ShardedSampler(len(ds), seed=1, tag_epoch=True)
    sampler.set_epoch(2)
    cpu = list(DataLoader(EpochTagged(ds), batch_size=16, sampler=sampler, num_workers=0))
    gpu = list(DeviceLoader(ds, ResidentImages(cache, ds.slots, DEV), sampler, 16))
    assert len(cpu) == len(gpu) == 3
    for (x, y, r), (xg, yg, rg) in zip(cpu, gpu):
        assert xg.is_cuda and yg.is_cuda and not rg.is_cuda
        assert torch.equal(rg, r) and torch.equal(yg.cpu(), y)
        diff = (xg.cpu().int() - x.int()).abs()
        if augment == "light":
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
        else:
            assert diff.max() == 0


def test_prefetcher_delivers_the_dataloader_batches(phantom_release, cache):
    ds = CXRDataset(phantom_release, np.arange(30), "chestxray14", cache=cache, augment="flip", seed=4)
    loader = DataLoader(ds, batch_size=8, num_workers=2, pin_memory=True)
    ref = list(loader)
    got = list(CudaPrefetcher(loader, DEV))
    assert len(got) == len(ref) == len(CudaPrefetcher(loader, DEV)) == 4
    for (x, y, r), (xg, yg, rg) in zip(ref, got):
        assert xg.is_cuda and yg.is_cuda and torch.equal(xg.cpu(), x) and torch.equal(yg.cpu(), y)
        assert torch.equal(rg, r)


def test_auto_falls_back_to_workers_when_the_cache_does_not_fit():
    free, _ = torch.cuda.mem_get_info(DEV)
    assert choose_loader("auto", DEV, 1024)[0] == "gpu"
    assert choose_loader("auto", DEV, int(free))[0] == "workers"  # more than half of what is free
    with pytest.raises(ConfigError, match="do not fit"):
        choose_loader("gpu", DEV, int(free))
