"""``cxr-bench data info`` and ``cxr-bench data verify``."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="NIH metadata, official splits and label counts",
                       description="Inspect NIH ChestX-ray14 metadata and the bundled files.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    info = dsub.add_parser(
        "info", help="images, patients and label positives per official split",
        description="Report images and patients per official split list, the patient-overlap check, views and "
                    "per-label positives (chestxray8 and chestxray14). Without --data-root: the bundled full NIH "
                    "metadata (112,120 images, no pixels). The population is every image (PA and AP, all "
                    "follow-ups), unlike torchxrayvision's PA-only, one-per-patient default.")
    where = info.add_mutually_exclusive_group()
    where.add_argument("--data-root", metavar="DIR",
                       help="an NIH release: Data_Entry_2017[_v2020].csv[.gz], train_val_list.txt, test_list.txt")
    where.add_argument("--sample", action="store_true", help="the bundled 1,673-image sample release")
    info.add_argument("--json", action="store_true", help="print JSON (stable keys) instead of tables")
    info.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of train_val patients carved into validation (default 0.1)")
    info.add_argument("--seed", type=int, default=0, help="seed of the validation carve (default 0)")
    info.add_argument("--check-images", action="store_true",
                      help="also look for every image file under the data root (walks the image folders)")
    info.set_defaults(func=_info)

    verify = dsub.add_parser("verify", help="check the bundled files against their registered sha256",
                             description="Check every bundled metadata file against its registered sha256 and "
                                         "the bundled sample's images against its Data_Entry rows.")
    verify.set_defaults(func=_verify)


def _info(args: argparse.Namespace) -> int:
    from ..data.info import data_info, format_data_info
    from ..data.release import NIHRelease

    if args.data_root:
        release = NIHRelease.open(args.data_root)
    elif args.sample:
        release = NIHRelease.open(None)
    else:
        release = NIHRelease.bundled_full()
    info = data_info(release, val_fraction=args.val_fraction, seed=args.seed, check_images=args.check_images)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_data_info(info))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..data.bundled import BUNDLED_SHA256, bundled_dir, verify_bundled

    problems = verify_bundled()
    if problems:
        for p in problems:
            print(f"PROBLEM: {p}")
        return 1
    print(f"OK: {len(BUNDLED_SHA256)} bundled files match their sha256 and the sample's images match its "
          f"Data_Entry rows ({bundled_dir()})")
    return 0
