"""TensorBoard scalars of a run, written beside its history.csv when ``tensorboard`` is installed.

``tensorboard --logdir runs/`` then shows every run of a store, named by its directory. One point per
epoch (the x axis is the epoch, as in history.csv): ``train/loss``, ``train/images_per_s``, ``lr``,
``val/loss``, ``val/mean_auc`` and ``val/auc/<label>`` for every label with a defined AUC.

Optional on purpose: without the package (``pip install 'cxr-bench[tensorboard]'``) or with
``CXR_BENCH_TENSORBOARD=0`` nothing is written, and a failure to write never stops a run (history.csv is
the record; the event files are a view of it). A resumed run purges points from the epoch it resumes at,
so an epoch cut short by a kill never shows twice.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ENV", "tensorboard_available", "RunBoard"]

ENV = "CXR_BENCH_TENSORBOARD"


def tensorboard_available() -> bool:
    """Whether event files can be written (the ``tensorboard`` package imports and the env allows it)."""
    if os.environ.get(ENV, "1").lower() in ("0", "false", "no"):
        return False
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except (ImportError, TypeError, AttributeError):  # absent, or its protobuf clashes: no event files
        return False
    return True


class RunBoard:
    """The event-file writer of one run directory (rank 0 only); every method is a no-op when disabled."""

    def __init__(self, run_dir: str | os.PathLike, *, resume_epoch: int = 0, enabled: bool | None = None) -> None:
        self.writer: Any = None
        if not (tensorboard_available() if enabled is None else enabled):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events at steps >= the resumed epoch's number (epochs are 1-based) are hidden.
            self.writer = SummaryWriter(log_dir=str(Path(run_dir)), purge_step=resume_epoch + 1 if resume_epoch
                                        else None)
        except (ImportError, OSError, TypeError, ValueError) as e:  # never fail a run for its dashboard
            log.warning("TensorBoard event files are not written to %s: %s", run_dir, e)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def epoch(self, row: Mapping[str, Any], per_label_auc: Mapping[str, float]) -> None:
        """Log one history.csv row (its ``epoch`` is the step) and the epoch's per-label validation AUC."""
        if self.writer is None:
            return
        step = int(row["epoch"])
        scalars = {"train/loss": row.get("train_loss"), "train/images_per_s": row.get("train_images_per_s"),
                   "lr": row.get("lr"), "val/loss": row.get("val_loss"), "val/mean_auc": row.get("val_mean_auc")}
        scalars.update({f"val/auc/{label}": auc for label, auc in per_label_auc.items()})
        try:
            for tag, value in scalars.items():
                if value is not None and math.isfinite(float(value)):
                    self.writer.add_scalar(tag, float(value), step)
            self.writer.flush()
        except (OSError, TypeError, ValueError) as e:
            log.warning("TensorBoard: writing epoch %d failed (%s); event files disabled for this run", step, e)
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:  # pragma: no cover - closing a writer whose disk went away
                pass
            self.writer = None
