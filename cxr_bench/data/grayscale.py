"""Grayscale conversions: the colour-to-gray methods of Kanan & Cottrell (2012) and the tone curves they
collapse to on radiographs, plus :func:`decode_gray`, the one place a PNG becomes an 8-bit gray array.

Kanan & Cottrell, "Color-to-Grayscale: Does the Method Matter in Image Recognition?", PLoS ONE 7(1):
e29740. Channels are in [0, 1]; ``t' = t ** (1/2.2)`` is gamma correction:

============== ===============================================================
intensity      (R + G + B) / 3
gleam          (R' + G' + B') / 3
luminance      0.299 R + 0.587 G + 0.114 B
luma           0.2126 R' + 0.7152 G' + 0.0722 B'
value          max(R, G, B)
luster         (max(R, G, B) + min(R, G, B)) / 2
lightness      CIE L* of Y = 0.2126 R + 0.7152 G + 0.0722 B, divided by 100
*_prime        the method applied to gamma-corrected channels (``intensity_prime`` is therefore
               ``gleam`` under another name; it is kept because the paper's tables list it)
============== ===============================================================

A chest radiograph is single-channel (R = G = B = t), and then every method above reduces to one of three
*tone curves*: ``identity`` (t), ``gamma`` (t'), and ``lstar`` (L*(t) / 100). Those are the variants an
ablation on NIH images can actually tell apart, so they are registered too (``kind="tone"``), and every
colour method says which tone curve it becomes on gray input (``Conversion.tone``). A tone curve given a
genuinely colour image first reduces it with ``luminance`` (the Rec. 601 weights Pillow's ``convert("L")``
uses), then applies the curve.

Every conversion has an exact 256-entry lookup table for gray input, computed by running its own formula on
the gray ramp, so gray images (all NIH files) are converted with one table lookup (``Image.point``) and the
table cannot disagree with the formula.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops

from ..errors import ImageError
from ..registry import Registry

log = logging.getLogger(__name__)

GAMMA = 2.2
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

ColourFn = Callable[[np.ndarray], np.ndarray]  # (..., 3) float64 in [0, 1] -> (...) float64 in [0, 1]


# ----------------------------------------------------------------------------------------- formulas
def gamma_correct(t: np.ndarray) -> np.ndarray:
    """``t' = t ** (1/2.2)`` (Kanan & Cottrell's gamma correction), for t in [0, 1]."""
    return np.power(t, 1.0 / GAMMA)


def cie_lstar(y: np.ndarray) -> np.ndarray:
    """CIE 1976 L* of relative luminance ``y`` in [0, 1], scaled to [0, 1] (L* / 100)."""
    delta = 6.0 / 29.0
    f = np.where(y > delta**3, np.cbrt(y), y / (3 * delta**2) + 4.0 / 29.0)
    return (116.0 * f - 16.0) / 100.0


def _mean(rgb: np.ndarray) -> np.ndarray:
    return rgb.mean(axis=-1)


def _rec601(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _rec709(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def _value(rgb: np.ndarray) -> np.ndarray:
    return rgb.max(axis=-1)


def _luster(rgb: np.ndarray) -> np.ndarray:
    return (rgb.max(axis=-1) + rgb.min(axis=-1)) / 2.0


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Conversion:
    """A named gray conversion.

    ``kind`` is ``"colour"`` (a Kanan & Cottrell method: it only differs from others on colour input) or
    ``"tone"`` (a curve on gray values: what distinguishes methods on radiographs). ``tone`` names the
    tone curve the conversion equals on gray (R = G = B) input.
    """

    name: str
    kind: str
    tone: str
    formula: str
    colour_fn: ColourFn = field(repr=False, compare=False)

    def convert_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Float gray in [0, 1] from float RGB ``(..., 3)`` in [0, 1]."""
        return np.clip(self.colour_fn(np.asarray(rgb, dtype=np.float64)), 0.0, 1.0)

    @cached_property
    def lut(self) -> np.ndarray:
        """uint8 (256,) table: the conversion of the gray pixel (t, t, t), t = 0..255."""
        ramp = np.arange(256, dtype=np.float64) / 255.0
        return to_uint8(self.convert_rgb(np.repeat(ramp[:, None], 3, axis=1)))

    @cached_property
    def is_identity_on_gray(self) -> bool:
        return bool(np.array_equal(self.lut, np.arange(256, dtype=np.uint8)))


CONVERSIONS: Registry[Conversion] = Registry("grayscale conversion")


