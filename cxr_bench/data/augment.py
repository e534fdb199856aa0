"""Training augmentations on uint8 image tensors, each drawing from its own per-item generator.

An augmentation is ``fn(image, rng) -> image`` on a uint8 ``(1, H, W)`` tensor, registered in
:data:`AUGMENTATIONS` by the name configs use (``data.augment``). The generator comes from
:func:`item_rng` ``(seed, epoch, index)``, MONAI-style: no global seeding, and an item is augmented the same
way whichever DataLoader worker fetches it, however many workers there are, and after a resume.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..registry import Registry

Augmentation = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]

AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch: a pure function of (seed, epoch, index)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


def get_augmentation(name: str) -> Augmentation:
    return AUGMENTATIONS.get(name)


@AUGMENTATIONS.register("none")
def no_augmentation(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    return image


@AUGMENTATIONS.register("flip")
def flip(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Horizontal flip with probability 0.5 (left/right is not diagnostic for the 14 findings)."""
    return torch.flip(image, dims=(-1,)) if rng.random() < 0.5 else image


@AUGMENTATIONS.register("light")
def light(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``flip``, then a small affine: rotation +-5 deg, shift +-4 %, scale 0.9-1.1 (bilinear, zero fill).

    Small on purpose: radiographs are acquired in a standard position, and larger warps move anatomy
    where no real image has it.
    """
    image = flip(image, rng)
    h, w = image.shape[-2:]
    angle = float(rng.uniform(-5.0, 5.0))
    shift = [int(round(rng.uniform(-0.04, 0.04) * w)), int(round(rng.uniform(-0.04, 0.04) * h))]
    scale = float(rng.uniform(0.9, 1.1))
    return F.affine(image, angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR, fill=0)
