"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled classes), so
loading one never executes code and survives refactors of the engine. It holds everything a run needs
to continue bit-for-bit: model, optimizer, schedule and grad-scaler states, the global RNG states of
every rank, the epoch and step counters, the best validation metric and the history rows.

Keys (format version 1)::

    format, run_id, epoch (epochs completed), step (optimizer steps), finished (bool),
    best_metric, best_epoch, history (list of dicts), model, optimizer, schedule, scaler,
    rng (list, one capture_rng_state() per rank), world_size

Once a run has finished, :func:`compact_finished` drops model, optimizer, schedule and scaler from
``last.pt``: nothing will train from it again, and every reported number comes from ``best.pt``. A
compacted ``last.pt`` keeps the counters, history and ``finished`` flag, so the run still reads as done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingError
from ..utils.io import atomic_write_with

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"

__all__ = ["FORMAT_VERSION", "LAST", "BEST", "TRAINING_STATE", "save_checkpoint", "load_checkpoint",
           "load_model_state", "load_training_state", "compact_finished"]

# What only continuing training needs; a finished run drops it (it is most of a checkpoint's size).
TRAINING_STATE = ("model", "optimizer", "schedule", "scaler")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader (or a resumed run) never sees a torn file."""
    state = {"format": FORMAT_VERSION, **state}
    atomic_write_with(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a bad file; all mean the same to the user
        raise TrainingError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to restart that run"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TrainingError(
            f"checkpoint {path} has format {found!r}, this cxr-bench reads format {FORMAT_VERSION}; "
            "delete it to restart that run"
        )
    return state


def _state_mismatch(model: torch.nn.Module, state: Any) -> str | None:
    """What keeps ``state`` from loading into ``model`` (first differences, one line), or None."""
    if not isinstance(state, dict):
        return f"its model entry is a {type(state).__name__}, not a state dict"
    own = model.state_dict()
    problems = []
    for key, value in state.items():
        if key not in own:
            problems.append(f"unexpected tensor {key}")
        elif not torch.is_tensor(value):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(own[key].shape):
            problems.append(f"{key} has shape {tuple(value.shape)}, this model's is {tuple(own[key].shape)}")
    problems += [f"missing tensor {key}" for key in own if key not in state]
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def load_model_state(model: torch.nn.Module, state: Any, path: str | os.PathLike) -> None:
    """``model.load_state_dict(state)`` from checkpoint ``path``, or a :class:`TrainingError` naming the file.

    The run id in a checkpoint covers the config, not the code: a model definition that changed since the
    file was written (another cxr-bench or timm version, a hand-edited file) gives a checkpoint of the
    right run that does not fit. Say which tensors, which file, and what to do.
    """
    problem = _state_mismatch(model, state)
    if problem is None:
        try:
            model.load_state_dict(state)
            return
        except (RuntimeError, ValueError, TypeError) as e:
            problem = str(e).splitlines()[0]
    raise TrainingError(
        f"checkpoint {path} does not fit this run's model: {problem}. It was written by another model "
        f"definition (another cxr-bench or timm version?); delete {Path(path).parent} to train that run again, "
        "or run the cxr-bench version that wrote it"
    )


def load_training_state(optimizer: torch.optim.Optimizer, schedule: Any, state: dict[str, Any],
                        path: str | os.PathLike) -> None:
    """Optimizer and schedule states of a ``last.pt``, with the same kind of error as :func:`load_model_state`."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise TrainingError(
            f"checkpoint {path}: its optimizer or schedule state does not fit this run "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); delete {Path(path).parent} "
            "to train that run again"
        ) from e


def compact_finished(path: str | os.PathLike) -> int:
    """Drop :data:`TRAINING_STATE` from a *finished* ``last.pt``; returns the bytes saved (0: left as is).

    The model weights that matter are in ``best.pt`` beside it; a run killed during compaction keeps
    the full file (the write is atomic), which is harmless.
    """
    path = Path(path)
    state = load_checkpoint(path)
    if not state.get("finished") or not any(k in state for k in TRAINING_STATE):
        return 0
    if not (path.parent / BEST).is_file():
        log.warning("%s is missing; %s keeps its weights", path.parent / BEST, path)
        return 0
    before = path.stat().st_size
    for key in TRAINING_STATE:
        state.pop(key, None)
    save_checkpoint(path, state)
    return before - path.stat().st_size
