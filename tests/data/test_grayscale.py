import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_bench.data.grayscale import CONVERSIONS, decode_gray, get_conversion, tone_curves
from cxr_bench.errors import ConfigError, ImageError

RNG = np.random.default_rng(1234)
RGB = RNG.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, size=(24, 32), dtype=np.uint8)


def g(t):  # Kanan & Cottrell gamma correction
    return t ** (1 / 2.2)


def lstar(y):
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3) / 100


# Each formula written out channel by channel, independently of the implementation.
FORMULAS = {
    "intensity": lambda r, gg, b: (r + gg + b) / 3,
    "gleam": lambda r, gg, b: (g(r) + g(gg) + g(b)) / 3,
    "luminance": lambda r, gg, b: 0.299 * r + 0.587 * gg + 0.114 * b,
    "luma": lambda r, gg, b: 0.2126 * g(r) + 0.7152 * g(gg) + 0.0722 * g(b),
    "value": lambda r, gg, b: np.maximum(np.maximum(r, gg), b),
    "luster": lambda r, gg, b: (np.maximum(np.maximum(r, gg), b) + np.minimum(np.minimum(r, gg), b)) / 2,
    "lightness": lambda r, gg, b: lstar(0.2126 * r + 0.7152 * gg + 0.0722 * b),
    "intensity_prime": lambda r, gg, b: (g(r) + g(gg) + g(b)) / 3,
    "luminance_prime": lambda r, gg, b: 0.299 * g(r) + 0.587 * g(gg) + 0.114 * g(b),
    "value_prime": lambda r, gg, b: np.maximum(np.maximum(g(r), g(gg)), g(b)),
    "luster_prime": lambda r, gg, b: (np.maximum(np.maximum(g(r), g(gg)), g(b))
                                      + np.minimum(np.minimum(g(r), g(gg)), g(b))) / 2,
    "identity": lambda r, gg, b: 0.299 * r + 0.587 * gg + 0.114 * b,
    "gamma": lambda r, gg, b: g(0.299 * r + 0.587 * gg + 0.114 * b),
    "lstar": lambda r, gg, b: lstar(0.299 * r + 0.587 * gg + 0.114 * b),
}
TONES = {"identity": lambda t: t, "gamma": g, "lstar": lstar}


def save(path: Path, arr: np.ndarray, mode: str | None = None, **kw) -> Path:
    Image.fromarray(arr, mode=mode).save(path, format="PNG", **kw)
    return path


def test_registry_is_exactly_the_formulas():
    assert set(CONVERSIONS.names()) == set(FORMULAS)
    assert tone_curves() == ["identity", "gamma", "lstar"]
    assert {c.kind for c in (CONVERSIONS.get(n) for n in CONVERSIONS)} == {"colour", "tone"}
    with pytest.raises(ConfigError, match="known: .*gleam"):
        get_conversion("glaem")


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_conversion_matches_its_formula_on_colour_input(name, tmp_path):
    x = RGB.astype(np.float64) / 255
    expected = FORMULAS[name](x[..., 0], x[..., 1], x[..., 2])
    conv = get_conversion(name)
    np.testing.assert_allclose(conv.convert_rgb(x), expected, atol=1e-12)
    got = decode_gray(save(tmp_path / "c.png", RGB), name)
    assert got.dtype == np.uint8 and got.shape == RGB.shape[:2]
    want = np.rint(expected * 255)
    assert np.abs(got - want).max() <= 1  # only ties at .5 may round differently
    assert (got == want).mean() > 0.99


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_gray_input_collapses_to_the_named_tone_curve(name, tmp_path):
    conv = get_conversion(name)
    t = np.arange(256) / 255
    np.testing.assert_array_equal(conv.lut, np.rint(TONES[conv.tone](t) * 255).astype(np.uint8))
    got = decode_gray(save(tmp_path / "l.png", GRAY), name)
    np.testing.assert_array_equal(got, conv.lut[GRAY])


