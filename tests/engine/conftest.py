"""Engine test fixtures: a run config factory over phantom releases, and a larger phantom for learning tests.

Runs here use ``timm:test_resnet`` (timm's 0.37 M-parameter test network, 16 MMACs at 64 px): it learns the
planted lesions in a few epochs on 2 CPU cores, where an ImageNet-sized backbone would need minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cxr_bench.config import RunConfig, deep_merge
from cxr_bench.data.phantoms import make_phantom_release

BASE: dict[str, Any] = {
    # The phantoms carry 6 of chestxray8's 8 labels: Infiltration and Pneumonia have no positives anywhere,
    # which exercises the "label missing from a split" path of every run.
    "data": {"label_set": "chestxray8", "image_size": 32, "val_fraction": 0.25, "workers": 0, "augment": "flip"},
    "model": {"backbone": "timm:test_resnet"},
    "optim": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "scheduler": "cosine"},
    "eval": {"bootstrap": 50, "batch_size": 16},
    "device": "cpu",
    "seed": 0,
}


@pytest.fixture
def run_config() -> Callable[..., RunConfig]:
    """``run_config(root, **sections)`` -> a small CPU RunConfig on the release at ``root``."""

    def make(root: Path, **sections: Any) -> RunConfig:
        d = deep_merge(BASE, sections)
        d = deep_merge(d, {"data": {"root": str(root)}})
        return RunConfig.from_dict(d)

    return make


@pytest.fixture(scope="session")
def learning_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 images (150 patients) at 64 px: enough positives per label for a meaningful val/test AUC."""
    return make_phantom_release(tmp_path_factory.mktemp("learning") / "nih", n_patients=150,
                                images_per_patient=2, size=64, seed=0)
