"""The report templates' names and the per-cell timeout: importable without papermill, nbformat or
nbconvert, so the CLI can build its parser (and every other sub-command can run) where they are absent."""

from __future__ import annotations

# reports/<name>.ipynb, in the order they are rendered.
TEMPLATES: tuple[str, ...] = ("replication", "ablation", "leaderboard")
# Rendered after those only when the store has what they show: ``generalization`` when a run was scored on an
# external test set (``cxr-bench evaluate --dataset``).
OPTIONAL_TEMPLATES: tuple[str, ...] = ("generalization",)
DEFAULT_CELL_TIMEOUT = 600  # seconds per notebook cell
