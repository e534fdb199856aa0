"""Box math for weakly-supervised localization (Wang et al. 2017, section 4.2 and Table 4).

Boxes are ``(x, y, w, h)`` in pixels of the original image (BBox_List_2017 uses 1024-px coordinates): the
box covers the continuous region ``[x, x + w) x [y, y + h)`` and its area is ``w * h`` (no "+1" pixel
convention, so a box mapped from a heatmap and a ground-truth box are measured the same way).

Two overlap measures:

- ``iou(a, b)`` = intersection / union.
- ``iobb(detected, gt)`` = intersection / area of the *detected* box (Wang et al.: "intersection over the
  detected B-Box area ratio"). It forgives a detection much smaller than the lesion, which is why the
  paper reports it beside IoU.

Box generation follows the paper: a heatmap is min-max normalised to [0, 255], thresholded at 60 and at
180, each connected region gets the box around it, and boxes are mapped to the original image size.
Pixel-edge convention: heatmap cell ``(r, c)`` of an ``h x w`` map covers ``[c * W / w, (c + 1) * W / w)
x [r * H / h, (r + 1) * H / h)`` of the ``W x H`` image (cells are areas, edges map to edges; no
half-pixel shift), so a region spanning columns ``c0..c1`` becomes ``x = c0 * W / w``,
``w = (c1 - c0 + 1) * W / w``.

Scoring (:func:`localization_accuracy`): a ground-truth box is localised at threshold ``T`` if some
detected box of that label on that image has overlap ``> T``; accuracy is the fraction of ground-truth
boxes localised, and the average false positives (AFP) is the number of detected boxes that overlap no
ground-truth box by more than ``T``, divided by the number of images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

# The eight findings BBox_List_2017 has boxes for (Wang et al. 2017 Table 4), in the paper's order.
BBOX_LABELS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
                                "Nodule", "Pneumonia", "Pneumothorax")

__all__ = [
    "IOBB_THRESHOLDS",
    "IOU_THRESHOLDS",
    "box_area",
    "heatmap_to_boxes",
    "intersection",
    "iobb",
    "iou",
    "localization_accuracy",
    "localization_table",
    "pairwise_overlap",
]

IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 8))
DEFAULT_THRESHOLDS = {"iobb": IOBB_THRESHOLDS, "iou": IOU_THRESHOLDS}


def _boxes(b: Any) -> np.ndarray:
    arr = np.asarray(b, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"boxes must have a last axis of 4 (x, y, w, h), got shape {arr.shape}")
    if (arr[..., 2:] < 0).any():
        raise ValueError("box width and height must be >= 0")
    return arr


def box_area(b: Any) -> np.ndarray:
    """``w * h`` of ``(..., 4)`` boxes."""
    b = _boxes(b)
    return b[..., 2] * b[..., 3]


def intersection(a: Any, b: Any) -> np.ndarray:
    """Area of the overlap of boxes ``a`` and ``b`` (broadcast like numpy over leading axes)."""
    a, b = _boxes(a), _boxes(b)
    w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.clip(w, 0.0, None) * np.clip(h, 0.0, None)


def iou(a: Any, b: Any) -> np.ndarray:
    """Intersection over union, broadcast over leading axes (0 where both boxes are empty)."""
    inter = intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def iobb(detected: Any, gt: Any) -> np.ndarray:
    """Intersection over the area of the *detected* box (Wang et al. 2017); 0 for an empty detection."""
    inter = intersection(detected, gt)
    area = box_area(detected)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, inter / area, 0.0)


_METRICS: dict[str, Callable[[Any, Any], np.ndarray]] = {"iou": iou, "iobb": iobb}


def _metric(name: str) -> Callable[[Any, Any], np.ndarray]:
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown overlap metric {name!r}; known: {', '.join(_METRICS)}") from None


def pairwise_overlap(detected: Any, gt: Any, metric: str = "iobb") -> np.ndarray:
    """``(n_detected, n_gt)`` matrix of ``metric`` between every detected and every ground-truth box."""
    d = _boxes(detected).reshape(-1, 4)
    g = _boxes(gt).reshape(-1, 4)
    return _metric(metric)(d[:, None, :], g[None, :, :])


def heatmap_to_boxes(
    heatmap: Any,
    thresholds: Sequence[float] = (60, 180),
    out_size: int | tuple[int, int] = 1024,
    *,
    connectivity: int = 8,
) -> np.ndarray:
    """Boxes ``(K, 4)`` around the connected regions of a heatmap, in ``out_size`` pixel coordinates.

    The heatmap ``(h, w)`` is min-max normalised to [0, 255]; for each threshold ``T`` the cells with
    value ``>= T`` are split into connected regions (``connectivity`` 8: diagonal neighbours join, or 4),
    and each region's bounding box is mapped to the ``out_size`` image (an int for a square image or
    ``(width, height)``) by the pixel-edge convention in the module docstring. Boxes from all thresholds
    are returned in threshold order, exact duplicates (a region unchanged between thresholds) once.
    A constant heatmap localises nothing and gives no box.
    """
    hm = np.asarray(heatmap, dtype=np.float64)
    if hm.ndim != 2 or hm.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {hm.shape}")
    if not np.isfinite(hm).all():
        raise ValueError("heatmap contains NaN or inf")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    out_w, out_h = (out_size, out_size) if isinstance(out_size, (int, float, np.number)) else out_size
    lo, hi = hm.min(), hm.max()
    if hi == lo:
        return np.zeros((0, 4))
    norm = (hm - lo) * (255.0 / (hi - lo))
    sx, sy = out_w / hm.shape[1], out_h / hm.shape[0]
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    boxes: dict[tuple[float, ...], None] = {}  # insertion-ordered set
    for thr in thresholds:
        regions, _ = ndimage.label(norm >= thr, structure=structure)
        for rows, cols in ndimage.find_objects(regions):
            box = (cols.start * sx, rows.start * sy, (cols.stop - cols.start) * sx, (rows.stop - rows.start) * sy)
            boxes.setdefault(box, None)
    return np.array(list(boxes), dtype=np.float64).reshape(-1, 4)


def localization_accuracy(
    det_boxes_per_image: Sequence[Any],
    gt_boxes_per_image: Sequence[Any],
    metric: str = "iobb",
    thresholds: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Accuracy and average false positives of one label's detections, one row per threshold.

    ``det_boxes_per_image[i]`` and ``gt_boxes_per_image[i]`` are the ``(k, 4)`` boxes of image ``i``
    (either may be empty). Columns: ``metric, threshold, accuracy, afp, n_gt, n_images``; accuracy is NaN
    when there is no ground-truth box. Default thresholds: the paper's (IoBB 0.1 ... 0.9, IoU 0.1 ... 0.7).
    """
    if len(det_boxes_per_image) != len(gt_boxes_per_image):
        raise ValueError(f"{len(det_boxes_per_image)} detection lists for {len(gt_boxes_per_image)} images")
    _metric(metric)
    ts = np.asarray(DEFAULT_THRESHOLDS[metric] if thresholds is None else thresholds, dtype=np.float64)
    hits = np.zeros(ts.size, dtype=np.int64)
    false_pos = np.zeros(ts.size, dtype=np.int64)
    n_gt = 0
    for det, gt in zip(det_boxes_per_image, gt_boxes_per_image):
        d = _boxes(det).reshape(-1, 4)
        g = _boxes(gt).reshape(-1, 4)
        n_gt += g.shape[0]
        over = pairwise_overlap(d, g, metric)[None, :, :] > ts[:, None, None]  # (T, n_det, n_gt)
        hits += over.any(axis=1).sum(axis=1)
        false_pos += (~over.any(axis=2)).sum(axis=1)
    n_images = len(gt_boxes_per_image)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = hits / n_gt if n_gt else np.full(ts.size, np.nan)
        afp = false_pos / n_images if n_images else np.full(ts.size, np.nan)
    return pd.DataFrame({"metric": metric, "threshold": ts, "accuracy": acc, "afp": afp,
                         "n_gt": n_gt, "n_images": n_images})


def localization_table(
    det_boxes: Mapping[str, Sequence[Any]],
    gt_boxes: Mapping[str, Sequence[Any]],
    metrics: Sequence[str] = ("iobb", "iou"),
) -> pd.DataFrame:
    """Wang et al. Table 4 layout: one row per (label, metric, threshold) with accuracy and AFP.

    ``det_boxes[label]`` and ``gt_boxes[label]`` are per-image box lists over the images that have a
    ground-truth box of that label (the same image order in both).
    """
    missing = sorted(set(gt_boxes) - set(det_boxes))
    if missing:
        raise ValueError(f"no detections given for label(s) {', '.join(missing)}")
    frames = []
    for label in gt_boxes:
        for metric in metrics:
            df = localization_accuracy(det_boxes[label], gt_boxes[label], metric)
            df.insert(0, "label", label)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["label", "metric", "threshold", "accuracy", "afp", "n_gt", "n_images"])
    return pd.concat(frames, ignore_index=True)
