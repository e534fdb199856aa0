"""``cxr-bench data info``, ``cxr-bench data verify`` and ``cxr-bench data download``."""

from __future__ import annotations

import argparse
import json
import sys

INFO_DESCRIPTION = (
    "Report images and patients per official split list, the patient-overlap check, views and per-label "
    "positives (chestxray8 and chestxray14); for --data-root also which images are on disk and which image "
    "archives are missing. Without --data-root: the bundled full NIH metadata (112,120 images, no pixels). "
    "The population is every image (PA and AP, all follow-ups), unlike torchxrayvision's PA-only, "
    "one-per-patient default."
)
DOWNLOAD_DESCRIPTION = (
    "Download NIH ChestX-ray14 into --data-root from the NIH Clinical Center's links: the 12 image archives of "
    "NIH's batch_download_zips.py (about 42 GB); the four metadata files, which NIH gives no direct link, "
    "are written from the copies bundled with cxr-bench. Interrupted downloads resume, finished parts are "
    "not fetched again, and every file's sha256 goes into DIR/cxr-bench-download.json. See docs/data.md "
    "(also for the Kaggle mirror)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="NIH metadata, official splits and label counts; download the release",
                       description="Inspect NIH ChestX-ray14 metadata and the bundled files; download the "
                                   "release.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    info = dsub.add_parser("info", help="images, patients and label positives per official split",
                           description=INFO_DESCRIPTION)
    where = info.add_mutually_exclusive_group()
    where.add_argument("--data-root", metavar="DIR",
                       help="an NIH release: Data_Entry_2017[_v2020].csv[.gz], train_val_list.txt, "
                            "test_list.txt, image folders")
    where.add_argument("--sample", action="store_true", help="the bundled 1,673-image sample release")
    info.add_argument("--json", action="store_true", help="print JSON (stable keys) instead of tables")
    info.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of train_val patients carved into validation (default 0.1)")
    info.add_argument("--seed", type=int, default=0, help="seed of the validation carve (default 0)")
    info.add_argument("--check-images", action="store_true",
                      help="also look for every image file (the default with --data-root; walks the image "
                           "folders)")
    info.set_defaults(func=run_info)

    verify = dsub.add_parser("verify", help="check the bundled files against their registered sha256",
                             description="Check every bundled metadata file against its registered sha256 "
                                         "and the bundled sample's images against its Data_Entry rows.")
    verify.set_defaults(func=run_verify)

    dl = dsub.add_parser("download", description=DOWNLOAD_DESCRIPTION,
                         help="fetch the NIH release (12 image archives + metadata), resumable and verified")
    dl.add_argument("--data-root", required=True, metavar="DIR", help="the data root to fill (created if needed)")
    src = dl.add_mutually_exclusive_group()
    src.add_argument("--base-url", metavar="URL",
                     help="a mirror serving the same file names (images_001.tar.gz ..., "
                          "Data_Entry_2017_v2020.csv, ...): every file is fetched from URL/<file name>")
    src.add_argument("--urls", metavar="FILE",
                     help="URLs of your own: a JSON list in the format of cxr_bench/data/nih_release.json, "
                          "or text lines '<file name> <url>'")
    dl.add_argument("--parts", metavar="SPEC", help="image archives to fetch, e.g. 1,3-4 (default: all 12)")
    dl.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    dl.add_argument("--layout", choices=("parts", "flat"), default="parts",
                    help="parts: images_001/images/*.png ... (each archive in its own folder, as NIH's "
                         "unpack and as on Kaggle; default); flat: one images/ folder")
    dl.add_argument("--keep-archives", action="store_true",
                    help="keep the .tar.gz files under DIR/archives/ after unpacking (default: delete them)")
    dl.add_argument("--retries", type=int, default=3,
                    help="failed attempts in a row retried per file (default 3)")
    dl.add_argument("--timeout", type=float, default=60.0,
                    help="seconds without data before an attempt counts as failed (default 60)")
    dl.add_argument("--verify", nargs="?", const="", metavar="MANIFEST",
                    help="download nothing: re-hash kept archives and metadata against DIR's manifest, check "
                         "every unpacked part's images, and with MANIFEST (a colleague's "
                         "cxr-bench-download.json) compare every recorded sha256 with it")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
    dl.add_argument("--dataset", default="nih", metavar="NAME",
                    help="nih (default) or an external test set: openi is fetched the same way (resumable, "
                         "verified); padchest, chexpert, rsna and siim print where to request access")
    dl.set_defaults(func=run_download)


def run_info(args: argparse.Namespace) -> int:
    from ..data.info import data_info, format_data_info
    from ..data.release import NIHRelease

    if args.data_root:
        release = NIHRelease.open(args.data_root)
    elif args.sample:
        release = NIHRelease.open(None)
    else:
        release = NIHRelease.bundled_full()
    info = data_info(release, val_fraction=args.val_fraction, seed=args.seed,
                     check_images=args.check_images or None)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_data_info(info))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..data.download import (
        download_release,
        load_part_list,
        read_url_overrides,
        verify_download,
        with_base_url,
    )

    if args.verify is not None:
        problems = verify_download(args.data_root, args.verify or None)
        for p in problems:
            print(f"PROBLEM: {p}")
        if not problems:
            against = f" and {args.verify}" if args.verify else ""
            print(f"OK: {args.data_root} matches its download manifest{against}")
        return 1 if problems else 0
    parts = load_part_list()
    if getattr(args, "dataset", "nih") != "nih":
        from ..data.external import get_spec, release_list

        spec = get_spec(args.dataset)
        if not spec.downloadable:
            print(f"{spec.title} is not openly downloadable: {spec.access}.\nLay it out as: "
                  f"{spec.layout}, then: cxr-bench evaluate --runs STORE --dataset {spec.name} --data-root DIR")
            return 1
        parts = load_part_list(release_list(spec.name))
    if args.base_url:
        parts = with_base_url(parts, args.base_url)
    elif args.urls:
        parts = read_url_overrides(args.urls, parts)
    results = download_release(args.data_root, parts=parts, select=args.parts, workers=args.workers,
                               layout=args.layout, keep_archives=args.keep_archives, retries=args.retries,
                               timeout=args.timeout, show_progress=False if args.no_progress else None)
    width = max(len(r.file) for r in results)
    for r in results:
        print(f"{r.file:<{width}}  {r.action}" + (f"  ({r.detail})" if r.detail else ""))
    print(f"Done. Check it with: cxr-bench data info --data-root {args.data_root}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..data.bundled import BUNDLED_SHA256, bundled_dir, verify_bundled

    problems = verify_bundled()
    if problems:
        for p in problems:
            print(f"PROBLEM: {p}")
        return 1
    print(f"OK: {len(BUNDLED_SHA256)} bundled files match their sha256 and the sample's images match its "
          f"Data_Entry rows ({bundled_dir()})")
    return 0
