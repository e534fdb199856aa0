"""The device-resident input path (on CPU tensors here; tests/cuda/ repeats it on a GPU) gives exactly the
batches of the DataLoader path: same items, same order, same augmented pixels, same drop_last."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cxr_bench.data.cache import prepare_cache
from cxr_bench.data.datasets import CXRDataset
from cxr_bench.data.gpu_loader import DeviceLoader, ResidentImages, choose_loader
from cxr_bench.engine.distributed import EpochTagged, ShardedSampler
from cxr_bench.errors import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(phantom_release, tmp_path_factory):
    return prepare_cache(phantom_release, 32, cache_dir=tmp_path_factory.mktemp("gpucache"), workers=1)


def _dataloader_batches(ds, sampler, batch_size, drop_last):
    loader = DataLoader(EpochTagged(ds), batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=drop_last)
    return [(x, y, r) for x, y, r in loader]


@pytest.mark.parametrize("augment", ["none", "flip", "light"])
@pytest.mark.parametrize("drop_last", [True, False])
def test_device_batches_equal_dataloader_batches(phantom_release, cache, augment, drop_last):
    rows = np.arange(3, 40)  # 37 items: a partial last batch of 5 at batch size 8
    ds = CXRDataset(phantom_release, rows, "chestxray14", cache=cache, augment=augment, seed=11)
    resident = ResidentImages(cache, ds.slots, CPU)
    sampler = ShardedSampler(len(ds), seed=5, shuffle=True, tag_epoch=True)
    device = DeviceLoader(ds, resident, sampler, 8, drop_last=drop_last)
    seen = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected = _dataloader_batches(ds, sampler, 8, drop_last)
        got = list(device)
        assert len(got) == len(expected) == len(device) == (4 if drop_last else 5)
        for (x, y, r), (xe, ye, re) in zip(got, expected):
            assert x.dtype == torch.uint8 and x.shape == xe.shape
            assert torch.equal(r, re) and torch.equal(y, ye)
            assert torch.equal(x, xe), f"epoch {epoch}: pixels differ"
        seen.append(torch.cat([b[0] for b in got]))
    # Epoch 1 draws another order (and augmentation): the loader is not replaying one epoch.
    assert not torch.equal(seen[0], seen[1])


def test_untagged_sampler_uses_the_dataset_epoch(phantom_release, cache):
    ds = CXRDataset(phantom_release, np.arange(12), "chestxray14", cache=cache, augment="flip", seed=2)
    loader = DeviceLoader(ds, ResidentImages(cache, ds.slots, CPU), range(12), 12)
    ds.set_epoch(4)
    (x, _, rows), = list(loader)
    assert rows.tolist() == ds.rows.tolist()
    assert torch.equal(x, torch.stack([ds[i][0] for i in range(12)]))  # per-item path, epoch 4


def test_resident_images_hold_the_cache_rows(phantom_release, cache):
    ds = CXRDataset(phantom_release, np.array([30, 2, 17, 2]), "chestxray14", cache=cache)
    resident = ResidentImages(cache, ds.slots, CPU)
    assert resident.slots.tolist() == sorted(set(ds.slots.tolist()))
    assert resident.nbytes == ResidentImages.needed_bytes(cache, ds.slots) == 3 * 32 * 32
    for slot in ds.slots:
        np.testing.assert_array_equal(resident.images[resident.positions(np.array([slot]))[0]].numpy(),
                                      cache.array[slot])
    other = np.setdiff1d(np.arange(len(cache)), resident.slots)[:1]
    with pytest.raises(ValueError, match="not resident"):
        resident.positions(other)


def test_choose_loader_rules_off_cuda():
    assert choose_loader("auto", CPU, 10**6)[0] == "workers"  # CPU runs keep the DataLoader by default
    assert choose_loader("workers", CPU, 10**6)[0] == "workers"
    assert choose_loader("gpu", CPU, 10**6)[0] == "gpu"  # held in RAM: what these tests exercise
    assert choose_loader("auto", CPU, None)[0] == "workers"
    with pytest.raises(ConfigError, match="data.source = 'cache'"):
        choose_loader("gpu", CPU, None)
    with pytest.raises(ConfigError, match="data.loader must be one of"):
        choose_loader("fast", CPU, 10**6)
