"""cxr-bench: a reproducible benchmark and paper-replication suite for NIH ChestX-ray14."""

__version__ = "0.1.0"
