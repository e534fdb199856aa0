"""``cxr-bench models``: every backbone x head with its feature map, parameter count and GMACs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list backbones and heads with parameters and GMACs",
        description="List every registered backbone with every head: feature map (D x h x w), parameters "
        "and multiply-accumulates (GMACs) for one 1-channel image, counted on the meta device. Any timm "
        "model can be used as timm:<name>; add some to the table with --timm.",
    )
    p.add_argument("--image-size", type=int, default=224, help="square input size in pixels (default 224)")
    p.add_argument("--num-labels", type=int, default=14, help="number of outputs (default 14)")
    p.add_argument("--backbone", action="append", default=[], metavar="NAME",
                   help="only these backbones (repeatable; default: every registered one)")
    p.add_argument("--timm", action="append", default=[], metavar="NAME",
                   help="also list timm model NAME (repeatable), e.g. --timm convnext_tiny")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = _shipped(args)
    if rows is None:
        from ..models import complexity_table, list_models

        backbones = (args.backbone or list_models()) + [f"timm:{n}" for n in args.timm]
        rows = complexity_table(args.image_size, backbones=backbones, num_labels=args.num_labels)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from ..utils.text import format_table

    lines = [(r["backbone"], r["head"], "x".join(map(str, r["feature_shape"])), f"{r['params'] / 1e6:.2f}",
              f"{r['gmacs']:.3f}") for r in rows]
    print(f"input: 1 x {args.image_size} x {args.image_size}, {args.num_labels} labels, channels=replicate")
    print(format_table(("backbone", "head", "features", "params (M)", "GMACs"), lines, align="lllrr"))
    return 0


def _shipped(args: argparse.Namespace) -> list[dict] | None:
    """The shipped table (every registered backbone x head at 224 px, 14 labels), when it answers the question:
    the listing then needs neither torch nor a FLOP count per model."""
    if args.image_size != 224 or args.num_labels != 14 or args.timm:
        return None
    path = Path(__file__).resolve().parents[1] / "bundled" / "complexity_224px_14labels.json"
    try:
        rows: list[dict] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if args.backbone:
        known = {r["backbone"] for r in rows}
        if not set(args.backbone) <= known:
            return None  # an unknown name: the registry says what it knows
        rows = [r for b in dict.fromkeys(args.backbone) for r in rows if r["backbone"] == b]
    return rows
