"""Weakly-supervised localization of a trained run, scored against BBox_List_2017 (Wang et al. 2017, Table 4).

A classifier trained on image-level labels still says *where*: its per-label heatmap (class activation map
for the ``gap``/``wang2017`` heads, the attention mask for ``attention``; :meth:`CxrModel.heatmaps`). This
module runs a finished run's model over the images that have ground-truth boxes (all of them in the
official test list: 984 boxes on 880 images in the full release, 60 on 55 in the bundled sample), turns
each label's heatmap into boxes the paper's way and scores them:

1. the heatmap of the box's label, at the run's image size and from the run's image source, so it is the
   model exactly as evaluated;
2. :func:`cxr_bench.metrics.localization.heatmap_to_boxes`: normalised to [0, 255], thresholds 60 and
   180, one box per connected region, mapped to the 1024-px frame of BBox_List (the heatmap covers the
   whole radiograph, so heatmap cell edges map linearly onto the 1024 x 1024 frame);
3. :func:`cxr_bench.metrics.localization.localization_table`: accuracy and average false positives at
   T(IoBB) in {0.1, 0.25, 0.5, 0.75, 0.9} and T(IoU) in {0.1, ..., 0.7}, per label.

Outputs, beside the run's other artifacts: ``localization.csv`` (the table), ``localization.json``
(summary), ``localization_boxes.csv`` (every detected box) and
``figures/localization.png`` (heatmap, ground-truth and detected boxes on a few images). The box math
is the metrics module's; this module owns only the pipeline around it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import RunConfig
from ..data.release import NIHRelease
from ..errors import ConfigError, RunStoreError
from ..metrics.localization import BBOX_LABELS, IOBB_THRESHOLDS, heatmap_to_boxes, localization_table
from ..utils.io import atomic_write_json, atomic_write_text, read_json
from ..utils.progress import progress as progress_bar

log = logging.getLogger(__name__)

__all__ = [
    "BBOX_LABELS", "BBOX_FRAME", "HEATMAP_THRESHOLDS", "LocalizationResult", "load_run_model",
    "compute_heatmaps", "detect_boxes", "score_detections", "localize_run", "plot_localization",
]

# The eight labels of BBox_List_2017, canonical names (the file's "Infiltrate" is Infiltration).
# BBox_List_2017 coordinates are pixels of the 1024 x 1024 PNGs of the NIH release.
BBOX_FRAME = 1024
# Wang et al. 2017, section 4.2: boxes around the regions above 60 and above 180 of the [0, 255] map.
HEATMAP_THRESHOLDS: tuple[float, ...] = (60, 180)
CHECKPOINTS = ("best.pt", "last.pt")
FIGURE_NAME = "localization.png"


@dataclass
class LocalizationResult:
    """What :func:`localize_run` produced: the table, the summary and the files written."""

    table: pd.DataFrame  # label, metric, threshold, accuracy, afp, n_gt, n_images
    detections: pd.DataFrame  # image, label, x, y, w, h (1024-px frame)
    summary: dict[str, Any]
    csv_path: Path
    json_path: Path
    boxes_path: Path
    figure_path: Path | None


# ---------------------------------------------------------------------------------------------- run
def _read_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunStoreError(f"{run_dir} is not a run directory: no config.json (pass the folder of one run, "
                            "<out>/<suite>/<run_id>/)")
    raw = read_json(path)
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _find_checkpoint(run_dir: Path, checkpoint: str) -> Path:
    ckpt_dir = run_dir / "checkpoints"
    if checkpoint != "auto":
        path = Path(checkpoint)
        path = path if path.is_absolute() or path.exists() else ckpt_dir / checkpoint
        if not path.is_file():
            raise RunStoreError(f"checkpoint {path} does not exist; known: {', '.join(CHECKPOINTS)} in {ckpt_dir}")
        return path
    for name in CHECKPOINTS:
        if (ckpt_dir / name).is_file():
            return ckpt_dir / name
    raise RunStoreError(f"{run_dir} has no trained model ({' or '.join(CHECKPOINTS)} in {ckpt_dir}); "
                        "finish the run first (`cxr-bench run` resumes it)")


def load_run_model(run_dir: str | os.PathLike, *, checkpoint: str = "auto", device: str | torch.device = "cpu",
                   config: RunConfig | None = None) -> tuple[RunConfig, torch.nn.Module, Path]:
    """The run's config and its trained model (eval mode, on ``device``), and the checkpoint used.

    ``config`` is the run's config when the caller holds it typed (a sweep's run record); None reads
    ``config.json``. The plugins the config names are imported either way (those already imported are not
    re-run).
    ``checkpoint`` is ``auto`` (``best.pt``, else ``last.pt``), a file name in ``checkpoints/`` or a path.
    The checkpoint is read with ``weights_only=True`` (no code runs); the model is rebuilt from the config
    with :func:`cxr_bench.models.create_model` and gets the checkpoint's state dict, strictly.
    """
    from ..data.labels import get_label_set
    from ..plugins import import_plugins
    from .checkpoint import load_checkpoint, load_model_state
    from .trainer import build_model

    run_dir = Path(run_dir)
    cfg = config if config is not None else _read_run_config(run_dir)
    # A no-op for modules already imported (a sweep's own plugins); a run of an earlier sweep may name others.
    import_plugins(cfg.imports, f"{run_dir / 'config.json'}: config key 'imports'")
    path = _find_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    if "model" not in state:
        raise RunStoreError(f"checkpoint {path} holds no model state (keys: {', '.join(sorted(state))})")
    labels = get_label_set(cfg.data.label_set).labels
    # The engine's one mapping from config to model; no pretrained weights: the checkpoint replaces them.
    model = build_model(cfg.replace(**{"model.pretrained": None}), labels)
    load_model_state(model, state["model"], path)
    return cfg, model.to(device).eval(), path


# ---------------------------------------------------------------------------------------------- heatmaps
def _box_images(release: Any, label_indices: Mapping[str, int]) -> tuple[pd.DataFrame, np.ndarray]:
    """Ground-truth boxes of the scored labels and the metadata rows of their images (sorted by name)."""
    boxes = release.bboxes
    if boxes is None or len(boxes) == 0:
        raise ConfigError(f"the release at {release.root} has no BBox_List_2017.csv; localization needs it "
                          "(it comes with the NIH download)")
    unscored = sorted(set(boxes["label"]) - set(label_indices))
    if unscored:
        log.warning("boxes of %s are not scored: not labels of this run's label set", ", ".join(unscored))
    boxes = boxes[boxes["label"].isin(list(label_indices))].reset_index(drop=True)
    names = sorted(set(boxes["image"]))
    position = pd.Series(np.arange(len(release.metadata)), index=release.metadata["image"])
    rows = position.loc[names].to_numpy(dtype=np.int64)
    return boxes, rows


def _dataset(cfg: RunConfig, release: Any, rows: np.ndarray) -> Any:
    """The images of ``rows`` at the run's size, from the run's image source.

    With ``data.source = "cache"`` this is the run's own cache, found by the engine's
    :func:`~cxr_bench.engine.trainer.run_cache` under the same key (nothing is rebuilt), so the model
    sees exactly the pixels it was evaluated on; images outside that cache, or a PNG-source run, are
    decoded from the PNGs with the run's resize method (the cache's decoder, identical pixels).
    """
    from ..data.datasets import CXRDataset
    from .trainer import run_cache

    cache = None
    if cfg.data.source == "cache":
        cache = run_cache(cfg, release)
        names = release.metadata["image"].to_numpy(dtype=object)[rows]
        if cache is not None and (cache.slots(names) < 0).any():
            log.info("some box images are not in the run's cache %s; decoding the PNGs instead", cache.dir)
            cache = None
    return CXRDataset(release, rows, cfg.data.label_set, cache=cache, size=cfg.data.image_size,
                      conversion=cfg.data.grayscale, resize=cfg.data.resize, augment="none", seed=cfg.seed)


@torch.no_grad()
def compute_heatmaps(model: torch.nn.Module, dataset: Any, label_indices: Sequence[int], *,
                     batch_size: int = 16, device: str | torch.device = "cpu", thumbnail: int = 256,
                     progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps ``(N, len(label_indices), h, w)`` float32 of every dataset item, and the items' images
    subsampled to at most ``thumbnail`` px a side, uint8 (for the figure: 880 full-size 1024-px images
    would hold a gigabyte for four panels).

    Inputs are the dataset's uint8 images scaled to [0, 1], the same conversion the engine feeds.
    """
    from torch.utils.data import DataLoader

    from .evaluate import to_model_input

    device = torch.device(device)
    index = torch.as_tensor(list(label_indices), dtype=torch.long)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    maps: list[np.ndarray] = []
    images: list[np.ndarray] = []
    for img, _target, _row in progress_bar(loader, desc="heatmaps", unit="batch", enabled=progress):
        hm = model.heatmaps(to_model_input(img, device))  # type: ignore[operator]  # an nn.Module attribute types as Tensor | Module
        maps.append(hm[:, index.to(hm.device)].float().cpu().numpy())
        step = max(1, math.ceil(img.shape[-1] / thumbnail))
        images.append(img[:, 0, ::step, ::step].numpy())
    return np.concatenate(maps), np.concatenate(images)


