"""``cxr-bench prepare``: decode every PNG once into the memory-mapped image cache."""

from __future__ import annotations

import argparse

from ..data.cache import RESIZE_FILTERS, default_cache_root, prepare_cache
from ..data.grayscale import CONVERSIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare", help="decode and resize the images once into a memory-mapped cache",
        description="Decode each PNG of a release once, resize it, and store it in a uint8 memory-mapped "
                    "cache keyed by the source files, size, resize method and grayscale conversion. "
                    "Interrupted runs resume; broken files are listed in rejected.csv and skipped.")
    p.add_argument("--data-root", default=None,
                   help="NIH release folder (Data_Entry CSV, split lists, images); default: the bundled "
                        "sample")
    p.add_argument("--image-size", type=int, default=256, help="output image size in pixels (default 256)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all usable cores)")
    p.add_argument("--grayscale", default="identity", choices=CONVERSIONS.names(), metavar="NAME",
                   help=f"grayscale conversion (default identity): {', '.join(CONVERSIONS.names())}")
    p.add_argument("--resize", default="lanczos", choices=sorted(RESIZE_FILTERS),
                   help="antialiased resize filter (default lanczos)")
    p.add_argument("--cache-dir", default=None,
                   help=f"cache root (default $CXR_BENCH_CACHE or {default_cache_root()})")
    p.add_argument("--verify", action="store_true",
                   help="check every chunk of an existing cache against its checksum (not only a sample) "
                        "and rebuild the chunks that do not match")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cache = prepare_cache(args.data_root, args.image_size, resize=args.resize, conversion=args.grayscale,
                          cache_dir=args.cache_dir, workers=args.workers,
                          progress=False if args.no_progress else None,
                          verify="full" if args.verify else "quick")
    print(f"cache: {cache.dir}")
    print(f"images: {int(cache.valid.sum())} of {len(cache) + cache.meta['n_missing']} listed "
          f"({cache.size} px, {cache.conversion}, {cache.resize})")
    if args.verify or cache.rebuilt_chunks:
        n_chunks = len(cache.meta["chunk_digests"])
        print(f"verified: {cache.checked_chunks} of {n_chunks} chunks against their {cache.meta['checksum']} "
              "checksums")
    if cache.rebuilt_chunks:
        print(f"rebuilt: {len(cache.rebuilt_chunks)} damaged chunk(s): "
              f"{', '.join(map(str, cache.rebuilt_chunks))}")
    if cache.rejected:
        print(f"rejected: {len(cache.rejected)} (see {cache.dir / 'rejected.csv'})")
        for name, reason in cache.rejected[:10]:
            print(f"  {name}: {reason}")
        if len(cache.rejected) > 10:
            print(f"  ... and {len(cache.rejected) - 10} more")
    return 0
