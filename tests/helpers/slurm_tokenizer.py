"""How sbatch reads the ``#SBATCH`` lines of a batch script, transcribed from Slurm's C source (no sbatch
exists here).

- :func:`get_argument` is ``_get_argument`` of ``src/sbatch/opt.c`` (SchedMD/slurm, commit 00d7634a): skip
  leading whitespace; then copy characters until unquoted whitespace, a newline or the end; a backslash
  escapes the next character *also inside quotes*; ``'`` or ``"`` opens a quote closed by the same
  character; an unquoted, unescaped ``#`` ends the line (a comment); an unmatched quote is fatal.
- :func:`sbatch_argv` is ``_opt_batch_script``: lines starting with ``#SBATCH`` are split with it until
  the first line that is not a comment.
- :func:`resolve_long_option` is how glibc's ``getopt_long`` picks a long option: an exact name wins,
  otherwise a unique prefix (``--chd`` is ``--chdir``); ``--name=value`` keeps the value in the same
  argument.
"""

from __future__ import annotations

# sbatch's long options (src/sbatch/opt.c ``long_options[]`` at that commit, plus the ones later releases
# moved into src/common/slurm_opt.c), enough for prefix resolution.
SBATCH_LONG_OPTIONS = (
    "account", "array", "batch", "bb", "bbf", "begin", "chdir", "cluster-constraint", "clusters", "comment",
    "constraint", "container", "container-id", "contiguous", "core-spec", "cores-per-socket", "cpu-freq",
    "cpus-per-gpu", "cpus-per-task", "deadline", "delay-boot", "dependency", "distribution", "error",
    "exclude", "exclusive", "export", "export-file", "extra", "extra-node-info", "get-user-env", "gid",
    "gpu-bind", "gpu-freq", "gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres", "gres-flags",
    "help", "hint", "hold", "ignore-pbs", "immediate", "input", "job-name", "kill-on-invalid-dep", "licenses",
    "mail-type", "mail-user", "mcs-label", "mem", "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus",
    "network", "nice", "no-kill", "no-requeue", "nodefile", "nodelist", "nodes", "ntasks", "ntasks-per-core",
    "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "open-mode", "output", "overcommit",
    "oversubscribe", "parsable", "partition", "power", "prefer", "priority", "profile", "propagate", "qos",
    "quiet", "reboot", "requeue", "reservation", "signal", "sockets-per-node", "spread-job", "switches",
    "test-only", "thread-spec", "threads-per-core", "time", "time-min", "tmp", "tres-per-task", "uid",
    "usage", "use-min-nodes", "verbose", "version", "wait", "wait-all-nodes", "wckey", "wrap",
    "partition-hint", "acctg-freq",
)


class Fatal(Exception):
    """sbatch would stop with ``fatal()``."""


def _isspace(c: str) -> bool:
    return c in " \t\n\v\f\r"


def get_argument(line: str) -> tuple[str | None, int]:
    """``(argument, skipped)``; argument is None where the line holds no more arguments."""
    i = 0
    while i < len(line) and _isspace(line[i]):
        i += 1
    if i == len(line):
        return None, i
    out: list[str] | None = None
    q_char = ""
    escape = quoted = False
    while i < len(line) and (quoted or not _isspace(line[i])) and line[i] != "\n":
        c = line[i]
        if escape:
            escape = False
        elif c == "\\":
            escape = True
            i += 1
            continue
        elif quoted:
            if c == q_char:
                quoted = False
                i += 1
                continue
        elif c in "\"'":
            quoted, q_char = True, c
            i += 1
            continue
        elif c == "#":
            break
        if out is None:
            out = []
        out.append(c)
        i += 1
    if quoted:
        raise Fatal(f"Unmatched `{q_char}` in [{line}]")
    return ("".join(out) if out is not None else None), i


def sbatch_argv(script: str) -> list[str]:
    """The arguments sbatch takes from a script's ``#SBATCH`` lines."""
    argv: list[str] = []
    for line in script.split("\n"):
        if line.startswith("#SBATCH"):
            rest = line[len("#SBATCH"):]
        elif line.startswith("#SLURM"):
            rest = line[len("#SLURM"):]
        else:
            stripped = line.lstrip(" \t\v\f\r")
            if stripped and not stripped.startswith("#"):
                break
            continue
        while True:
            arg, skipped = get_argument(rest)
            # _get_argument returns NULL both at the end and for a line whose next token is a comment.
            if arg is None:
                break
            argv.append(arg)
            rest = rest[skipped:]
    return argv


def resolve_long_option(arg: str) -> tuple[str, str | None]:
    """``(option, value)`` for one ``--name[=value]`` argument, as getopt_long resolves it."""
    if not arg.startswith("--"):
        raise ValueError(f"not a long option: {arg!r}")
    name, sep, value = arg[2:].partition("=")
    if name in SBATCH_LONG_OPTIONS:
        return name, value if sep else None
    matches = [o for o in SBATCH_LONG_OPTIONS if o.startswith(name)]
    if len(matches) != 1:
        raise ValueError(f"unrecognized or ambiguous option {arg!r}: {matches}")
    return matches[0], value if sep else None
