"""cxr-bench: a reproducible benchmark and paper-replication suite for NIH ChestX-ray14."""

from importlib.metadata import PackageNotFoundError, version

try:  # one version source: the installed distribution's metadata (pyproject.toml's `version`)
    __version__ = version("cxr-bench")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
