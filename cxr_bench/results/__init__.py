"""Results: reading a run store, the leaderboard CSV, and comparisons (runs, papers, expert labels).

Nothing here trains or loads a model: everything is computed from the artifacts a run saved
(``config.json``, ``manifest.json``, ``metrics.json``, ``predictions/*.csv``).

Import from the modules (``cxr_bench.results.leaderboard``, ``.compare``, ``.runs``, ...): the package itself
imports nothing, so a command that needs only ``references`` (the CLI's choices) does not load scipy.
"""