# ---------------------------------------------------------------------------------------------- scoring
def detect_boxes(heatmap: np.ndarray, frame: int = BBOX_FRAME,
                 thresholds: Sequence[float] = HEATMAP_THRESHOLDS) -> np.ndarray:
    """Boxes ``(K, 4)`` (x, y, w, h) in the ``frame``-px image from one ``(h, w)`` heatmap of a whole image.

    The model saw the whole radiograph resized to a square, so its heatmap spans the whole ``frame x frame``
    BBox_List image: cell edges map to frame edges (the convention of
    :func:`~cxr_bench.metrics.localization.heatmap_to_boxes`), and a region of cells ``c0..c1`` spans
    ``[c0 * frame / w, (c1 + 1) * frame / w)``.
    """
    return heatmap_to_boxes(heatmap, thresholds=thresholds, out_size=frame)


def score_detections(heatmaps: np.ndarray, names: Sequence[str], labels: Sequence[str],
                     boxes: pd.DataFrame, *, frame: int = BBOX_FRAME,
                     thresholds: Sequence[float] = HEATMAP_THRESHOLDS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score heatmaps ``(N, L, h, w)`` of images ``names`` (labels ``labels``) against ``boxes``.

    For each label, only the images with a ground-truth box of that label are scored (as in the paper).
    Returns ``(table, detections)``: the Table-4 layout of
    :func:`~cxr_bench.metrics.localization.localization_table` and every detected box.
    """
    if heatmaps.shape[:2] != (len(names), len(labels)):
        raise ValueError(f"heatmaps of shape {heatmaps.shape} for {len(names)} images x {len(labels)} labels")
    pos = {n: i for i, n in enumerate(names)}
    det: dict[str, list[np.ndarray]] = {}
    gt: dict[str, list[np.ndarray]] = {}
    found: list[pd.DataFrame] = []
    for li, label in enumerate(labels):
        sub = boxes[boxes["label"] == label]
        if sub.empty:
            continue
        det[label], gt[label] = [], []
        for name, g in sub.groupby("image", sort=True):
            if name not in pos:
                raise ValueError(f"no heatmap for image {name!r} that has a {label} box")
            d = detect_boxes(heatmaps[pos[name], li], frame, thresholds)
            det[label].append(d)
            gt[label].append(g[["x", "y", "w", "h"]].to_numpy(dtype=np.float64))
            found.append(pd.DataFrame({"image": name, "label": label, "x": d[:, 0], "y": d[:, 1],
                                       "w": d[:, 2], "h": d[:, 3]}))
    table = localization_table(det, gt)
    detections = (pd.concat(found, ignore_index=True) if found else
                  pd.DataFrame(columns=["image", "label", "x", "y", "w", "h"]))
    return table, detections


# ---------------------------------------------------------------------------------------------- figure
def plot_localization(path: str | os.PathLike, images: np.ndarray, heatmaps: np.ndarray, names: Sequence[str],
                      labels: Sequence[str], boxes: pd.DataFrame, detections: pd.DataFrame, *,
                      n: int = 4, frame: int = BBOX_FRAME, title: str = "") -> Path:
    """PNG of up to ``n`` images: the label's heatmap over the radiograph, ground-truth box (green) and
    detected boxes (red, dashed). One image per label first, so the figure shows several findings.

    The heatmap is drawn as the box rule sees it (normalised to [0, 255] per image) on a sequential colour
    map, with a colour bar marking the rule's thresholds; a map of 4 x 4 cells or fewer gets a note, since
    its boxes can only be unions of cells."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    pos = {name: i for i, name in enumerate(names)}
    picks: list[tuple[str, str]] = []
    for label in labels:  # one per label, then fill up in name order
        sub = boxes[boxes["label"] == label]
        if len(sub) and len(picks) < n:
            picks.append((sorted(sub["image"])[0], label))
    for name, label in sorted(set(zip(boxes["image"], boxes["label"]))):
        if len(picks) >= n:
            break
        if (name, label) not in picks:
            picks.append((name, label))
    cols = min(4, max(1, len(picks)))
    rows = max(1, math.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1.0, 3.4 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    shown = None
    for ax, (name, label) in zip(axes.ravel(), picks):
        i, li = pos[name], list(labels).index(label)
        hm = heatmaps[i, li].astype(np.float64)
        span = float(hm.max() - hm.min())
        hm = (hm - hm.min()) / span * 255.0 if span > 0 else np.zeros_like(hm)
        # Both the image and the heatmap are drawn over the whole frame, the mapping the boxes use.
        ax.imshow(images[i], cmap="gray", extent=(0, frame, frame, 0))
        shown = ax.imshow(hm, cmap="magma", alpha=0.5, vmin=0, vmax=255, extent=(0, frame, frame, 0),
                          interpolation="nearest")
        for _, b in boxes[(boxes["image"] == name) & (boxes["label"] == label)].iterrows():
            ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor="lime", linewidth=1.8))
        for _, b in detections[(detections["image"] == name) & (detections["label"] == label)].iterrows():
            ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor="red", linewidth=1.2,
                                   linestyle="--"))
        ax.set_xlim(0, frame)
        ax.set_ylim(frame, 0)
        ax.set_title(f"{name}\n{label}", fontsize=8)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, ticks=[0, *HEATMAP_THRESHOLDS, 255])
        bar.set_label("heatmap, normalised to [0, 255] per image\n(box thresholds at 60 and 180)", fontsize=8)
    h, w = heatmaps.shape[2:]
    note = f"\nheatmaps are {h} x {w} cells: every box is a union of cells" if h * w <= 16 else ""
    fig.suptitle((title or "heatmap, ground truth (green), detected boxes (red)") + note, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- pipeline
def localize_run(run_dir: str | os.PathLike, *, config: RunConfig | None = None, release: NIHRelease | None = None,
                 data_root: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 checkpoint: str = "auto", device: str = "auto", batch_size: int | None = None, n_figure: int = 4,
                 progress: bool | None = None) -> LocalizationResult:
    """Heatmaps -> boxes -> Table 4 for one finished run; writes the files listed in the module docstring.

    ``config`` is the run's config when the caller holds it typed (None: read from ``config.json``, see
    :func:`load_run_model`); ``release`` the release already open at the run's data root (None: opened
    here), so a caller localizing several runs of one root opens it once. ``data_root`` overrides the
    run's ``data.root`` (None keeps it: the bundled sample when the run used it). ``out`` is the table's
    path (default ``<run_dir>/localization.csv``); the summary, detections and figure go beside it
    (``<stem>.json``, ``<stem>_boxes.csv``) and to ``<run_dir>/figures/``.
    """
    from ..data.labels import get_label_set
    from .distributed import resolve_device

    run_dir = Path(run_dir)
    if release is not None and data_root is not None:
        raise ValueError("localize_run: pass the open release or a data root, not both")
    dev = resolve_device(device)
    cfg, model, ckpt = load_run_model(run_dir, checkpoint=checkpoint, device=dev, config=config)
    if data_root is not None:
        cfg = cfg.replace(**{"data.root": str(data_root)})  # where, not what: the run id is unchanged
    root = cfg.data.root
    release = release if release is not None else NIHRelease.open(root)
    label_set = get_label_set(cfg.data.label_set)
    scored = [lab for lab in BBOX_LABELS if lab in label_set.labels]
    if not scored:
        raise ConfigError(f"label set {label_set.name!r} of {run_dir} has none of the box labels "
                          f"({', '.join(BBOX_LABELS)}); nothing to localize")
    label_indices = {lab: label_set.labels.index(lab) for lab in scored}
    boxes, rows = _box_images(release, label_indices)
    if len(rows) == 0:
        raise ConfigError(f"no boxes of {', '.join(scored)} in {release.bbox_path}")
    dataset = _dataset(cfg, release, rows)
    names = list(release.metadata["image"].iloc[dataset.rows])
    if len(names) < len(rows):  # images missing under the data root: CXRDataset dropped and logged them
        boxes = boxes[boxes["image"].isin(names)].reset_index(drop=True)
        if boxes.empty:
            raise ConfigError(f"none of the {len(rows)} images with boxes was found under {release.root}")
    log.info("localizing %d boxes on %d images with %s (%s)", len(boxes), len(names), ckpt.name, dev)
    heatmaps, images = compute_heatmaps(model, dataset, list(label_indices.values()),
                                        batch_size=batch_size or cfg.eval.batch_size, device=dev,
                                        progress=progress)
    table, detections = score_detections(heatmaps, names, scored, boxes)

    csv_path = Path(out) if out is not None else run_dir / "localization.csv"
    json_path = csv_path.with_suffix(".json")
    boxes_path = csv_path.with_name(f"{csv_path.stem}_boxes.csv")
    atomic_write_text(csv_path, table.to_csv(index=False, lineterminator="\n", float_format="%.6g"))
    atomic_write_text(boxes_path, detections.to_csv(index=False, lineterminator="\n", float_format="%.2f"))
    iobb = table[table["metric"] == "iobb"]
    summary = {
        "run_dir": str(run_dir), "run_id": cfg.run_id(), "checkpoint": str(ckpt),
        "backbone": cfg.model.backbone, "head": cfg.model.head, "label_set": label_set.name,
        "image_size": cfg.data.image_size, "data_root": None if root is None else str(root),
        "bbox_file": str(release.bbox_path), "n_images": len(names), "n_boxes": int(len(boxes)),
        # All boxes of the NIH release are on test-list images; anything else was seen in training.
        "n_images_in_test_list": len(set(names) & set(release.test_names)),
        "heatmap_shape": list(heatmaps.shape[2:]), "thresholds": list(HEATMAP_THRESHOLDS), "frame": BBOX_FRAME,
        "n_gt": {lab: int(n) for lab, n in boxes["label"].value_counts().sort_index().items()},
        "mean_accuracy_iobb": {f"{t:g}": float(iobb[np.isclose(iobb["threshold"], t)]["accuracy"].mean())
                               for t in IOBB_THRESHOLDS},
        "table": str(csv_path), "detections": str(boxes_path),
    }
    figure_path = None
    if n_figure > 0:
        figure_path = plot_localization(run_dir / "figures" / FIGURE_NAME, images, heatmaps, names, scored,
                                        boxes, detections, n=n_figure,
                                        title=f"{cfg.model.backbone}/{cfg.model.head} {cfg.run_id()}: heatmap, "
                                              "ground truth (green), detected (red)")
        summary["figure"] = str(figure_path)
    atomic_write_json(json_path, summary)
    log.info("wrote %s, %s", csv_path, json_path)
    return LocalizationResult(table, detections, summary, csv_path, json_path, boxes_path, figure_path)
