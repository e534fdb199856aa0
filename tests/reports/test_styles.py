"""One colour per backbone, the same in every figure and report, and no two alike."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from matplotlib.colors import to_rgb

from cxr_bench.reports.styles import _SPARE_COLOURS, BACKBONE_COLOURS, backbone_colour


def _lab(hex_colour: str) -> np.ndarray:
    """CIE L*a*b* of an sRGB colour (D65), to measure how different two colours look."""
    rgb = np.array(to_rgb(hex_colour))
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_shipped_backbones_have_fixed_distinct_colours():
    from cxr_bench.models.backbones import BACKBONES

    assert set(BACKBONES.names()) <= set(BACKBONE_COLOURS)
    colours = list(BACKBONE_COLOURS.values()) + list(_SPARE_COLOURS)
    for a, b in combinations(colours, 2):  # Delta E 76 above 20: clearly different hues, no "three oranges"
        assert np.linalg.norm(_lab(a) - _lab(b)) > 20, (a, b)


def test_any_other_backbone_keeps_its_colour():
    assert backbone_colour("timm:convnext_tiny") == backbone_colour("timm:convnext_tiny")
    assert backbone_colour("timm:convnext_tiny") in _SPARE_COLOURS
    assert backbone_colour("resnet50") == BACKBONE_COLOURS["resnet50"]
