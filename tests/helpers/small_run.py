"""The small CPU run the engine and reliability tests train: timm's 0.37 M-parameter test network
(``timm:test_resnet``, 16 MMACs at 64 px), which learns the phantoms' planted lesions in a few epochs on
2 CPU cores where an ImageNet-sized backbone would need minutes.

The phantoms carry 6 of chestxray8's 8 labels: Infiltration and Pneumonia have no positives anywhere, which
exercises the "label missing from a split" path of every run.
"""

from __future__ import annotations

from typing import Any

SMALL_RUN: dict[str, Any] = {
    "data": {"label_set": "chestxray8", "image_size": 32, "val_fraction": 0.25, "workers": 0, "augment": "flip"},
    "model": {"backbone": "timm:test_resnet"},
    "optim": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "scheduler": "cosine"},
    "eval": {"bootstrap": 50, "batch_size": 16},
    "device": "cpu",
    "seed": 0,
}


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"image_size": 32}}`` -> ``{"data.image_size": 32}`` (the form of ``--set`` and
    ``RunConfig.replace``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
