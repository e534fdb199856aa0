"""runner/console.py and the sweep's default console (cxr_bench.cli.sweep_console): budgets in lines.

The terminal budget is measured in a real pseudo-terminal (the ``pty`` module), counting the lines left on
an 80 x 24 screen once carriage returns and cursor moves are applied, as a person would see them.
"""

from __future__ import annotations

import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from cxr_bench.runner.console import CONSOLE_LOG, RunLines
from cxr_bench.runner.planning import plan_sweep

_ESC = re.compile(r"\x1b\[([?\d;]*)([A-Za-z])")


def screen_lines(text: str, width: int = 80) -> list[str]:
    """What stays on a terminal ``width`` columns wide: ``\\r`` returns to the line's start, ``ESC[nA`` moves
    up, ``ESC[K`` clears to the end of the line, a long line wraps."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(text):
        m = _ESC.match(text, i)
        if m:
            n = int(m.group(1)) if m.group(1).isdigit() else 1
            if m.group(2) == "A":
                row = max(0, row - n)
            elif m.group(2) == "K":
                del lines[row][col:]
            i = m.end()
            continue
        ch = text[i]
        i += 1
        if ch == "\n" or (ch != "\r" and col >= width):
            row, col = row + 1, 0
            while row >= len(lines):
                lines.append([])
            if ch == "\n":
                continue
        if ch == "\r":
            col = 0
            continue
        line = lines[row]
        line.extend(" " * (col - len(line) + 1))
        line[col] = ch
        col += 1
    out = ["".join(x).rstrip() for x in lines]
    while out and not out[-1]:
        out.pop()
    return out


def test_screen_lines_applies_carriage_returns_cursor_moves_and_wrapping():
    assert screen_lines("bar 10%\rbar 50%\rbar 100%\ndone\n") == ["bar 100%", "done"]
    assert screen_lines("a\nb\n\x1b[1Ac\x1b[K\n") == ["a", "c"]
    assert screen_lines("x" * 100, width=80) == ["x" * 80, "x" * 20]


def test_one_line_per_finished_run_and_each_warning_once(caplog):
    caplog.set_level(logging.INFO, logger=CONSOLE_LOG.name)
    lines = RunLines(3)
    same = "no positive or no negative case (AUC null) in val: Hernia"
    lines.finished("a1", "run-a", "completed", test_mean_auc=0.5123, wall_seconds=33.4, warnings=same)
    lines.finished("b2", "run-b", "completed", test_mean_auc=0.49, wall_seconds=45, warnings=same)
    lines.finished("c3", "run-c", "failed", detail="TrainingError: out of memory\n  on the GPU")
    said = [r.getMessage() for r in caplog.records if r.name == CONSOLE_LOG.name]
    assert said == ["[1/3] run-a: test AUC 0.512, 33s",
                    f"  note (said once): {same}; details in log.txt",
                    "[2/3] run-b: test AUC 0.490, 45s",
                    "[3/3] run-c: FAILED (run c3, see its log.txt): TrainingError: out of memory on the GPU"]


def _run_in_pty(args: list[str], *, cols: int = 80, rows: int = 24, timeout: float = 900) -> str:
    master, slave = pty.openpty()
    import fcntl

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "CXR_BENCH_PROGRESS"}
    env.update(TERM="xterm", COLUMNS=str(cols), LINES=str(rows))
    proc = subprocess.Popen([sys.executable, "-m", "cxr_bench", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError(f"cxr-bench {' '.join(args)} wrote nothing for {timeout}s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_smoke_suite_fits_25_screen_lines_in_a_terminal_and_the_demo_120_off_it(tmp_path):
    out = tmp_path / "runs"
    text = _run_in_pty(["run", "--suite", "smoke", "--runs", str(out)])
    screen = screen_lines(text)
    shown = "\n".join(screen)
    assert len(screen) <= 25, shown
    # one line per run, the banner, the reports; nothing from the kernel, traitlets, tqdm or papermill
    runs = [line for line in screen if re.match(r"\[\d/2\] mobilenet_v1-", line)]
    assert len(runs) == 2 and all("test AUC 0." in line for line in runs), shown
    assert "NOT COMPARABLE WITH ANY PAPER: 2 run(s)" in shown and shown.count("report: ") == 3
    for noise in ("IPKernelApp", "KeyboardInterrupt", "traitlets", "papermill", "Traceback", "epoch 1/1"):
        assert noise not in text, noise
    # Off a terminal the same lines print, without the suite bar (its redraws are gone from the screen
    # already). The demo (wang2017's sample profile) prints the same frame with one line per run and at most
    # one note per run: the budget is 120 lines.
    frame = len(screen) - len(runs)
    demo_runs = len(plan_sweep("wang2017").runs)
    assert frame + 2 * demo_runs <= 120, (frame, demo_runs)
    assert Path(out / "smoke" / "leaderboard.csv").is_file()
