"""Facts about the machine a number was measured on, shared by run provenance and cost measurements."""

from __future__ import annotations

import platform

__all__ = ["cpu_model_name"]


def cpu_model_name() -> str | None:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows, else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None