def _register(name: str, kind: str, tone: str, formula: str, fn: ColourFn) -> None:
    CONVERSIONS.add(name, Conversion(name=name, kind=kind, tone=tone, formula=formula, colour_fn=fn))


def _primed(fn: ColourFn) -> ColourFn:
    return lambda rgb: fn(gamma_correct(rgb))


# Tone curves first: ``identity`` is the default everywhere.
_register("identity", "tone", "identity", "t (on colour input: luminance, as Pillow's convert('L'))", _rec601)
_register("gamma", "tone", "gamma", "t ** (1/2.2) (on colour input: of luminance)",
          lambda rgb: gamma_correct(_rec601(rgb)))
_register("lstar", "tone", "lstar", "CIE L*(t) / 100 (on colour input: of luminance)",
          lambda rgb: cie_lstar(_rec601(rgb)))

_register("intensity", "colour", "identity", "(R + G + B) / 3", _mean)
_register("gleam", "colour", "gamma", "(R' + G' + B') / 3", _primed(_mean))
_register("luminance", "colour", "identity", "0.299 R + 0.587 G + 0.114 B", _rec601)
_register("luma", "colour", "gamma", "0.2126 R' + 0.7152 G' + 0.0722 B'", _primed(_rec709))
_register("value", "colour", "identity", "max(R, G, B)", _value)
_register("luster", "colour", "identity", "(max(R, G, B) + min(R, G, B)) / 2", _luster)
_register("lightness", "colour", "lstar", "L*(0.2126 R + 0.7152 G + 0.0722 B) / 100",
          lambda rgb: cie_lstar(_rec709(rgb)))
_register("intensity_prime", "colour", "gamma", "(R' + G' + B') / 3 (= gleam)", _primed(_mean))
_register("luminance_prime", "colour", "gamma", "0.299 R' + 0.587 G' + 0.114 B'", _primed(_rec601))
_register("value_prime", "colour", "gamma", "max(R', G', B')", _primed(_value))
_register("luster_prime", "colour", "gamma", "(max(R', G', B') + min(R', G', B')) / 2",
          _primed(_luster))


def get_conversion(name: str | Conversion) -> Conversion:
    """The registered conversion ``name`` (a :class:`Conversion` is returned as is)."""
    if isinstance(name, Conversion):
        return name
    return CONVERSIONS.get(name)


def tone_curves() -> list[str]:
    """Names of the conversions that differ on single-channel radiographs (``kind == "tone"``)."""
    return [n for n, c in CONVERSIONS.items() if c.kind == "tone"]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 by rounding to nearest (not truncation)."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------------ decoding
