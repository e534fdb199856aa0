"""Distributed: the sampler's sharding, padding removal, and a real 2-process torchrun (gloo) run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from cxr_bench.engine.checkpoint import load_checkpoint
from cxr_bench.engine.distributed import ShardedSampler
from cxr_bench.engine.evaluate import _align
from cxr_bench.engine.trainer import evaluate_checkpoint, load_run_data
from cxr_bench.errors import TrainingError
from cxr_bench.metrics.predictions import read_predictions
from cxr_bench.metrics.roc import mean_defined, per_label_auc
from cxr_bench.utils.io import read_json


def test_sampler_order_is_a_pure_function_of_seed_and_epoch():
    a = ShardedSampler(50, seed=3)
    b = ShardedSampler(50, seed=3)
    a.set_epoch(4)
    list(b)  # iterating (or any history) must not matter
    b.set_epoch(4)
    assert list(a) == list(b)
    assert sorted(a) == list(range(50))
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(ShardedSampler(50, seed=4)) != list(ShardedSampler(50, seed=3))
    assert list(ShardedSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_shards_cover_the_split_with_padding_to_equal_length():
    shards = [list(ShardedSampler(10, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # ceil(10 / 3)
    counts = Counter(i for s in shards for i in s)
    assert set(counts) == set(range(10))
    assert sum(c - 1 for c in counts.values()) == 2  # two padded duplicates
    dropped = [list(ShardedSampler(10, seed=0, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    flat = [i for s in dropped for i in s]
    assert [len(s) for s in dropped] == [3, 3, 3] and len(set(flat)) == 9
    # Fewer items than ranks still gives every rank something (evaluation of a tiny split).
    assert [list(ShardedSampler(1, rank=r, world_size=2, shuffle=False)) for r in range(2)] == [[0], [0]]


def test_limit_and_epoch_tags():
    s = ShardedSampler(100, seed=1, limit=7, tag_epoch=True)
    s.set_epoch(2)
    items = list(s)
    assert len(s) == len(items) == 7 and all(e == 2 for e, _ in items)
    full = ShardedSampler(100, seed=1)
    full.set_epoch(2)
    assert [i for _, i in items] == list(full)[:7]


def test_align_drops_padding_and_orders_by_dataset():
    rows = np.array([30, 10, 20, 30])  # rank outputs in sampler order; 30 is padding repeated
    logits = np.array([[3.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    out = _align(rows, logits, np.array([10, 20, 30]))
    assert out.rows.tolist() == [10, 20, 30] and out.logits[:, 0].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(TrainingError, match="no prediction for 1 of 4"):
        _align(rows, logits, np.array([10, 20, 30, 40]))


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, make_phantom, run_config):
    # 3 images per patient makes the test split odd-sized (15), so the sampler must pad it for 2 ranks.
    root = make_phantom(n_patients=20, images_per_patient=3)
    cfg = run_config(root, optim={"epochs": 2, "batch_size": 4}, eval={"batch_size": 4})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cxr_bench", "train", "--config", str(config), "--run-dir", str(run_dir), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    metrics = read_json(run_dir / "metrics.json")
    assert metrics["world_size"] == 2
    data = load_run_data(cfg)
    assert len(data.test) % 2 == 1  # padding really happened
    test = read_predictions(run_dir / "predictions" / "test.csv", labels=metrics["labels"])
    assert sorted(test.images) == sorted(data.test.csv["image"])  # each test image exactly once
    assert len(test.images) == len(set(test.images)) == metrics["test"]["n_images"]
    assert len(load_checkpoint(run_dir / "checkpoints" / "last.pt")["rng"]) == 2  # both ranks' RNG saved

    # The saved model evaluated in one process gives exactly the 2-process AUCs.
    single = evaluate_checkpoint(cfg, run_dir / "checkpoints" / "best.pt", splits=("test",))["test"]
    np.testing.assert_array_equal(single.images, test.images)
    auc = per_label_auc(single.y_true, single.y_prob)
    for j, label in enumerate(metrics["labels"]):
        reported = metrics["test"]["per_label"][label]["auc"]
        if reported is None:
            assert np.isnan(auc[j])
        else:
            assert auc[j] == reported, label
    assert mean_defined(auc) == metrics["test"]["mean_auc"]


@pytest.mark.slow
def test_torchrun_single_process_joins_a_group_and_matches_a_plain_run(tmp_path, phantom_root, run_config):
    # One rank under torchrun runs DDP over a real (gloo) process group, as a larger job does; with one rank
    # every collective is an identity, so the result is the plain run's, exactly (CPU).
    cfg = run_config(phantom_root, optim={"epochs": 2, "max_steps_per_epoch": 2}, eval={"bootstrap": 10})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    script = tmp_path / "train_one.py"
    script.write_text("import json, logging, sys\n"
                      "from cxr_bench.config import RunConfig\n"
                      "from cxr_bench.engine.trainer import train_run\n"
                      "logging.basicConfig(level=logging.INFO)\n"
                      "train_run(RunConfig.from_dict(json.load(open(sys.argv[1]))), sys.argv[2], progress=False)\n")
    runs = {}
    for name, head in (("plain", [sys.executable]),
                       ("torchrun", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node=1"])):
        runs[name] = tmp_path / name
        proc = subprocess.run([*head, str(script), str(config), str(runs[name])], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert ("joined the gloo process group" in proc.stderr) == (name == "torchrun")
    for split in ("val", "test"):
        assert (runs["plain"] / "predictions" / f"{split}.csv").read_bytes() == \
            (runs["torchrun"] / "predictions" / f"{split}.csv").read_bytes()
