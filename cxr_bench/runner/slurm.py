"""SLURM job options for ``--launcher submitit``, checked before they reach an sbatch script.

submitit writes each option as an ``#SBATCH --name=value`` line of a bash script. A value holding a newline
would start a new line of that script, a shell command run on the cluster; an option such as ``output``
(where the job's log goes, appended to) or ``export`` (the job's environment) would let a suite file
write to any file or run other code. Options come from a suite's ``[slurm]`` table, ``CXR_BENCH_SLURM_*``
variables and ``--slurm-*`` flags, all untrusted text, so every name and value is checked here, the same
way for all three: names are exactly one of :data:`ALLOWED` (sbatch takes any unique prefix of a long
option, ``--chd`` for ``--chdir``, so a list of refused names can always be walked around); values are
short, single-line, and drawn from the option's own character set. No set holds a quote, a backslash,
``#`` or whitespace (the comment is the exception for spaces), because sbatch re-tokenizes each
``#SBATCH`` line itself (``_get_argument`` in Slurm's ``src/sbatch/opt.c``: quotes group, a backslash escapes
even inside quotes, an unquoted ``#`` ends the line) and disagrees with the shell quoting submitit applies;
a value it would split could smuggle a second option (``--export=ALL,LD_PRELOAD=...``). Numbers are numbers
in range.

This module imports neither submitit nor torch, so a suite file's ``[slurm]`` table is checked when the
suite is loaded (``cxr-bench suites``, ``--dry-run``), not when jobs are submitted.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..utils.text import describe_char, first_unprintable

ENV_PREFIX = "CXR_BENCH_SLURM_"
MAX_VALUE_CHARS = 256

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]{1,128}")

# sbatch options a suite may not pass through ``extra`` (names after "_" -> "-", as submitit writes them).
DENIED: dict[str, str] = {
    **dict.fromkeys(("output", "error", "input", "open-mode", "array", "signal", "wrap", "parsable", "wait",
                     "test-only", "job-name"),
                    "submitit sets it to find the job's files and signals; changing it breaks the job or writes "
                    "its log elsewhere"),
    **dict.fromkeys(("chdir", "export", "export-file", "get-user-env", "container", "container-id", "bb", "bbf",
                     "uid", "gid"), "it changes what the job runs or as whom"),
    "partition": "use the partition option (--slurm-partition)",
    "time": "use timeout_min (--slurm-timeout-min)",
    "mem": "use mem_gb (--slurm-mem-gb)",
    "nodes": "a run uses one node",
    "ntasks-per-node": "a job is one task (torchrun starts the ranks)",
    "cpus-per-task": "use cpus_per_task (--slurm-cpus-per-task)",
    "gpus-per-node": "use gpus_per_node (--slurm-gpus-per-node)",
}

_LIST = r"[A-Za-z0-9_.,+-]"
# The sbatch options a suite may pass through ``extra`` (names after "_" -> "-", as submitit writes them),
# each with the characters its value may hold (``True``, a flag without value, is always allowed).
ALLOWED: dict[str, re.Pattern[str] | None] = {
    **dict.fromkeys(("account", "qos", "reservation", "wckey", "mcs-label", "clusters", "licenses",
                     "partition-hint"), re.compile(f"{_LIST}{{1,128}}")),
    **dict.fromkeys(("constraint", "cluster-constraint"), re.compile(r"[A-Za-z0-9_.,:&|*\[\]()!-]{1,128}")),
    **dict.fromkeys(("gres", "gpus", "gpus-per-task", "gpus-per-socket", "tres-per-task"),
                    re.compile(r"[A-Za-z0-9_.,:=/-]{1,128}")),
    **dict.fromkeys(("mem-per-cpu", "mem-per-gpu", "tmp"), re.compile(r"[0-9]{1,12}[KMGTkmgt]?")),
    **dict.fromkeys(("cpus-per-gpu", "ntasks-per-gpu", "cores-per-socket", "sockets-per-node",
                     "threads-per-core"), re.compile(r"[0-9]{1,6}")),
    **dict.fromkeys(("nodelist", "exclude"), re.compile(r"[A-Za-z0-9_.,\[\]-]{1,128}")),
    "nice": re.compile(r"-?[0-9]{1,6}"),
    "priority": re.compile(r"[0-9]{1,10}|TOP|top"),
    "mail-type": re.compile(r"[A-Za-z0-9_,]{1,128}"),
    "mail-user": re.compile(r"[A-Za-z0-9_.+@-]{1,128}"),
    "comment": re.compile(r"[A-Za-z0-9_.,:;@+=/() -]{1,128}"),
    "hint": re.compile(r"[a-z_]{1,32}"),
    "distribution": re.compile(r"[A-Za-z0-9*:,]{1,64}"),
    "begin": re.compile(r"[A-Za-z0-9:+-]{1,64}"),
    "deadline": re.compile(r"[A-Za-z0-9:+-]{1,64}"),
    "time-min": re.compile(r"[0-9:-]{1,32}"),
    "dependency": re.compile(r"[A-Za-z0-9_:,?+-]{1,128}"),
    "switches": re.compile(r"[0-9]{1,6}(@[0-9:-]{1,16})?"),
    "acctg-freq": re.compile(r"[a-z0-9=,]{1,64}"),
    "cpu-freq": re.compile(r"[A-Za-z0-9:-]{1,64}"),
    "gres-flags": re.compile(r"[a-z,-]{1,64}"),
    "profile": re.compile(r"[A-Za-z,]{1,64}"),
    "network": re.compile(r"[A-Za-z0-9_.,=-]{1,128}"),
    "power": re.compile(r"[a-z,_]{1,64}"),
    "exclusive": re.compile(r"user|mcs|topo"),
    **dict.fromkeys(("requeue", "no-requeue", "contiguous", "overcommit", "spread-job", "use-min-nodes",
                     "reboot", "hold", "oversubscribe", "kill-on-invalid-dep"), None),
}

# Typed options: (type, smallest value).
_TYPED: dict[str, tuple[type, float]] = {"timeout_min": (int, 1), "gpus_per_node": (int, 0),
                                         "cpus_per_task": (int, 1), "mem_gb": (float, 0), "nodes": (int, 1),
                                         "array_parallelism": (int, 1)}


@dataclass
class SlurmOptions:
    """Job parameters for ``--launcher submitit`` (ignored by submitit's local executor, except the time
    limit and GPU count). Precedence: command line > ``CXR_BENCH_SLURM_*`` environment > the suite's
    ``[slurm]`` table > these defaults."""

    partition: str | None = None
    timeout_min: int = 24 * 60
    gpus_per_node: int = 0
    cpus_per_task: int = 8
    mem_gb: float | None = None
    nodes: int = 1
    array_parallelism: int = 32
    # Anything else sbatch accepts (account, qos, constraint, ...): --slurm-extra account=abc
    extra: dict[str, str | bool] = field(default_factory=dict)

    @classmethod
    def resolve(cls, cli: Mapping[str, Any], suite: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None, *, suite_source: str = "suite [slurm]") -> SlurmOptions:
        """Merge the three sources, checking every name and value; errors name the source and the option."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        fields = cls.__dataclass_fields__
        for source_name, source in ((suite_source, suite or {}), ("environment", _from_env(env)),
                                    ("command line", cli)):
            for key, value in source.items():
                if value is None:
                    continue
                if key not in fields:
                    raise ConfigError(f"{source_name}: unknown SLURM option {key!r}; known: "
                                      f"{', '.join(sorted(fields))}")
                if key == "extra":
                    values["extra"] = {**values.get("extra", {}), **parse_extra(value, source_name)}
                else:
                    values[key] = _coerce(key, value, source_name)
        opts = cls(**values)
        if opts.nodes != 1:
            raise ConfigError(f"SLURM nodes={opts.nodes}: a run uses one node (torchrun --standalone); "
                              "spread runs over nodes with the job array instead")
        return opts

    def executor_parameters(self, nproc: int) -> dict[str, Any]:
        """``executor.update_parameters`` keywords: one task per job, ``nproc`` torchrun ranks inside it."""
        params: dict[str, Any] = {
            "timeout_min": self.timeout_min, "nodes": 1, "tasks_per_node": 1,
            "cpus_per_task": self.cpus_per_task, "gpus_per_node": max(self.gpus_per_node, 0),
            "slurm_array_parallelism": self.array_parallelism, "name": "cxr-bench",
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        if nproc > 1 and self.gpus_per_node and self.gpus_per_node < nproc:
            raise ConfigError(f"--nproc-per-run {nproc} needs as many GPUs, but --slurm-gpus-per-node is "
                              f"{self.gpus_per_node}")
        return params


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {key[len(ENV_PREFIX):].lower(): value for key, value in env.items() if key.startswith(ENV_PREFIX)}


def check_text(value: str, what: str) -> str:
    """``value`` if it is one printable line of at most :data:`MAX_VALUE_CHARS` characters."""
    bad = first_unprintable(value)
    if bad is not None:
        raise ConfigError(f"{what}: the value holds the control character {describe_char(bad)}; an sbatch "
                          "option is one line of printable text")
    if not value.strip():
        raise ConfigError(f"{what}: the value is empty")
    if len(value) > MAX_VALUE_CHARS:
        raise ConfigError(f"{what}: the value is {len(value)} characters long; at most {MAX_VALUE_CHARS}")
    return value


def check_option_name(name: Any, source: str) -> str:
    """An sbatch option name for ``extra`` (as given; submitit turns "_" into "-"): exactly one of
    :data:`ALLOWED`, never a prefix or an alias of an option."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{source}: SLURM extra option name {name!r} is not an sbatch option name "
                          "(lower-case letters, digits, '-' and '_', starting with a letter, at most 40)")
    option = name.replace("_", "-")
    reason = DENIED.get(option)
    if reason:
        raise ConfigError(f"{source}: SLURM extra option {name!r} is not allowed: {reason}")
    if option not in ALLOWED:
        raise ConfigError(f"{source}: SLURM extra option {name!r} is not allowed: cxr-bench passes through only "
                          f"these sbatch options, spelt in full: {', '.join(sorted(ALLOWED))}")
    return name


def check_option_value(name: str, value: str, what: str) -> str:
    """``value`` if it is drawn from the character set of option ``name``: nothing that sbatch's own
    ``#SBATCH`` tokenizer would read as a quote, an escape, a comment or a separator."""
    pattern = ALLOWED[name.replace("_", "-")]
    if pattern is None:
        raise ConfigError(f"{what}: this option is a flag; write it as true (e.g. {name} = true)")
    if not pattern.fullmatch(value):
        raise ConfigError(f"{what}: {value!r} is not a valid value for this option (sbatch re-reads quotes, "
                          f"backslashes, '#' and spaces itself); it must match {pattern.pattern}")
    return value


def parse_extra(value: Any, source: str) -> dict[str, str | bool]:
    """``extra`` from a TOML table, a list of ``key=value`` strings or a comma-separated string (environment);
    ``true`` makes a flag without value (``exclusive = true`` -> ``#SBATCH --exclusive``)."""
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: SLURM extra must be a table or key=value items, got {value!r}")
        items = []
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{source}: SLURM extra parameter {item!r} must be key=value, e.g. account=abc")
            k, sep, v = item.partition("=")
            if not sep or not k.strip():
                raise ConfigError(f"{source}: SLURM extra parameter {item!r} must be key=value, e.g. account=abc")
            items.append((k.strip(), v.strip()))
    out: dict[str, str | bool] = {}
    for k, v in items:
        name = check_option_name(k, source)
        what = f"{source}: SLURM extra option {name!r}"
        if v is True:
            if ALLOWED[name.replace("_", "-")] is not None and name.replace("_", "-") != "exclusive":
                raise ConfigError(f"{what}: this option takes a value, not true")
            out[name] = True
        elif isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(f"{what}: expected text, a number or true, got {v!r}")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{what}: {v!r} is not a finite number")
        else:
            out[name] = check_option_value(name, check_text(str(v), what), what)
    return out


def _coerce(key: str, value: Any, source: str) -> Any:
    what = f"{source}: SLURM option {key} = {value!r}"
    if key == "partition":
        if not isinstance(value, str) or not _PARTITION.fullmatch(value):
            raise ConfigError(f"{what} is not a partition name (letters, digits, '_', '.', '-', ',')")
        return value
    tp, low = _TYPED[key]
    if isinstance(value, str):
        check_text(value, what)
        try:
            number: Any = tp(value.strip())
        except ValueError:
            raise ConfigError(f"{what} is not a valid {tp.__name__}") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} is not a valid {tp.__name__}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{what} is not a finite number")
    elif tp is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{what} is not a whole number")
    else:
        number = tp(value)
    if not math.isfinite(number) or number < low or (key == "mem_gb" and number <= 0):
        raise ConfigError(f"{what} is out of range: expected {'a number > 0' if key == 'mem_gb' else f'>= {low}'}")
    return number