def open_png(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as a PNG and decode it fully, or raise :class:`ImageError` saying why not.

    Rejects an empty file, a file that is not a PNG (by signature), and a truncated or corrupt one. A file
    named ``.jpg`` / ``.jpeg`` may be a JPEG (external sets such as CheXpert ship JPEGs; NIH's ``.png``
    names must hold PNGs).
    """
    path = Path(path)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if not head:
                raise ImageError(f"{path}: empty file (0 bytes)")
            if jpeg and head[:3] == _JPEG_MAGIC:
                fmt = "JPEG"
            elif head != _PNG_MAGIC:
                raise ImageError(f"{path}: not a {'JPEG or ' if jpeg else ''}PNG file (starts with {head[:4]!r})")
            else:
                fmt = "PNG"
            fh.seek(0)
            im = Image.open(fh, formats=[fmt])
            im.load()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except Exception as e:  # noqa: BLE001 - Pillow/zlib raise OSError, SyntaxError, ValueError, zlib.error
        raise ImageError(f"{path}: cannot decode {'JPEG/' if jpeg else ''}PNG ({type(e).__name__}: {e})") from e
    return im


def gray_image(im: Image.Image, conversion: str | Conversion = "identity", *,
               source: str | os.PathLike = "<image>") -> Image.Image:
    """An 8-bit mode ``L`` image of ``im`` under ``conversion`` (Pillow image in, Pillow image out).

    - ``L``, ``1``, ``P`` (palette expanded), ``LA`` (alpha dropped): gray, converted by lookup table.
    - ``I;16*`` / ``I``: 16-bit gray rescaled by its true bit range (``2**bits - 1``, ``bits`` from the PNG's
      ``sBIT`` chunk when present, else 16), never clipped at 255, then the lookup table.
    - ``RGB``/``RGBA``: alpha is dropped, i.e. the stored colour values are used as they are. Pixels with
      alpha = 255 therefore keep exactly their value (compositing over any colour would be the identity
      there only by luck of the colour); pixels with alpha < 255 also keep their stored colour rather than
      being blended into a background, and a warning names the file. If R = G = B everywhere (all NIH
      RGBA files) the image is gray and goes through the same lookup table as mode ``L``, so an RGBA copy
      of an image gives exactly the pixels of its ``L`` copy; otherwise the colour formula is applied.
      ``identity`` takes Pillow's ``convert("L")`` directly (Rec. 601 in fixed point: exact on gray, within
      one level of the float formula on colour), the one-pass path the NIH RGBA files go through.
    """
    conv = get_conversion(conversion)
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("LA", "La", "PA"):
        if mode == "PA":
            im = im.convert("RGBA")
            return gray_image(im, conv, source=source)
        _warn_partial_alpha(im, source, band=1)
        im, mode = im.getchannel(0), "L"
    if mode == "L":
        return im if conv.is_identity_on_gray else im.point(conv.lut.tolist())
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_gray(im, conv, source)
    if mode not in ("RGB", "RGBA", "RGBa", "RGBX"):
        if mode in ("F",):
            raise ImageError(f"{source}: floating-point image (mode F) is not supported; "
                             "store radiographs as 8- or 16-bit PNG")
        im = im.convert("RGB")
        mode = "RGB"
    if mode in ("RGBA", "RGBa"):
        _warn_partial_alpha(im, source, band=3)
    if conv.name == "identity":
        # Pillow's RGB(A) -> L is Rec. 601 in fixed point, ignores alpha, and is exact on R = G = B
        # (the weights sum to 65536/65536): one pass instead of a gray test plus a lookup.
        return im.convert("L")
    r, g, b = im.split()[:3]  # one pass for all bands (getchannel would pass once per band)
    if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(r, b).getbbox() is None:
        return r if conv.is_identity_on_gray else r.point(conv.lut.tolist())
    rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    return Image.fromarray(to_uint8(conv.convert_rgb(rgb)), mode="L")


def decode_gray(path: str | os.PathLike, conversion: str | Conversion = "identity") -> np.ndarray:
    """Decode the PNG at ``path`` to a uint8 ``(H, W)`` array under ``conversion`` (see :func:`gray_image`).

    Raises :class:`ImageError` for a missing, empty, non-PNG, truncated or corrupt file.
    """
    return np.asarray(gray_image(open_png(path), conversion, source=path))


def _warn_partial_alpha(im: Image.Image, source: str | os.PathLike, band: int) -> None:
    extrema: Any = im.getextrema()  # one pass over all bands, no copy of the alpha band
    if extrema[band][0] < 255:
        log.warning("%s: alpha < 255 in some pixels; the alpha channel is dropped and the stored colour "
                    "kept (not blended into a background)", source)


def _sixteen_bit_to_gray(im: Image.Image, conv: Conversion, source: str | os.PathLike) -> Image.Image:
    a = np.asarray(im)
    if a.dtype.kind == "i" and a.size and (a.min() < 0 or a.max() > 65535):
        raise ImageError(f"{source}: 32-bit integer image with values outside 0..65535 is not supported")
    bits = _png_significant_bits(source) or 16
    top = (1 << bits) - 1
    if a.size and int(a.max()) > top:  # an sBIT chunk that lies: fall back to the full range
        top = 65535
    # One 65,536-entry table does rescale + tone curve in a single gather.
    ramp = np.minimum(np.arange(65536, dtype=np.float64) / top, 1.0)
    table = to_uint8(conv.convert_rgb(np.repeat(ramp[:, None], 3, axis=1)))
    return Image.fromarray(table[a.astype(np.uint16, copy=False)], mode="L")


def _png_significant_bits(source: str | os.PathLike) -> int | None:
    """Gray significant bits from a PNG's ``sBIT`` chunk (e.g. 12 for 12-bit data in 16-bit PNG)."""
    try:
        with open(source, "rb") as fh:
            if fh.read(8) != _PNG_MAGIC:
                return None
            while True:
                header = fh.read(8)
                if len(header) < 8:
                    return None
                length, ctype = struct.unpack(">I4s", header)
                if ctype == b"sBIT":
                    data = fh.read(length)
                    return int(data[0]) if data and 1 <= data[0] <= 16 else None
                if ctype in (b"IDAT", b"IEND"):
                    return None
                fh.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None
