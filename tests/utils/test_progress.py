"""Progress off a terminal: log lines every 5 % (rate-limited), a last line with the totals, no bar."""

from __future__ import annotations

import logging

import pytest
from tqdm.auto import tqdm

from cxr_bench.utils.progress import LogProgress, progress, progress_enabled, progress_mode


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cxr_bench.progress"]


def test_lines_every_five_percent_then_a_summary(caplog):
    caplog.set_level(logging.INFO, logger="cxr_bench.progress")
    clock = Clock()
    bar = LogProgress(range(100), desc="epoch 1/3", unit="batch", clock=clock)
    for _ in bar:
        clock.t += 1.0  # one second per batch
    lines = _messages(caplog)
    # 5 %, 10 %, ..., 95 %: 19 lines (100 % is the summary), then the summary with the total time.
    assert [line.split(":")[1].split("%")[0].strip() for line in lines[:-1]] == [str(p) for p in range(5, 100, 5)]
    assert lines[4] == "epoch 1/3:  25% 25/100 batch, 25 s (1 batch/s)"
    assert lines[-1] == "epoch 1/3: 100% 100/100 batch in 100.0 s (1 batch/s)"


def test_fast_loops_stay_silent_slow_ones_end_with_their_postfix(caplog):
    caplog.set_level(logging.INFO, logger="cxr_bench.progress")
    clock = Clock()
    with LogProgress(total=40, desc="bootstrap", unit="label", clock=clock) as bar:
        for _ in range(40):
            clock.t += 0.01  # 0.4 s in all: below the 2-s spacing, nothing worth a line
            bar.update(1)
    assert _messages(caplog) == []
    with LogProgress(total=40, desc="prepare", unit="img", clock=clock) as bar:
        for _ in range(40):
            clock.t += 0.06  # 2.4 s: the 5 % steps come every 0.12 s, so the 2-s spacing decides
            bar.update(1)
            bar.set_postfix(loss="0.5000", refresh=False)
    lines = _messages(caplog)
    assert lines[0] == "prepare:  85% 34/40 img, 2 s (16.7 img/s), loss=0.5000"  # 34 / (34 x 0.06 s)
    assert lines[1:] == ["prepare: 100% 40/40 img in 2.4 s (16.7 img/s), loss=0.5000"]


def test_an_abandoned_loop_claims_no_completion(caplog):
    caplog.set_level(logging.INFO, logger="cxr_bench.progress")
    bar = LogProgress(range(10), desc="val", clock=Clock())
    with pytest.raises(RuntimeError):
        for i in bar:
            if i == 3:
                raise RuntimeError("boom")
    assert _messages(caplog) == []


def test_modes(monkeypatch):
    monkeypatch.delenv("CXR_BENCH_PROGRESS", raising=False)
    # pytest captures stderr, so it is not a terminal here: the default is log lines.
    assert progress_mode(None) == "log" and isinstance(progress(range(3)), LogProgress)
    assert not progress_enabled(None)  # no bar is drawn (callers that log themselves ask this)
    assert progress_mode(True) == "bar" and progress_mode(False) == "off"
    bar = progress(range(3), enabled=False)
    assert isinstance(bar, tqdm) and bar.disable
    for value, mode in (("0", "off"), ("log", "log"), ("1", "bar")):
        monkeypatch.setenv("CXR_BENCH_PROGRESS", value)
        assert progress_mode(None) == mode
