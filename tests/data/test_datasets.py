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


S = 64  # image side for the geometry tests below
CENTRE = (S - 1) / 2  # torchvision's tensor affine turns about the centre of the pixel grid


def _blob(x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    yy, xx = np.mgrid[0:S, 0:S]
    img = 250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return torch.from_numpy(np.round(img).astype(np.uint8))[None]


def _centroid(img: torch.Tensor) -> np.ndarray:
    a = img[0].double().numpy()
    yy, xx = np.mgrid[0:S, 0:S]
    return np.array([(a * xx).sum(), (a * yy).sum()]) / a.sum()


def _recover(aug, rng_of) -> tuple[bool, float, float, np.ndarray]:
    """(flipped, rotation in degrees, scale, shift in px) of one draw, measured on the pixels alone.

    Three images with one blob each get the same draw (the generator is rebuilt per image); the blobs'
    centroids before and after give the 2x2 map exactly (three non-collinear points), whose determinant's
    sign says flipped, whose root says scale and whose rotation part says the angle; the shift is what is
    left at the centre.
    """
    p = np.array([[CENTRE - 12, CENTRE - 10], [CENTRE + 14, CENTRE - 6], [CENTRE - 4, CENTRE + 13]])
    images = [_blob(*pt) for pt in p]
    p = np.array([_centroid(im) for im in images])
    q = np.array([_centroid(aug(im, rng_of())) for im in images])
    a = np.linalg.solve(p[1:] - p[0], q[1:] - q[0]).T
    flipped = bool(np.linalg.det(a) < 0)
    if flipped:
        a = a @ np.diag([-1.0, 1.0])
        p[:, 0] = 2 * CENTRE - p[:, 0]
    scale = float(np.sqrt(np.linalg.det(a)))
    angle = float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))
    shift = q[0] - CENTRE - a @ (p[0] - CENTRE)
    return flipped, angle, scale, shift


def test_light_affine_draws_its_documented_ranges_and_moves_the_pixels():
    light = AUGMENTATIONS.get("light")
    measured = []
    for row in range(40):
        flipped, angle, scale, shift = _recover(light, lambda row=row: item_rng(3, 1, row))
        # The draws, straight from numpy in the documented order: flip, angle, x shift, y shift, scale.
        r = item_rng(3, 1, row)
        flip_u, a, sx, sy, sc = r.random(), r.uniform(-5, 5), r.uniform(-0.04, 0.04), r.uniform(-0.04, 0.04), \
            r.uniform(0.9, 1.1)
        assert flipped == (flip_u < 0.5), row
        assert angle == pytest.approx(a, abs=0.3), row
        assert scale == pytest.approx(sc, abs=0.01), row
        np.testing.assert_allclose(shift, [round(sx * S), round(sy * S)], atol=0.15)
        measured.append((flipped, angle, scale, *shift))
    m = np.array(measured)
    # The documented ranges, read off the pixels: +-5 degrees, scale 0.9-1.1, shifts of at most 4 % (3 px).
    assert np.abs(m[:, 1]).max() <= 5.3 and 0.89 <= m[:, 2].min() and m[:, 2].max() <= 1.11
    assert np.abs(m[:, 3:]).max() <= 0.04 * S + 0.5
    # ... and used: 40 draws spread over each range (chance of failing for a uniform draw: < 1e-4).
    assert m[:, 1].min() < -2.5 and m[:, 1].max() > 2.5
    assert m[:, 2].min() < 0.95 and m[:, 2].max() > 1.05
    assert 8 <= m[:, 0].sum() <= 32


def test_flip_mirrors_exactly_the_items_numpy_draws_below_one_half():
    flip = AUGMENTATIONS.get("flip")
    img = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    flipped = []
    for row in range(60):
        out = flip(img, item_rng(9, 2, row))
        assert out.dtype == torch.uint8
        assert torch.equal(out, img.flip(-1)) or torch.equal(out, img)
        flipped.append(torch.equal(out, img.flip(-1)))
    assert flipped == [item_rng(9, 2, row).random() < 0.5 for row in range(60)]
    assert torch.equal(AUGMENTATIONS.get("none")(img, item_rng(9, 2, 0)), img)


def test_mismatched_cache_is_refused(phantom_release, phantom_cache):
    with pytest.raises(CacheError, match="size 64"):
        CXRDataset(phantom_release, None, "chestxray14", cache=phantom_cache, size=64)
    with pytest.raises(CacheError, match="conversion"):
        CXRDataset(phantom_release, None, "chestxray14", cache=phantom_cache, conversion="gamma")
    with pytest.raises(CacheError, match="needs size"):
        CXRDataset(phantom_release, None, "chestxray14")
    with pytest.raises(CacheError, match="rows"):
        CXRDataset(phantom_release, [10**6], "chestxray14", cache=phantom_cache)
