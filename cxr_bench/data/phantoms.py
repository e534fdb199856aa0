"""Synthetic chest-like phantoms: a seeded miniature NIH release with planted, label-specific lesions.

Tests need data whose answer is known: :func:`make_phantom_release` writes a folder that
:meth:`~cxr_bench.data.release.NIHRelease.open` reads like the real download (PNGs, a Data_Entry CSV with the
real header, patient-disjoint ``train_val_list.txt`` / ``test_list.txt`` without a trailing newline, and
``BBox_List_2017.csv`` rows in 1024-px coordinates). Each image is a crude radiograph (body, two dark lung
fields, a bright mediastinum, ribs, noise); each finding is a *different* pattern (bright disc, ring, square,
cross, ...) planted inside a lung field, so a small CNN separates the labels within a few dozen steps at
32-64 px, and every planted lesion has its box in the BBox file. Some images are ``No Finding``, some carry
two findings.

``faults`` makes the files a test wants to see handled: rejecting ones (``corrupt``, ``truncated``,
``zero_byte``, ``not_png``, ``missing``) and valid-but-unusual ones (``rgba``, ``la``, ``i16``) whose
decoded pixels equal the plain 8-bit image's (a phantom made with the same seed and no faults has the same
pixels, which is how tests get the reference). ``phantom.json`` in the root records each image's labels and
boxes (image pixels, x y w h), the lesion pattern of each label, and which image got which fault.
Generating 100 images at 64 px takes a fraction of a second.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..utils.io import atomic_write_text

DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                     "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
MANIFEST = "phantom.json"
ORIGINAL_SIZE = 1024  # what Data_Entry says; BBox rows are in these coordinates, as in the real release

DEFAULT_LABELS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumothorax")
# Lesion patterns, most distinct first: label i of a release gets PATTERNS[i].
PATTERNS: tuple[str, ...] = ("disc", "cross", "hbars", "ring", "vbars", "square", "checker", "xcross",
                             "frame", "dots", "diamond", "triangle", "dark_disc", "dark_square")
REJECTING_FAULTS = ("corrupt", "truncated", "zero_byte", "not_png", "missing")
VALID_FAULTS = ("rgba", "la", "i16")
LAYOUTS = ("flat", "box", "kaggle", "root")
# What the BBox file calls a finding where it differs from Data_Entry (as in the real release).
_BBOX_SPELLING = {"Infiltration": "Infiltrate"}


def make_phantom_release(root: str | os.PathLike, *, n_patients: int = 40, images_per_patient: int = 2,
                         size: int = 64, labels: Sequence[str] = DEFAULT_LABELS, seed: int = 0,
                         no_finding_fraction: float = 0.3, multi_label_fraction: float = 0.3,
                         test_fraction: float = 0.25, layout: str = "flat",
                         faults: Sequence[str] = ()) -> Path:
    """Write a phantom NIH release under ``root`` and return ``root``.

    Same arguments, same bytes. ``layout`` is one of ``flat`` (``images/``), ``box`` (``images_001/`` ...),
    ``kaggle`` (``images_001/images/`` ...) or ``root`` (PNGs beside the CSV). Each name in ``faults`` is
    applied to a different image (see the module docstring); which image got which is in ``phantom.json``.
    """
    labels = tuple(labels)
    if not 1 <= len(labels) <= len(PATTERNS):
        raise ConfigError(f"phantoms support 1..{len(PATTERNS)} labels, got {len(labels)}")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown phantom layout {layout!r}; known: {', '.join(LAYOUTS)}")
    unknown = sorted(set(faults) - set(REJECTING_FAULTS) - set(VALID_FAULTS))
    if unknown:
        raise ConfigError(f"unknown phantom fault {unknown[0]!r}; known: "
                          f"{', '.join(REJECTING_FAULTS + VALID_FAULTS)}")
    if size < 16:
        raise ConfigError(f"phantom size must be at least 16 px, got {size}")
    n_images = n_patients * images_per_patient
    if len(faults) > n_images:
        raise ConfigError(f"{len(faults)} faults need at least as many images, got {n_images}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    names: list[str] = []
    entries: list[str] = []
    bbox_rows: list[str] = []
    record: dict[str, Any] = {}
    pixels: dict[str, np.ndarray] = {}
    for pid in range(1, n_patients + 1):
        anatomy = _Anatomy.sample(rng, size)
        age, sex = int(rng.integers(20, 80)), ("M", "F")[int(rng.integers(2))]
        for k in range(images_per_patient):
            name = f"{pid:08d}_{k:03d}.png"
            found = _draw_findings(rng, labels, no_finding_fraction, multi_label_fraction)
            img, boxes = _render(rng, anatomy, size, [(lab, PATTERNS[labels.index(lab)]) for lab in found])
            names.append(name)
            pixels[name] = img
            view = "PA" if rng.random() < 0.7 else "AP"
            entries.append(f"{name},{'|'.join(found) or 'No Finding'},{k},{pid},{age + k},{sex},{view},"
                           f"{ORIGINAL_SIZE},{ORIGINAL_SIZE},0.143,0.143")
            scale = ORIGINAL_SIZE / size
            for lab, (x, y, w, h) in boxes:
                bbox_rows.append(f"{name},{_BBOX_SPELLING.get(lab, lab)},{x * scale:g},{y * scale:g},"
                                 f"{w * scale:g},{h * scale:g}")
            record[name] = {"patient_id": pid, "labels": list(found),
                            "boxes": [[lab, *box] for lab, box in boxes]}

    fault_of = dict(zip(rng.choice(names, size=len(faults), replace=False).tolist(), faults))
    folders = _folders(root, layout, n_images)
    for i, name in enumerate(names):
        folder = folders[i * len(folders) // n_images]
        _write_image(folder / name, pixels[name], fault_of.get(name), rng)

    patients = rng.permutation(np.arange(1, n_patients + 1))
    n_test = min(max(1, round(test_fraction * n_patients)), n_patients - 1) if n_patients > 1 else 0
    test_patients = set(patients[:n_test].tolist())
    test = [n for n in names if record[n]["patient_id"] in test_patients]
    train_val = [n for n in names if record[n]["patient_id"] not in test_patients]
    atomic_write_text(root / "Data_Entry_2017_v2020.csv", "\n".join([DATA_ENTRY_HEADER, *entries]) + "\n")
    atomic_write_text(root / "BBox_List_2017.csv", "\n".join([BBOX_HEADER, *bbox_rows]) + "\n")
    # The real split lists end without a newline; readers must cope.
    atomic_write_text(root / "train_val_list.txt", "\n".join(train_val))
    atomic_write_text(root / "test_list.txt", "\n".join(test))
    manifest = {"seed": seed, "size": size, "labels": list(labels), "layout": layout,
                "patterns": {lab: PATTERNS[i] for i, lab in enumerate(labels)},
                "faults": fault_of, "images": record}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root


def render_phantom(findings: Sequence[str], *, size: int = 64, labels: Sequence[str] = DEFAULT_LABELS,
                   rng: np.random.Generator) -> np.ndarray:
    """One phantom radiograph (uint8, size x size) with ``findings`` planted, label ``labels[i]`` drawn as
    ``PATTERNS[i]`` as in :func:`make_phantom_release` with the same ``labels``: a model trained on such a
    release sees the same lesion for the same label in images made here (external-set fixtures)."""
    labels = tuple(labels)
    unknown = [f for f in findings if f not in labels]
    if unknown:
        raise ConfigError(f"phantom finding {unknown[0]!r} is not one of {', '.join(labels)}")
    img, _ = _render(rng, _Anatomy.sample(rng, size), size, [(lab, PATTERNS[labels.index(lab)]) for lab in findings])
    return img


def read_phantom_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """``phantom.json`` of a phantom release: labels, boxes (image px, x y w h) and faults per image."""
    return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))


def lesion_pattern(pattern: str, s: int) -> np.ndarray:
    """An (s, s) float mask in [-1, 1] for ``pattern`` (negative = darker than the lung)."""
    yy, xx = np.mgrid[0:s, 0:s]
    c = (s - 1) / 2.0
    r = np.hypot(yy - c, xx - c) / (s / 2.0)
    ay, ax = np.abs(yy - c) / (s / 2.0), np.abs(xx - c) / (s / 2.0)
    third = max(1, s // 3)
    masks = {
        "disc": r <= 0.9,
        "ring": (r <= 0.95) & (r >= 0.55),
        "square": (ay <= 0.8) & (ax <= 0.8),
        "cross": (ay <= 0.25) | (ax <= 0.25),
        "hbars": (yy // third) % 2 == 0,
        "dark_disc": r <= 0.9,
        "vbars": (xx // third) % 2 == 0,
        "checker": ((yy * 2 // s) + (xx * 2 // s)) % 2 == 0,
        "diamond": ay + ax <= 0.9,
        "xcross": (np.abs(yy - xx) <= s / 8) | (np.abs(yy + xx - (s - 1)) <= s / 8),
        "frame": (np.maximum(ay, ax) <= 0.95) & (np.maximum(ay, ax) >= 0.6),
        "dots": (np.hypot(yy - c, xx - s / 4) <= s / 6) | (np.hypot(yy - c, xx - 3 * s / 4) <= s / 6),
        "dark_square": (ay <= 0.8) & (ax <= 0.8),
        "triangle": (yy >= s / 8) & (ax <= (yy + 1) / s),
    }
    if pattern not in masks:
        raise ConfigError(f"unknown lesion pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    sign = -1.0 if pattern.startswith("dark") else 1.0
    return masks[pattern].astype(np.float64) * sign


# ------------------------------------------------------------------------------------------ drawing
class _Anatomy:
    """Per-patient geometry (fractions of the image size), jittered per image by the renderer."""

    def __init__(self, lung_w: float, lung_h: float, lung_cy: float, gap: float, body_w: float,
                 ribs: int, base: float) -> None:
        self.lung_w, self.lung_h, self.lung_cy, self.gap = lung_w, lung_h, lung_cy, gap
        self.body_w, self.ribs, self.base = body_w, ribs, base

    @classmethod
    def sample(cls, rng: np.random.Generator, size: int) -> _Anatomy:
        return cls(lung_w=rng.uniform(0.17, 0.21), lung_h=rng.uniform(0.30, 0.36), lung_cy=rng.uniform(0.45, 0.5),
                   gap=rng.uniform(0.2, 0.25), body_w=rng.uniform(0.42, 0.47), ribs=int(rng.integers(5, 8)),
                   base=rng.uniform(130, 160))


def _lung_centres(a: _Anatomy, size: int) -> list[tuple[float, float]]:
    return [(size * (0.5 - a.gap), size * a.lung_cy), (size * (0.5 + a.gap), size * a.lung_cy)]


def _render(rng: np.random.Generator, a: _Anatomy, size: int,
            findings: list[tuple[str, str]]) -> tuple[np.ndarray, list[tuple[str, list[int]]]]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size))
    body = ((xx - size / 2) / (size * a.body_w)) ** 2 + ((yy - size * 0.55) / (size * 0.55)) ** 2 <= 1
    img[body] = a.base
    lungs = np.zeros((size, size), dtype=bool)
    for cx, cy in _lung_centres(a, size):
        lungs |= ((xx - cx) / (size * a.lung_w)) ** 2 + ((yy - cy) / (size * a.lung_h)) ** 2 <= 1
    img[lungs] = 55
    for k in range(a.ribs):  # ribs: bright arcs across both lungs
        y0 = size * (a.lung_cy - a.lung_h + 0.1) + k * size * 0.09
        arc = np.abs(yy - (y0 + 0.6 * (xx - size / 2) ** 2 / size)) <= max(0.6, size / 80)
        img[arc & lungs] += 30
    mediastinum = (np.abs(xx - size / 2) <= size * 0.08) & (yy >= size * 0.15) & body
    img[mediastinum] = 195
    boxes: list[tuple[str, list[int]]] = []
    sides = rng.permutation(2)
    for j, (label, pattern) in enumerate(findings):
        s = max(6, int(round(size * rng.uniform(0.2, 0.24))))
        cx, cy = _lung_centres(a, size)[sides[j % 2]]
        x = int(np.clip(round(cx - s / 2 + rng.uniform(-0.06, 0.06) * size), 0, size - s))
        y = int(np.clip(round(cy - s / 2 + rng.uniform(-0.12, 0.12) * size), 0, size - s))
        if j >= 2:  # a third finding shares a lung: stack it below
            y = min(size - s, y + s)
        mask = lesion_pattern(pattern, s)
        patch = img[y:y + s, x:x + s]
        patch[:] = np.where(mask > 0, patch + 120 * mask, np.where(mask < 0, patch * 0.15, patch))
        boxes.append((label, [x, y, s, s]))
    img += rng.normal(0, 5, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), boxes


def _draw_findings(rng: np.random.Generator, labels: tuple[str, ...], no_finding: float,
                   multi: float) -> tuple[str, ...]:
    if rng.random() < no_finding:
        return ()
    k = 2 if (rng.random() < multi and len(labels) > 1) else 1
    picked = sorted(rng.choice(len(labels), size=k, replace=False).tolist())
    return tuple(labels[i] for i in picked)


# ------------------------------------------------------------------------------------------- files
def _folders(root: Path, layout: str, n_images: int) -> list[Path]:
    if layout == "root":
        dirs = [root]
    elif layout == "flat":
        dirs = [root / "images"]
    else:
        n = min(3, max(1, n_images))
        dirs = [root / f"images_{i:03d}" for i in range(1, n + 1)]
        if layout == "kaggle":
            dirs = [d / "images" for d in dirs]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_image(path: Path, gray: np.ndarray, fault: str | None, rng: np.random.Generator) -> None:
    if fault == "missing":
        return
    if fault == "zero_byte":
        path.write_bytes(b"")
        return
    if fault == "rgba":
        rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
        data = _png_bytes(Image.fromarray(rgba, mode="RGBA"))
    elif fault == "la":
        data = _png_bytes(Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), mode="LA"))
    elif fault == "i16":
        # v * 257 spans the full 16-bit range, so rescaling by 65535 returns v exactly.
        data = _png_bytes(Image.fromarray(gray.astype(np.uint16) * 257))
    elif fault == "not_png":
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, format="JPEG")
        data = buf.getvalue()
    else:
        data = _png_bytes(Image.fromarray(gray))
        if fault == "truncated":
            data = data[: len(data) // 2]
        elif fault == "corrupt":
            # Keep the signature and header, scramble the compressed pixel data.
            idat = data.find(b"IDAT") + 4
            body = bytearray(data)
            n = max(8, (len(data) - idat - 16) // 2)
            body[idat:idat + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
            data = bytes(body)
    path.write_bytes(data)
