"""``cxr-bench weights``: pre-fetch and list the pretrained checkpoints a suite or some backbones need."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = (
    "Pretrained backbone weights live in torchvision's and timm's own caches (torch hub: TORCH_HOME; "
    "Hugging Face hub: HF_HOME / HF_HUB_CACHE). model.pretrained='imagenet' fetches a missing checkpoint on "
    "first use; where compute nodes have no network, fetch them beforehand with `cxr-bench weights fetch` on "
    "a machine that has one, into caches the nodes share. See docs/data.md."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("weights", description=DESCRIPTION,
                              help="pre-fetch or list the pretrained ImageNet checkpoints runs need")
    wsub = p.add_subparsers(dest="weights_command", metavar="SUBCOMMAND")
    wsub.required = True
    commands = (
        ("fetch", "download every checkpoint the named backbones or a suite need, skipping cached ones",
         run_fetch),
        ("list", "say for every checkpoint the named backbones or a suite need whether it is cached",
         run_list),
    )
    for name, helptext, func in commands:
        sp = wsub.add_parser(name, help=helptext,
                             description=f"{helptext[0].upper()}{helptext[1:]}. Without BACKBONE or --suite: "
                                         "every registered backbone's ImageNet checkpoint.")
        sp.add_argument("backbones", nargs="*", metavar="BACKBONE",
                        help="registered backbone names or timm:<model> (their ImageNet checkpoint)")
        sp.add_argument("--suite", metavar="NAME|FILE", help="every checkpoint the suite's runs use")
        sp.add_argument("--profile", metavar="NAME",
                        help="only the runs of this profile of --suite (default: the runs of every profile)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value of every --suite run, as `cxr-bench run` does "
                             "(repeatable)")
        if name == "fetch":
            sp.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
            sp.add_argument("--mirror", metavar="URL",
                            help="download from this mirror instead of download.pytorch.org / huggingface.co "
                                 "(it serves the same paths; default: $CXR_BENCH_WEIGHTS_MIRROR)")
        else:
            sp.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
        sp.set_defaults(func=func)


def _needed(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(backbone, pretrained) pairs, in first-seen order."""
    from ..errors import ConfigError

    pairs: list[tuple[str, str]] = [(b, "imagenet") for b in args.backbones]
    if args.suite:
        from ..runner.suite import load_suite, parse_overrides

        suite = load_suite(args.suite)
        profiles = [args.profile] if args.profile else [None, *suite.profiles]
        overrides = parse_overrides(args.overrides)
        for profile in profiles:
            for run in suite.expand(profile, overrides):
                model = run.config.model
                if model.pretrained is not None:
                    pairs.append((model.backbone, str(model.pretrained)))
    elif args.profile or args.overrides:
        raise ConfigError("--profile and --set apply to the runs of --suite; name a suite")
    elif not args.backbones:
        from ..models import list_models

        pairs = [(b, "imagenet") for b in list_models()]
    return list(dict.fromkeys(pairs))


def _command(args: argparse.Namespace, backbones: list[str]) -> str:
    from ..models.weights import fetch_command

    return fetch_command(backbones, args.suite, args.profile)


def run_fetch(args: argparse.Namespace) -> int:
    from ..errors import WeightsError
    from ..models.weights import CACHE, IMAGENET, fetch_pretrained

    pairs = _needed(args)
    if not pairs:
        print("nothing to fetch: no run uses pretrained weights")
        return 0
    problems = []
    for backbone, pretrained in pairs:
        # 'cache' is satisfied by the ImageNet checkpoint; a file is only checked.
        kind = IMAGENET if pretrained in (CACHE, IMAGENET) else pretrained
        try:
            rec = fetch_pretrained(backbone, kind, mirror=args.mirror, command=_command(args, [backbone]),
                                   show_progress=False if args.no_progress else None)
        except WeightsError as e:
            problems.append(str(e))
            continue
        state = "fetched" if rec["fetched"] else "cached"
        print(f"{backbone:<16} {state:<8} {rec['source']:<48} {rec['path']}  sha256 {rec['sha256'][:12]}")
    if problems:
        raise WeightsError(f"{len(problems)} of {len(pairs)} checkpoint(s) not available: "
                           + " | ".join(problems))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..models.weights import missing_weights

    pairs = _needed(args)
    missing = {(m.backbone, m.pretrained): m for m in missing_weights(pairs)}
    rows = []
    for backbone, pretrained in pairs:
        m = missing.get((backbone, pretrained))
        rows.append({"backbone": backbone, "pretrained": pretrained, "cached": m is None,
                     "source": m.source if m else None, "url": m.url if m else None,
                     "looked_in": m.where if m else None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "cached" if r["cached"] else ("MISSING" if r["url"] else "NO FILE")
        extra = "" if r["cached"] else f"  {r['source'] or ''} {r['url'] or r['looked_in']}"
        print(f"{r['backbone']:<16} {r['pretrained']:<10} {state}{extra.rstrip()}")
    fetchable = sorted({b for (b, _), m in missing.items() if m.url is not None})
    if fetchable:
        print(f"fetch the missing ones with: {_command(args, fetchable)}")
    return 0
