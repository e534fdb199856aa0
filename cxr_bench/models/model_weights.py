"""A whole trained model's weights (backbone and head) loaded into a :class:`~cxr_bench.models.CxrModel`.

What ``cxr-bench evaluate --model B --head H --weights FILE`` accepts (read without unpickling arbitrary
objects, see :func:`cxr_bench.models.weights.read_state_dict`; ``.safetensors`` or a torch file, a state dict
or a dict wrapping one under ``state_dict`` / ``model``, ``module.`` / ``_orig_mod.`` prefixes removed):

- **cxr-bench layout**: the state dict of a ``CxrModel`` (keys ``backbone.net.*`` and ``head.*``), as
  ``torch.save(model.state_dict())`` of a model from :func:`~cxr_bench.models.create_model` writes it, or a
  run's ``checkpoints/best.pt``. Any head; loaded strictly.
- **native layout**: the state dict of the plain torchvision / timm network with its classifier replaced by
  a linear layer of one output per label (``torchvision.models.resnet50(num_classes=14)``,
  ``timm.create_model("resnet18", num_classes=14)``, or ``model.fc = nn.Linear(512, 14)`` after loading
  ImageNet weights). Its keys are the backbone's own plus the classifier's (``fc.*``, ``classifier.*``); the
  classifier becomes the ``gap`` head's linear layer, which is what those networks compute (global average
  pool, then the linear layer), so only ``--head gap`` takes this layout.

A ``CxrModel`` normalises its gray input itself: with ``channels = "replicate"`` it repeats the gray image
to three channels and normalises them with the backbone's ImageNet statistics, so a native network trained
on gray radiographs copied to RGB and normalised that way gives the same logits here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import WeightsError
from ..utils.io import sha256_file
from .factory import CxrModel
from .weights import load_backbone_state, read_state_dict

log = logging.getLogger(__name__)

__all__ = ["load_model_weights"]

_CXR_PREFIXES = ("backbone.", "head.")


def load_model_weights(model: CxrModel, path: str | os.PathLike) -> dict[str, Any]:
    """Load ``path`` (either layout above) into ``model``; returns ``{"path", "sha256", "layout"}``.

    Every tensor of the model must come from the file: a missing, unknown or misshapen key is a
    :class:`WeightsError` naming the file, the keys and what to do.
    """
    path = Path(path)
    sd = read_state_dict(path, whole=True)
    if any(k.startswith(_CXR_PREFIXES) for k in sd):
        layout = "cxr-bench"
        _load_whole(model, sd, path)
    else:
        layout = "native"
        _load_native(model, sd, path)
    info = {"path": str(path.resolve()), "sha256": sha256_file(path), "layout": layout}
    log.info("loaded %s + %s weights from %s (%s layout, sha256 %s)", model.backbone_name, model.head_name, path,
             layout, info["sha256"][:12])
    return info


def _load_whole(model: CxrModel, sd: dict[str, Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    mismatched = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = [f"{len(v)} {what}: {', '.join(v[:3])}" + (" ..." if len(v) > 3 else "")
                for what, v in (("missing key(s)", missing), ("unexpected key(s)", unexpected),
                                ("shape mismatch(es)", mismatched)) if v]
    if problems:
        raise WeightsError(f"{path} does not fit {model.backbone_name} + head {model.head_name!r} with "
                           f"{model.num_labels} labels: {'; '.join(problems)}. Pass the --model, --head and "
                           "--label-set (or --set model.head_kwargs...) the weights were trained with")
    model.load_state_dict(sd, strict=False)


def _load_native(model: CxrModel, sd: dict[str, Tensor], path: Path) -> None:
    backbone = model.backbone
    sd = backbone.remap_state_dict(sd)
    own = backbone.net.state_dict()
    extra = {k: v for k, v in sd.items() if k not in own}
    if model.head_name != "gap":
        raise WeightsError(
            f"{path} holds a plain {backbone.name} network (no 'backbone.'/'head.' keys), whose classifier "
            f"maps onto the 'gap' head only, not {model.head_name!r}; pass --head gap, or save the state dict "
            "of the cxr-bench model (create_model(...).state_dict())")
    d, n = backbone.num_features, model.num_labels
    weights = [k for k, v in extra.items() if k.endswith(".weight") and v.ndim == 2]
    if len(weights) != 1:
        found = ", ".join(f"{k} {tuple(extra[k].shape)}" for k in weights) or "none"
        raise WeightsError(
            f"{path}: expected one linear classifier ({n} x {d}) besides the {backbone.name} backbone's keys, "
            f"found {found}. Replace the network's classifier by nn.Linear({d}, {n}) before saving")
    w_key = weights[0]
    b_key = w_key[: -len("weight")] + "bias"
    if tuple(extra[w_key].shape) != (n, d) or b_key not in extra or tuple(extra[b_key].shape) != (n,):
        raise WeightsError(
            f"{path}: classifier {w_key} has shape {tuple(extra[w_key].shape)}"
            f"{'' if b_key in extra else ' and no bias'}; expected ({n}, {d}) with a bias: {n} labels of the "
            f"label set on {d} features of {backbone.name}")
    others = sorted(k for k in extra if k not in (w_key, b_key) and k not in backbone.dropped_keys)
    if others:
        raise WeightsError(f"{path}: {len(others)} key(s) belong to neither the {backbone.name} backbone nor its "
                           f"classifier: {', '.join(others[:3])}. Is it a checkpoint of this architecture?")
    load_backbone_state(backbone, {k: v for k, v in sd.items() if k in own}, origin=str(path))
    model.head.load_state_dict({"fc.weight": extra[w_key], "fc.bias": extra[b_key]})
