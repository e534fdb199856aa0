"""data.loader end to end: a run whose batches come from the device-resident path ends with the very
predictions, history and metrics of the DataLoader path (CPU here, where both are exact)."""

from __future__ import annotations

import pandas as pd
import pytest

from cxr_bench.engine.trainer import eval_batch_size, train_run
from cxr_bench.errors import ConfigError
from cxr_bench.utils.io import read_json

TIMING = ["epoch_seconds", "train_images_per_s"]


@pytest.mark.slow
def test_resident_run_equals_dataloader_run(tmp_path, phantom_root, run_config):
    # light augmentation (flip + affine) with shuffling, dropout and a partial evaluation batch: every part
    # of the batch path that could differ between the two loaders is exercised.
    runs = {}
    for loader in ("workers", "gpu"):
        cfg = run_config(phantom_root, data={"loader": loader, "augment": "light"}, model={"drop_rate": 0.2},
                         optim={"epochs": 2, "max_steps_per_epoch": 3}, eval={"bootstrap": 10, "batch_size": 7})
        runs[loader] = tmp_path / loader
        metrics = train_run(cfg, runs[loader], progress=False)
        assert metrics["loader"] == loader
    a, b = runs["workers"], runs["gpu"]
    for split in ("val", "test"):
        assert (a / "predictions" / f"{split}.csv").read_bytes() == (b / "predictions" / f"{split}.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv").drop(columns=TIMING),
                                  pd.read_csv(b / "history.csv").drop(columns=TIMING), check_exact=True)
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    for m in (ma, mb):
        m.pop("train_images_per_s"), m.pop("loader")
    assert ma == mb


def test_gpu_loader_needs_a_cache(tmp_path, phantom_root, run_config):
    cfg = run_config(phantom_root, data={"loader": "gpu", "source": "png"}, optim={"epochs": 1})
    with pytest.raises(ConfigError, match="data.loader = 'gpu' needs data.source = 'cache'"):
        train_run(cfg, tmp_path, progress=False)


def test_eval_batches_grow_on_cuda_only(phantom_root, run_config):
    import torch

    cfg = run_config(phantom_root, data={"image_size": 224}, eval={"batch_size": 16})
    assert eval_batch_size(cfg, torch.device("cpu")) == 16
    assert eval_batch_size(cfg, torch.device("cuda", 0)) == 256  # 256 images of 224 px
    big = cfg.replace(**{"data.image_size": 1024, "eval.batch_size": 64})
    assert eval_batch_size(big, torch.device("cuda", 0)) == 64  # 12 of 1024 px < the configured 64
