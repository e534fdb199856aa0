"""Results: reading a run store, the leaderboard CSV, and comparisons (runs, papers, expert labels).

Nothing here trains or loads a model: everything is computed from the artifacts a run saved
(``config.json``, ``manifest.json``, ``metrics.json``, ``predictions/*.csv``).
"""

from .compare import (
    AblationPair,
    ablation_table,
    compare_leaderboards,
    compare_reference,
    find_ablation_pairs,
    pair_summary,
    paired_ablation,
)
from .expert import EXPERT_MAPPING, evaluate_expert, expert_labels, expert_table
from .leaderboard import (
    COLUMNS,
    Leaderboard,
    build_leaderboard,
    read_leaderboard,
    write_leaderboard,
)
from .references import REFERENCES, ReferenceMatch, match_reference, replication_dir
from .runs import RunRecord, iter_runs, load_runs

__all__ = [
    "COLUMNS", "EXPERT_MAPPING", "REFERENCES", "AblationPair", "Leaderboard", "ReferenceMatch", "RunRecord",
    "ablation_table", "build_leaderboard", "compare_leaderboards", "compare_reference", "evaluate_expert",
    "expert_labels", "expert_table", "find_ablation_pairs", "iter_runs", "load_runs", "match_reference",
    "pair_summary", "paired_ablation", "read_leaderboard", "replication_dir", "write_leaderboard",
]
