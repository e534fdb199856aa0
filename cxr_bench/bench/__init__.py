"""Benchmarks: how fast, at what cost, and where the time goes.

The measuring scripts live at the repository root in ``benchmarks/`` (timm's layout: thin scripts over a
package that does the work). This package is the package side, one module per job:

- :mod:`.measure`: the measurement core the scripts share (:func:`~.measure.measure_model`,
  :func:`~.measure.fit_power_law`, :func:`~.measure.timed`, :func:`~.measure.machine_info`: the machine and
  commit every result names), so a train step is timed the same way everywhere;
- :mod:`.results`: the results format, one plain CSV per benchmark under ``benchmarks/results/``, one row per
  measured setting, with the machine description, package versions and commit in its sidecar
  (``<name>.csv.json``), because a throughput number without the machine that produced it cannot be
  compared with anything (:func:`~.results.write_results_csv`, the one writer every script uses); and
  the figures the package ships from them (``cxr_bench/bundled/benchmarks.json``, what a dry run's
  estimates read: an installed wheel has no ``benchmarks/`` folder);
- :mod:`.readme`: the README table rendered from the CSVs;
- :mod:`.args`: the command-line types the scripts share.

Running them is the scripts' business (``benchmarks/run_all.py``, ``make bench``), as in timm: the package
never loads a script by path.
"""
