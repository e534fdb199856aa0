"""Exceptions that say what was wrong, where, and what to do.

Every error the library raises on bad input derives from :class:`CxrBenchError`, so the CLI can print it
as one line (no traceback) and exit non-zero, while a programming error still shows its traceback.
"""

from __future__ import annotations


class CxrBenchError(Exception):
    """Base class for every user-facing error of cxr-bench."""


class ConfigError(CxrBenchError):
    """A configuration or suite file is invalid (unknown key, bad value, unknown registry name)."""


class MetadataError(CxrBenchError):
    """A metadata file (Data_Entry, BBox_List, split list) is malformed. Message names file, line and value."""


class SplitError(CxrBenchError):
    """A split is invalid: names missing from the metadata, overlap, or a patient on both sides."""


class ImageError(CxrBenchError):
    """An image could not be found or decoded. Message names the file."""


class CacheError(CxrBenchError):
    """An image cache is missing, stale or inconsistent."""


class WeightsError(CxrBenchError):
    """Pretrained weights could not be found or loaded. Message names what was looked for and where."""


class TrainingError(CxrBenchError):
    """Training cannot go on (for example a non-finite loss)."""


class RunStoreError(CxrBenchError):
    """A run store path, lock or record is invalid."""


class ReportError(CxrBenchError):
    """A report notebook failed to execute. Message names the cell."""


def errno_suffix(e: OSError) -> str:
    """`` [ENOSPC]``: the symbolic name of an OS error's errno, for a message a user can search; empty without
    one."""
    import errno

    return f" [{errno.errorcode[e.errno]}]" if e.errno is not None and e.errno in errno.errorcode else ""
