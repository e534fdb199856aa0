"""Suites and the runner: a suite file expands into runs (:mod:`.suite`), runs land in a run store
(:mod:`.store`) with their provenance (:mod:`.provenance`), a sweep executes them (:mod:`.sweep`) through a
launcher (:mod:`.launchers`: in-process, or submitit jobs on SLURM).
"""
