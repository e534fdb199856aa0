"""Names of the files the engine writes into a run's folder that the layers above read back; torch-free, so a
reader of the run store (the leaderboard, a report) names them without importing the engine's torch code."""

from __future__ import annotations

# Timings of the run's model (engine/cost.py; `cxr-bench export` writes it too), read back by
# cxr_bench.runner.store.read_cost. Beside metrics.json, not in it: timings describe the machine, so they stay out
# of the file that a resumed run reproduces byte for byte.
COST_FILE = "cost.json"
