"""The one message that runs on the bundled sample are not comparable with any paper, and why.

Every place that shows it (the console before a sweep, a leaderboard's or a comparison's sidecar notes, a
report's banner) gathers :class:`SampleFacts` from what it holds (planned runs, table rows, run records)
and prints :func:`sample_note_lines`; what is not known from a source is left out of the text, never
guessed. HTML callers escape the lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .bundled import SAMPLE_N_IMAGES

# What the sample is made of (nih-sample/README.md): 1,000 of its images were picked as 500 "Pneumonia" and
# 500 "No Finding" from one source, the rest at random; all stored at 256 px.
SAMPLE_BIAS = "1,000 images are 500 'Pneumonia' + 500 'No Finding' from one source"
SAMPLE_STORED_PX = 256
_NO_WEIGHTS = frozenset({"", "none"})
# What a cause must be to be named as one: images below the papers' smallest input, fewer optimizer steps than a
# paper's training, no run reaching this mean AUC (below it, the runs are called "at chance").
SMALL_IMAGE_PX = 224
FEW_STEPS = 10_000
CHANCE_BELOW = 0.6


@dataclass(frozen=True)
class SampleFacts:
    """What a set of runs on the bundled sample says about itself. Empty fields are not known from the
    caller's source and are left out of the message."""

    n_runs: int  # runs on the bundled sample
    n_total: int | None = None  # runs in the whole table, when it holds others too
    profiles: tuple[str, ...] = ()
    image_sizes: tuple[int, ...] = ()
    pretrained: tuple[str, ...] = ()  # each run's model.pretrained; "none" or "" is random initialisation
    steps: tuple[int, ...] = ()  # optimizer steps per run
    steps_capped: bool = False  # the steps are caps (epochs x max_steps_per_epoch), not steps taken
    epochs: tuple[int, ...] = ()  # epochs per run, said when the steps are not known
    images_seen: tuple[int, ...] = ()  # training images seen per run (steps x effective batch)
    mean_aucs: tuple[float, ...] = ()  # finite mean test AUCs
    test_images: tuple[int, ...] = ()
    test_patients: tuple[int, ...] = ()
    sanity: bool = False  # a phantom sanity run is beside them


def finite(values: Iterable[object]) -> tuple[float, ...]:
    """The finite numbers among ``values`` (None, text and NaN dropped), as floats."""
    out = []
    for v in values:
        try:
            f = float(v)  # type: ignore[arg-type]  # any cell or metrics value; what is not a number is dropped
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return tuple(out)


def whole(values: Iterable[object]) -> tuple[int, ...]:
    """:func:`finite` rounded to integers (counts read from CSV cells come back as floats)."""
    return tuple(int(round(v)) for v in finite(values))


def _span(values: Iterable[float], fmt: str = "g") -> str:
    vals = sorted(set(values))
    lo, hi = format(vals[0], fmt), format(vals[-1], fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def _initialisation(pretrained: tuple[str, ...]) -> str:
    named = sorted({p for p in pretrained if p.strip().lower() not in _NO_WEIGHTS})
    if not named:
        return "random init (no ImageNet weights)"
    if not any(p.strip().lower() in _NO_WEIGHTS for p in pretrained):
        return ""  # every run started from weights: not a reason for low numbers
    return f"random init for some runs (the others initialised from {', '.join(named)})"


def sample_note_lines(f: SampleFacts, *, why: bool = True) -> list[str]:
    """The message, three lines: the warning (image size, the runs' mean-AUC range), why (initialisation,
    image size, training budget, the sample's size and bias), and where real numbers come from.
    ``why=False`` leaves the middle line out, for a console with a line budget (a sweep's leaderboard notes
    and reports give it)."""
    who = f"{f.n_runs} of {f.n_total} run(s)" if f.n_total not in (None, f.n_runs) else f"{f.n_runs} run(s)"
    profile = f" (profile {', '.join(repr(p) for p in sorted(set(f.profiles)))})" if f.profiles else ""
    px = f" at {_span(f.image_sizes)} px" if f.image_sizes else ""
    if f.mean_aucs and max(f.mean_aucs) >= CHANCE_BELOW:
        outcome = (f"mean AUCs {_span(f.mean_aucs, '.2f')} here, which its small, biased test set cannot turn into "
                   "a measure of the model")
    else:
        outcome = "AUCs at chance (about 0.5" + (f"; here {_span(f.mean_aucs, '.2f')}" if f.mean_aucs else "") + \
            ") by design"
    causes = [_initialisation(f.pretrained) if f.pretrained else "",
              "small images (papers: 224-1024 px)" if f.image_sizes and min(f.image_sizes) < SMALL_IMAGE_PX else ""]
    if f.steps:
        if min(f.steps) < FEW_STEPS:
            images = f", {_span(f.images_seen)} images seen" if f.images_seen else ""
            causes.append(f"{'at most ' if f.steps_capped else ''}{_span(f.steps)} optimizer steps{images} "
                          "(papers: tens of thousands)")
    elif f.epochs:
        causes.append(f"{_span(f.epochs)} epoch(s) of training")
    test = ""
    if f.test_images:
        test = f"{_span(f.test_images)} test images" + (
            f" of {_span(f.test_patients)} patients" if f.test_patients else "") + "; "
    causes.append(f"a small, biased sample at {SAMPLE_STORED_PX} px ({test}{SAMPLE_BIAS})")
    lines = [
        f"NOT COMPARABLE WITH ANY PAPER: {who} on the bundled {SAMPLE_N_IMAGES:,}-image NIH sample{profile}{px}: "
        f"a smoke test, {outcome}.",
        "Why: " + ", ".join(c for c in causes if c) + ".",
        ("A phantom 'sanity' run checks that the pipeline learns. " if f.sanity else "")
        + "Real numbers: --data-root DIR on the full NIH release (replication/README.md).",
    ]
    return lines if why else [lines[0], lines[2]]
