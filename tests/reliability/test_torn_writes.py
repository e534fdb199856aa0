"""Results files are never half-written: SIGKILL a process in the middle of a real writer (a large
predictions CSV through ``write_predictions``) and the file on disk is still the previous, complete one.

tests/utils/test_io.py kills ``atomic_open`` itself; this is the same guarantee one level up, at a writer the
engine uses, so a writer that stopped going through ``cxr_bench.utils.io`` would fail here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cxr_bench.metrics.predictions import read_predictions, write_predictions

LABELS = ["Atelectasis", "Effusion", "Mass"]

# The child kills itself from a watcher thread as soon as the writer has put bytes on disk (in the atomic
# writer's temporary file, or in the target itself if a writer wrote in place): a kill that always lands
# mid-write, however fast or slow the machine.
CHILD = textwrap.dedent("""
    import os, pathlib, signal, sys, threading, time
    import numpy as np
    from cxr_bench.metrics.predictions import write_predictions

    target = pathlib.Path(sys.argv[1])
    old_size = target.stat().st_size

    def watch():
        while True:
            for p in target.parent.iterdir():
                try:
                    size = p.stat().st_size
                except FileNotFoundError:  # a temporary file renamed away between listing and stat
                    continue
                if (p != target and size > 0) or (p == target and size != old_size):
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)

    n = 400_000
    rng = np.random.default_rng(1)
    y, prob = (rng.random((n, 3)) < 0.3).astype(np.int8), rng.random((n, 3))
    images = [f"{i // 2 + 1:08d}_{i % 2:03d}.png" for i in range(n)]
    threading.Thread(target=watch, daemon=True).start()
    write_predictions(target, images, [i // 2 + 1 for i in range(n)], y, prob, ["Atelectasis", "Effusion", "Mass"])
    print("the write finished before the kill")
""")


@pytest.mark.slow
def test_sigkill_inside_write_predictions_keeps_the_previous_file(tmp_path):
    target = tmp_path / "test.csv"
    rng = np.random.default_rng(0)
    y, prob = (rng.random((50, 3)) < 0.3).astype(np.int8), rng.random((50, 3))
    images = [f"{i + 1:08d}_000.png" for i in range(50)]
    write_predictions(target, images, list(range(1, 51)), y, prob, LABELS)
    before = target.read_bytes()

    proc = subprocess.run([sys.executable, "-c", CHILD, str(target)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert target.read_bytes() == before, "the kill tore the file"  # the old file, whole
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert leftovers, "killed before anything was written; the test proved nothing"
    again = read_predictions(target, LABELS)
    assert len(again) == 50 and np.array_equal(again.y_true, y)
