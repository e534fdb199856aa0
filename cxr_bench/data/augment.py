"""Training augmentations on uint8 images, a pure function of ``(seed, epoch, row)``, per item or per batch.

An augmentation is registered in :data:`AUGMENTATIONS` by the name configs use (``data.augment``). Its
randomness is a few uniform draws per item from :func:`item_rng` ``(seed, epoch, row)``, MONAI-style: no
global seeding, and an item is augmented the same way whichever DataLoader worker fetches it, however
many workers there are, after a resume, and on whichever device the batch is augmented.

Each augmentation has two appliers over the same parameters:

- ``aug(image, rng)``: one ``(1, H, W)`` tensor on the CPU (the DataLoader path), through torchvision's
  own kernels;
- :func:`augment_batch` ``(name, images, seed, epoch, rows)``: a ``(B, 1, H, W)`` batch on any device (the
  GPU-resident path), with the parameters drawn by :func:`item_uniforms` (the same numbers as
  :func:`item_rng`, computed for a whole batch at once) and one batched grid sample.

On the CPU the two give identical pixels; on CUDA ``flip`` is identical and ``light``'s bilinear
resampling differs from the CPU's by at most one gray level in a small fraction of pixels (float
rounding of the sampling grid), see tests/data/test_datasets.py and tests/cuda/.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..registry import Registry

log = logging.getLogger(__name__)

__all__ = ["AUGMENTATIONS", "Augmentation", "item_rng", "item_uniforms", "get_augmentation", "augment_batch",
           "LIGHT_RANGES"]

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Augmentation:
    """One named augmentation: how many uniforms it draws per item, what they mean, how to apply them."""

    name: str
    n_draws: int
    # (B, n_draws) uniforms in [0, 1), image height and width -> named per-item parameter arrays.
    params: Callable[[np.ndarray, int, int], Params]
    # One uint8 (1, H, W) CPU image and row k of the parameters -> augmented image.
    apply_item: Callable[[torch.Tensor, Params, int], torch.Tensor]
    # A uint8 (B, 1, H, W) batch on any device and its parameters -> augmented batch.
    apply_batch: Callable[[torch.Tensor, Params], torch.Tensor]

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.n_draws == 0:
            return image
        u = rng.random(self.n_draws)[None, :]
        return self.apply_item(image, self.params(u, *image.shape[-2:]), 0)


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch: a pure function of (seed, epoch, index)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


def get_augmentation(name: str) -> Augmentation:
    return AUGMENTATIONS.get(name)


# ------------------------------------------------------------------------------------------ draws
def _uniform(u: np.ndarray, low: float, high: float) -> np.ndarray:
    # numpy's Generator.uniform(low, high) is low + (high - low) * next_double, in that order.
    return low + (high - low) * u


def _flip_params(u: np.ndarray, h: int, w: int) -> Params:
    # Generator.random() < 0.5, as the per-item draws always were.
    return {"flip": u[:, 0] < 0.5}


# Ranges of the light affine: rotation in degrees, shift as a fraction of the side, scale factor.
LIGHT_RANGES = {"angle": (-5.0, 5.0), "shift": (-0.04, 0.04), "scale": (0.9, 1.1)}


def _light_params(u: np.ndarray, h: int, w: int) -> Params:
    angle, shift, scale = LIGHT_RANGES["angle"], LIGHT_RANGES["shift"], LIGHT_RANGES["scale"]
    return {
        "flip": u[:, 0] < 0.5,
        "angle": _uniform(u[:, 1], *angle),
        # Whole pixels (torchvision's tensor affine takes integer shifts); np.round is Python's round:
        # half to even.
        "tx": np.round(_uniform(u[:, 2], *shift) * w).astype(np.int64),
        "ty": np.round(_uniform(u[:, 3], *shift) * h).astype(np.int64),
        "scale": _uniform(u[:, 4], *scale),
    }


# ------------------------------------------------------------------------------------- appliers
def _flip_item(image: torch.Tensor, p: Params, k: int) -> torch.Tensor:
    return torch.flip(image, dims=(-1,)) if p["flip"][k] else image


def _flip_batch(images: torch.Tensor, p: Params) -> torch.Tensor:
    mask = torch.as_tensor(p["flip"], device=images.device).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def _light_item(image: torch.Tensor, p: Params, k: int) -> torch.Tensor:
    image = _flip_item(image, p, k)
    return F.affine(image, angle=float(p["angle"][k]), translate=[int(p["tx"][k]), int(p["ty"][k])],
                    scale=float(p["scale"][k]), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
                    fill=0)


def _light_batch(images: torch.Tensor, p: Params) -> torch.Tensor:
    return _affine_batch(_flip_batch(images, p), p["angle"], p["tx"], p["ty"], p["scale"])


def _affine_batch(images: torch.Tensor, angle: np.ndarray, tx: np.ndarray, ty: np.ndarray,
                  scale: np.ndarray) -> torch.Tensor:
    """torchvision's tensor ``affine`` (bilinear, fill 0, centre of the image) with one matrix per item.

    torchvision applies one matrix to a whole batch; this builds its per-item sampling grids the way its
    ``_affine_grid`` builds one, and hands them to its own grid transform (fill mask, rounding), so a
    CPU batch gives exactly the pixels of the per-item calls.
    """
    from torchvision.transforms.v2.functional._geometry import _apply_grid_transform, _get_inverse_affine_matrix

    b, _, h, w = images.shape
    mats = [_get_inverse_affine_matrix([0.0, 0.0], float(angle[k]), [float(tx[k]), float(ty[k])],
                                       float(scale[k]), [0.0, 0.0]) for k in range(b)]
    dev = images.device
    theta = torch.tensor(mats, dtype=torch.float32).view(b, 2, 3).to(dev, non_blocking=True)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=dev))
    grid = base.view(1, h * w, 3).expand(b, h * w, 3).bmm(rescaled).view(b, h, w, 2)
    return _apply_grid_transform(images, grid, "bilinear", fill=0)


def _identity_item(image: torch.Tensor, p: Params, k: int) -> torch.Tensor:
    return image


def _identity_batch(images: torch.Tensor, p: Params) -> torch.Tensor:
    return images


def _register(aug: Augmentation) -> None:
    AUGMENTATIONS.add(aug.name, aug)


_register(Augmentation("none", 0, lambda u, h, w: {}, _identity_item, _identity_batch))
# Horizontal flip with probability 0.5 (left/right is not diagnostic for the 14 findings).
_register(Augmentation("flip", 1, _flip_params, _flip_item, _flip_batch))
# flip, then a small affine: rotation +-5 deg, shift +-4 %, scale 0.9-1.1 (bilinear, zero fill). Small on
# purpose: radiographs are acquired in a standard position, and larger warps move anatomy where no real
# image has it.
_register(Augmentation("light", 5, _light_params, _light_item, _light_batch))


def augment_batch(name: str, images: torch.Tensor, seed: int, epoch: int, rows: Sequence[int] | np.ndarray
                  ) -> torch.Tensor:
    """Augment a uint8 ``(B, 1, H, W)`` batch (any device) whose items are metadata rows ``rows``.

    Item ``k`` gets the draw of ``item_rng(seed, epoch, rows[k])``, as on the per-item path.
    """
    aug = get_augmentation(name)
    if aug.n_draws == 0:
        return images
    u = item_uniforms(seed, epoch, rows, aug.n_draws)
    return aug.apply_batch(images, aug.params(u, *images.shape[-2:]))


# ---------------------------------------------------------------- item_rng's draws for a whole batch
# numpy's SeedSequence (O'Neill's seed_seq_fe hash, pool of 4 words) and PCG64 (128-bit LCG, XSL-RR output)
# written over arrays, so the first draws of many item generators cost microseconds instead of one
# generator construction (~40 us) each. Checked against numpy at first use; a mismatch (a numpy that
# seeds differently) falls back to building each generator.
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_HASH = {"init_a": 0x43B0D7E5, "mult_a": 0x931E8875, "init_b": 0x8B51F9DD, "mult_b": 0x58F38DED,
         "mix_l": 0xCA01F9DD, "mix_r": 0x4973F715}
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645


def _words(n: int) -> list[int]:
    """SeedSequence's 32-bit little-endian words of a non-negative int (0 is one word)."""
    out = [n & 0xFFFFFFFF]
    n >>= 32
    while n:
        out.append(n & 0xFFFFFFFF)
        n >>= 32
    return out


