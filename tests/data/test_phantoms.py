import hashlib
from pathlib import Path

import numpy as np
import pytest

from cxr_bench.data.grayscale import decode_gray
from cxr_bench.data.phantoms import (
    DATA_ENTRY_HEADER,
    DEFAULT_LABELS,
    PATTERNS,
    lesion_pattern,
    make_phantom_release,
    read_phantom_manifest,
)
from cxr_bench.data.release import NIHRelease
from cxr_bench.errors import ConfigError


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    kw = {"n_patients": 5, "size": 32, "faults": ("corrupt", "rgba")}
    a = _digest(make_phantom_release(tmp_path / "a", seed=3, **kw))
    b = _digest(make_phantom_release(tmp_path / "b", seed=3, **kw))
    c = _digest(make_phantom_release(tmp_path / "c", seed=4, **kw))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_release_files_look_like_nih(phantom_root, phantom_release):
    lines = (phantom_root / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    assert lines[0] == DATA_ENTRY_HEADER
    assert len(phantom_release.metadata) == 40
    for name in ("train_val_list.txt", "test_list.txt"):
        assert not (phantom_root / name).read_bytes().endswith(b"\n")
    tv, test = set(phantom_release.train_val_names), set(phantom_release.test_names)
    assert tv | test == set(phantom_release.metadata["image"]) and not tv & test
    pid = dict(zip(phantom_release.metadata["image"], phantom_release.metadata["patient_id"]))
    assert not {pid[n] for n in tv} & {pid[n] for n in test}


def test_labels_mix_and_boxes_are_in_1024_px(phantom_root, phantom_release):
    manifest = read_phantom_manifest(phantom_root)
    images = manifest["images"]
    n_labels = [len(v["labels"]) for v in images.values()]
    assert 0 in n_labels and 1 in n_labels and 2 in n_labels
    assert {lab for v in images.values() for lab in v["labels"]} == set(DEFAULT_LABELS)
    finding = dict(zip(phantom_release.metadata["image"], phantom_release.metadata["finding_labels"]))
    expected_boxes = []
    for name, v in images.items():
        assert finding[name] == ("|".join(v["labels"]) or "No Finding")
        assert [b[0] for b in v["boxes"]] == v["labels"]
        expected_boxes += [(name, lab, x * 16.0, y * 16.0, w * 16.0, h * 16.0) for lab, x, y, w, h in v["boxes"]]
    got = [tuple(r) for r in phantom_release.bboxes[["image", "label", "x", "y", "w", "h"]].itertuples(index=False)]
    assert sorted(got) == sorted(expected_boxes)


def test_each_lesion_is_planted_in_its_box(phantom_root):
    manifest = read_phantom_manifest(phantom_root)
    checked = 0
    for name, v in manifest["images"].items():
        img = decode_gray(phantom_root / "images" / name).astype(float)
        for label, x, y, w, h in v["boxes"]:
            mask = lesion_pattern(manifest["patterns"][label], w)
            patch = img[y:y + h, x:x + w]
            contrast = patch[mask != 0].mean() - patch[mask == 0].mean() if (mask == 0).any() else None
            if contrast is not None:
                assert contrast * np.sign(mask.sum()) > 30, (name, label, contrast)
                checked += 1
    assert checked > 10


def test_patterns_are_distinct():
    masks = [lesion_pattern(p, 12) for p in PATTERNS]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not np.array_equal(masks[i], masks[j]), (PATTERNS[i], PATTERNS[j])


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="fault"):
        make_phantom_release(tmp_path, faults=("melted",))
    with pytest.raises(ConfigError, match="layout"):
        make_phantom_release(tmp_path, layout="zip")
    with pytest.raises(ConfigError, match="labels"):
        make_phantom_release(tmp_path, labels=())


@pytest.mark.slow
def test_a_small_cnn_learns_the_lesions_in_a_few_dozen_steps(tmp_path):
    import torch
    from sklearn.metrics import roc_auc_score

    from cxr_bench.data.cache import prepare_cache
    from cxr_bench.data.datasets import CXRDataset

    labels = ("Atelectasis", "Cardiomegaly", "Effusion")
    release = NIHRelease.open(make_phantom_release(tmp_path / "p", n_patients=120, size=32, labels=labels))
    cache = prepare_cache(release, 32, cache_dir=tmp_path / "c", workers=1)
    ds = CXRDataset(release, None, "chestxray8", cache=cache)
    cols = [ds.pathologies.index(lab) for lab in labels]
    x = (torch.stack([ds[i][0] for i in range(len(ds))]).float() / 255 - 0.5) * 4
    y = torch.from_numpy(ds.labels[:, cols])
    train, test = slice(0, 180), slice(180, None)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # test-local: parameter init of the toy model
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, len(labels)))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(80):
        idx = torch.randint(0, 180, (32,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[train][idx]), y[train][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = model(x[test]).numpy()
    aucs = [roc_auc_score(y[test][:, j].numpy(), scores[:, j]) for j in range(len(labels))]
    assert min(aucs) > 0.9, aucs  # chance is 0.5; this seed reaches ~0.99
