import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cxr_bench.data.augment import AUGMENTATIONS, item_rng
from cxr_bench.data.cache import prepare_cache
from cxr_bench.data.datasets import CXRDataset
from cxr_bench.data.labels import get_label_set
from cxr_bench.data.phantoms import read_phantom_manifest
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import CacheError


@pytest.fixture(scope="module")
def phantom_cache(phantom_release, tmp_path_factory):
    return prepare_cache(phantom_release, 32, cache_dir=tmp_path_factory.mktemp("dscache"), workers=1)


def test_items_shapes_labels_and_fields(phantom_release, phantom_root, phantom_cache):
    rows = np.array([5, 0, 17, 3])
    ds = CXRDataset(phantom_release, rows, "chestxray14", cache=phantom_cache)
    assert len(ds) == 4 and ds.pathologies == list(get_label_set("chestxray14").labels)
    assert ds.labels.shape == (4, 14) and ds.labels.dtype == np.float32
    manifest = read_phantom_manifest(phantom_root)["images"]
    for i, row in enumerate(rows):
        image, target, r = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (1, 32, 32)
        assert target.dtype == torch.float32 and target.shape == (14,)
        assert r == row and ds.csv["image"][i] == phantom_release.metadata["image"][row]
        name = ds.csv["image"][i]
        assert {ds.pathologies[j] for j in np.flatnonzero(target.numpy())} == set(manifest[name]["labels"])
        np.testing.assert_array_equal(image[0].numpy(), phantom_cache.array[phantom_cache.index_of(name)])


def test_png_path_gives_the_cache_pixels(phantom_release, phantom_cache):
    a = CXRDataset(phantom_release, None, "chestxray8", cache=phantom_cache)
    b = CXRDataset(phantom_release, None, "chestxray8", size=32)
    assert len(a) == len(b) == len(phantom_release.metadata)
    for i in (0, 7, len(a) - 1):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])


def test_rejected_and_missing_rows_are_dropped_and_listed(make_phantom, cache_root):
    root = make_phantom(n_patients=6, faults=("corrupt", "missing", "rgba"))
    release = NIHRelease.open(root)
    faults = read_phantom_manifest(root)["faults"]
    cache = prepare_cache(release, 32, cache_dir=cache_root, workers=1)
    ds = CXRDataset(release, None, "chestxray14", cache=cache)
    bad = {n for n, f in faults.items() if f in ("corrupt", "missing")}
    assert set(ds.dropped["image"]) == bad and len(ds) == len(release.metadata) - 2
    assert not set(ds.csv["image"]) & bad
    assert list(ds.csv["image"]) == [release.metadata["image"][r] for r in ds.rows]
    direct = CXRDataset(release, None, "chestxray14", size=32)
    assert list(direct.dropped["image"]) == [n for n, f in faults.items() if f == "missing"]


def _epoch(ds, num_workers, epoch):
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=5, num_workers=num_workers, shuffle=False)
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[2] for b in batches])


@pytest.mark.parametrize("augment", ["flip", "light"])
def test_augmentation_independent_of_workers_and_order(phantom_release, phantom_cache, augment):
    ds = CXRDataset(phantom_release, np.arange(20), "chestxray14", cache=phantom_cache, augment=augment, seed=7)
    x0, rows0 = _epoch(ds, 0, epoch=3)
    x2, rows2 = _epoch(ds, 2, epoch=3)
    assert x0.dtype == torch.uint8 and x0.shape == (20, 1, 32, 32)
    assert torch.equal(rows0, rows2) and torch.equal(x0, x2)
    # Any order, single items or batches: an item's draw depends only on (seed, epoch, row).
    assert torch.equal(torch.stack([ds[i][0] for i in reversed(range(20))]), x0.flip(0))
    x_other, _ = _epoch(ds, 0, epoch=4)
    assert not torch.equal(x_other, x0)
    plain = torch.from_numpy(np.array(phantom_cache.array[phantom_cache.slots(ds.csv["image"])]))[:, None]
    if augment == "flip":
        flipped = [torch.equal(x0[i], plain[i].flip(-1)) for i in range(20)]
        assert all(f or torch.equal(x0[i], plain[i]) for i, f in enumerate(flipped))
        assert 3 <= sum(flipped) <= 17
    other_seed = CXRDataset(phantom_release, np.arange(20), "chestxray14", cache=phantom_cache,
                            augment=augment, seed=8)
    assert not torch.equal(_epoch(other_seed, 0, epoch=3)[0], x0)


def test_augmentations_keep_dtype_and_shape():
    img = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    for name in AUGMENTATIONS:
        out = AUGMENTATIONS.get(name)(img, item_rng(0, 0, 0))
        assert out.dtype == torch.uint8 and out.shape == img.shape, name


def test_mismatched_cache_is_refused(phantom_release, phantom_cache):
    with pytest.raises(CacheError, match="size 64"):
        CXRDataset(phantom_release, None, "chestxray14", cache=phantom_cache, size=64)
    with pytest.raises(CacheError, match="conversion"):
        CXRDataset(phantom_release, None, "chestxray14", cache=phantom_cache, conversion="gamma")
    with pytest.raises(CacheError, match="needs size"):
        CXRDataset(phantom_release, None, "chestxray14")
    with pytest.raises(CacheError, match="rows"):
        CXRDataset(phantom_release, [10**6], "chestxray14", cache=phantom_cache)