def test_tone_curves_are_distinct_and_known_points():
    luts = {n: get_conversion(n).lut for n in tone_curves()}
    assert not np.array_equal(luts["identity"], luts["gamma"])
    assert not np.array_equal(luts["gamma"], luts["lstar"])
    # Middle gray of L* (50) is Y = 0.1842; gamma 1/2.2 sends 0.5 to 0.7297.
    assert luts["lstar"][round(0.1842 * 255)] in (127, 128)
    assert luts["gamma"][128] == round(255 * (128 / 255) ** (1 / 2.2))
    assert luts["identity"].tolist() == list(range(256))


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_rgba_la_rgb_and_palette_copies_equal_the_l_image(name, tmp_path):
    want = decode_gray(save(tmp_path / "l.png", GRAY), name)
    opaque = np.full_like(GRAY, 255)
    copies = {
        "rgba": save(tmp_path / "rgba.png", np.dstack([GRAY, GRAY, GRAY, opaque]), "RGBA"),
        "rgb": save(tmp_path / "rgb.png", np.dstack([GRAY, GRAY, GRAY]), "RGB"),
        "la": save(tmp_path / "la.png", np.dstack([GRAY, opaque]), "LA"),
        "p": tmp_path / "p.png",
    }
    Image.fromarray(GRAY).convert("P").save(copies["p"])
    assert Image.open(copies["p"]).mode == "P"
    for mode, path in copies.items():
        np.testing.assert_array_equal(decode_gray(path, name), want, err_msg=mode)


def test_alpha_never_leaks(tmp_path, caplog):
    alpha = RNG.integers(0, 256, size=GRAY.shape, dtype=np.uint8)
    path = save(tmp_path / "a.png", np.dstack([GRAY, GRAY, GRAY, alpha]), "RGBA")
    # Alpha is dropped, the stored value kept (not blended into black or white).
    np.testing.assert_array_equal(decode_gray(path), GRAY)
    assert "alpha < 255" in caplog.text
    la = save(tmp_path / "la.png", np.dstack([GRAY, alpha]), "LA")
    np.testing.assert_array_equal(decode_gray(la), GRAY)
    colour = save(tmp_path / "c.png", np.dstack([RGB, alpha]), "RGBA")
    np.testing.assert_array_equal(decode_gray(colour, "value"), RGB.max(axis=-1))


def _with_sbit(png: bytes, bits: int) -> bytes:
    """Insert an sBIT chunk (gray significant bits) right after IHDR."""
    body = struct.pack(">B", bits)
    chunk = struct.pack(">I", 1) + b"sBIT" + body + struct.pack(">I", zlib.crc32(b"sBIT" + body))
    end = 8 + 4 + 4 + 13 + 4
    return png[:end] + chunk + png[end:]


def test_sixteen_bit_rescaled_by_bit_range_not_clipped(tmp_path):
    full = save(tmp_path / "16.png", GRAY.astype(np.uint16) * 257)
    assert Image.open(full).mode.startswith("I")
    np.testing.assert_array_equal(decode_gray(full), GRAY)
    np.testing.assert_array_equal(decode_gray(full, "gamma"), get_conversion("gamma").lut[GRAY])
    # 12-bit data in a 16-bit PNG: scaled by 4095 when sBIT says 12 bits, by 65535 otherwise; never clipped.
    twelve = (GRAY.astype(np.uint16) * 4095 // 255).astype(np.uint16)
    plain = save(tmp_path / "12.png", twelve)
    np.testing.assert_array_equal(decode_gray(plain), np.rint(twelve / 65535 * 255).astype(np.uint8))
    marked = tmp_path / "12s.png"
    marked.write_bytes(_with_sbit(plain.read_bytes(), 12))
    np.testing.assert_array_equal(decode_gray(marked), np.rint(twelve / 4095 * 255).astype(np.uint8))


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"GIF89a not really", "not a PNG"),
    ("truncated", "cannot decode PNG"),
])
def test_bad_files_raise_image_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content == "truncated":
        data = save(tmp_path / "ok.png", GRAY).read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as e:
        decode_gray(path)
    assert str(path) in str(e.value)
    with pytest.raises(ImageError, match="not found"):
        decode_gray(tmp_path / "absent.png")
