"""Fixtures for the runner tests: tiny suite files written by hand, sized for a phantom release.

A tiny run (MobileNetV1, 32 px, one epoch of two steps, 50 bootstrap resamples) takes a few seconds on
one CPU core, so a sweep of two or three of them keeps every test here short.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TINY_BASE = """
[base]
seed = 0
"model.backbone" = "mobilenet_v1"
"data.label_set" = "chestxray14"
"data.image_size" = 32
"data.augment" = "none"
"data.workers" = 0
"loss.name" = "bce"
"optim.optimizer" = "adamw"
"optim.scheduler" = "none"
"optim.batch_size" = 8
"optim.epochs" = {epochs}
"optim.max_steps_per_epoch" = 2
"eval.bootstrap" = 50
"eval.batch_size" = 64
"""


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """``write_suite(blocks, name="tiny", epochs=1, extra="")`` -> path of a suite file with the tiny base."""

    def write(blocks: str, *, name: str = "tiny", epochs: int = 1, extra: str = "") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[suite]\nname = "{name}"\n' + TINY_BASE.format(epochs=epochs) + blocks + extra,
                        encoding="utf-8")
        return path

    return write


# Two runs that differ in the head only; one of them the reference of the pair.
TWO_HEADS = """
[[block]]
name = "heads"
grid = { "model.head" = ["gap", "wang2017"] }
reference = { "model.head" = "gap" }
"""


@pytest.fixture
def two_heads() -> str:
    """The block of a 2-run suite (gap vs wang2017 head), for ``write_suite``."""
    return TWO_HEADS


@pytest.fixture
def two_head_suite(write_suite: Callable[..., Path], two_heads: str) -> Path:
    """A 2-run suite file (gap vs wang2017 head), one epoch each."""
    return write_suite(two_heads)