def _seed_words(entropy: np.ndarray) -> np.ndarray:
    """``SeedSequence(entropy).generate_state(8, uint32)`` for each row of a (B, L) uint32 entropy array."""
    e = entropy.astype(np.uint32)
    b, n_words = e.shape
    with np.errstate(over="ignore"):
        const = [np.uint32(_HASH["init_a"])]

        def hashmix(v: Any) -> Any:  # uint32 arrays (numpy's stubs lose the dtype through ^ and *)
            v = v ^ const[0]
            const[0] = np.uint32(const[0] * np.uint32(_HASH["mult_a"]))
            v = v * const[0]
            return v ^ (v >> np.uint32(16))

        def mix(x: Any, y: Any) -> Any:
            r = np.uint32(_HASH["mix_l"]) * x - np.uint32(_HASH["mix_r"]) * y
            return r ^ (r >> np.uint32(16))

        zero = np.zeros(b, np.uint32)
        pool = [hashmix(e[:, i] if i < n_words else zero) for i in range(4)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        for src in range(4, n_words):
            for dst in range(4):
                pool[dst] = mix(pool[dst], hashmix(e[:, src]))
        hb = np.uint32(_HASH["init_b"])
        out = []
        for i in range(8):
            v = pool[i % 4] ^ hb
            hb = np.uint32(hb * np.uint32(_HASH["mult_b"]))
            v = v * hb
            out.append(v ^ (v >> np.uint32(16)))
    return np.stack(out, 1)


def _add128(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    out, carry = [], np.uint64(0)
    for k in range(4):  # 32-bit limbs held in uint64: sums never overflow
        v = a[k] + b[k] + carry
        out.append(v & _M32)
        carry = v >> _S32
    return out


def _mul128(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    cols = [np.zeros_like(a[0]) for _ in range(4)]
    for i in range(4):
        for j in range(4 - i):
            p = a[i] * b[j]  # < 2**64: 32 x 32 bits
            cols[i + j] += p & _M32
            if i + j < 3:
                cols[i + j + 1] += p >> _S32
    return _add128(cols, [np.zeros_like(a[0])] * 4)


def _uniforms_vectorised(seed: int, epoch: int, rows: np.ndarray, n: int) -> np.ndarray:
    b = len(rows)
    prefix = np.array(_words(int(seed)) + _words(int(epoch)), dtype=np.uint32)
    entropy = np.concatenate([np.broadcast_to(prefix, (b, len(prefix))), rows.astype(np.uint32)[:, None]], 1)
    w = _seed_words(entropy).astype(np.uint64)
    # generate_state(4, uint64) -> val[k] = w[2k] | w[2k+1] << 32; PCG64 seeds state = val0:val1 (high:low)
    # and increment = (val2:val3 << 1) | 1, then steps as pcg_setseq_128_srandom_r does.
    init = [w[:, 2], w[:, 3], w[:, 0], w[:, 1]]
    seq = [w[:, 6], w[:, 7], w[:, 4], w[:, 5]]
    inc, carry = [], np.zeros(b, np.uint64)
    for k in range(4):
        inc.append(((seq[k] << np.uint64(1)) | carry) & _M32)
        carry = seq[k] >> np.uint64(31)
    inc[0] = inc[0] | np.uint64(1)
    mult = [np.full(b, (_PCG_MULT >> (32 * k)) & 0xFFFFFFFF, dtype=np.uint64) for k in range(4)]
    state = _add128(_add128(_mul128([np.zeros(b, np.uint64)] * 4, mult), inc), init)
    state = _add128(_mul128(state, mult), inc)
    out = np.empty((b, n), np.float64)
    for t in range(n):
        state = _add128(_mul128(state, mult), inc)
        lo = state[0] | (state[1] << _S32)
        hi = state[2] | (state[3] << _S32)
        x = hi ^ lo
        rot = hi >> np.uint64(58)
        r = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
        out[:, t] = (r >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return out


def _uniforms_reference(seed: int, epoch: int, rows: np.ndarray, n: int) -> np.ndarray:
    return np.stack([item_rng(seed, epoch, int(r)).random(n) for r in rows]) if len(rows) else np.empty((0, n))


@functools.cache
def _vectorised_matches_numpy() -> bool:
    rows = np.array([0, 1, 7, 2**31 + 5, 4_000_000_000], dtype=np.int64)
    for seed, epoch in ((0, 0), (12345, 7), (2**40 + 3, 2**33)):
        if not np.array_equal(_uniforms_vectorised(seed, epoch, rows, 5), _uniforms_reference(seed, epoch, rows, 5)):
            log.warning("this numpy seeds PCG64 differently from cxr-bench's vectorised copy; augmentation "
                        "draws fall back to one generator per item (slower, same numbers)")
            return False
    return True


def item_uniforms(seed: int, epoch: int, rows: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """(B, n) float64: the first ``n`` ``random()`` draws of ``item_rng(seed, epoch, row)`` for each row."""
    rows = np.asarray(rows, dtype=np.int64)
    if seed < 0 or epoch < 0 or (rows.size and (rows.min() < 0 or rows.max() >= 2**32)):
        return _uniforms_reference(seed, epoch, rows, n)  # SeedSequence's own errors for negatives
    if n == 0:
        return np.empty((len(rows), 0))
    if _vectorised_matches_numpy():
        return _uniforms_vectorised(seed, epoch, rows, n)
    return _uniforms_reference(seed, epoch, rows, n)
