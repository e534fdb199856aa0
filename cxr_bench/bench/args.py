"""Argument types the benchmark scripts share: comma-separated lists on the command line."""

from __future__ import annotations


def comma_strs(text: str) -> tuple[str, ...]:
    """``"a,b,"`` -> ``("a", "b")``: an argparse ``type`` for a list of names."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def comma_ints(text: str) -> tuple[int, ...]:
    """``"128,224"`` -> ``(128, 224)``: an argparse ``type`` for a list of sizes or counts (argparse turns the
    ValueError of a non-number into a usage error)."""
    return tuple(int(v) for v in comma_strs(text))
