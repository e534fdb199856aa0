"""``cxr-bench models``: every backbone x head with its feature map, parameter count and GMACs."""

from __future__ import annotations

import argparse
import json


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
    from ..models import complexity_table, list_models
    from ..utils.text import text_table

    backbones = (args.backbone or list_models()) + [f"timm:{n}" for n in args.timm]
    rows = complexity_table(args.image_size, backbones=backbones, num_labels=args.num_labels)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("backbone", "head", "features", "params (M)", "GMACs")
    lines = [(r["backbone"], r["head"], "x".join(map(str, r["feature_shape"])), f"{r['params'] / 1e6:.2f}",
              f"{r['gmacs']:.3f}") for r in rows]
    print(f"input: 1 x {args.image_size} x {args.image_size}, {args.num_labels} labels, channels=replicate")
    print(text_table(header, lines, align="lllrr"))
    return 0
