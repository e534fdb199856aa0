"""SLURM ``extra`` options against a transcription of sbatch's own ``#SBATCH`` tokenizer and getopt_long
(tests/helpers/slurm_tokenizer.py): every value the checks accept reaches sbatch as exactly one argument,
naming exactly the option it was given as; values and names that sbatch would read otherwise are refused."""

from __future__ import annotations

import os
import re
import shlex

import pytest
import slurm_tokenizer as tok  # tests/helpers is on pytest's pythonpath
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr_bench.errors import ConfigError
from cxr_bench.runner.slurm import ALLOWED, SlurmOptions


def _sbatch_line(name: str, value: str | bool) -> str:
    from submitit.slurm.slurm import _as_sbatch_flag  # the function that writes the real script's lines

    return _as_sbatch_flag(name, value)


def _accepted(name: str, value: str | bool) -> dict:
    return SlurmOptions.resolve({}, {"extra": {name: value}}, {}).extra


def test_the_tokenizer_reproduces_the_reported_smuggle():
    """The attack that got through: submitit single-quotes the value for the shell, but sbatch treats a
    backslash as an escape inside quotes, so the quote closes elsewhere and a second option appears."""
    value = "abc\\'' --export=ALL,LD_PRELOAD=/tmp/x.so \\"
    argv = tok.sbatch_argv(_sbatch_line("account", value))
    assert len(argv) > 1 and any(tok.resolve_long_option(a)[0] == "export" for a in argv if a.startswith("--"))
    with pytest.raises(ConfigError, match="not a valid value") as err:
        _accepted("account", value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["chd", "chdi", "export-fil", "exp", "expo", "acc", "accoun", "out", "wra",
                                  "get-user", "container-i", "bbf", "uid", "gpus-per-nod"])
def test_prefixes_and_unlisted_options_are_refused(name):
    # The check knows only exact names; sbatch would read most of these as a real option.
    with pytest.raises(ConfigError, match="is not allowed"):
        _accepted(name, "x")


def test_sbatch_takes_unique_prefixes():
    assert tok.resolve_long_option("--chd=/x") == ("chdir", "/x")
    assert tok.resolve_long_option("--export-fil=/x") == ("export-file", "/x")
    assert tok.resolve_long_option("--accoun=a") == ("account", "a")


def test_allowed_names_are_real_sbatch_options_spelt_in_full():
    for name in ALLOWED:
        assert tok.resolve_long_option(f"--{name}") == (name, None), name


# Values drawn from each option's own pattern, plus hostile text: the property holds for every accepted one.
_HOSTILE = st.text(alphabet=st.sampled_from(list("ab0-_=,:@/\\'\"# \t&|*[]()!%$`;.+") + ["\u00a0", "\u2028"]),
                   min_size=1, max_size=24)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_accepted_value_splits_or_renames_the_option(data):
    name = data.draw(st.sampled_from(sorted(ALLOWED)))
    pattern = ALLOWED[name]
    if pattern is None or data.draw(st.booleans()):
        value: str | bool = data.draw(st.one_of(st.just(True), _HOSTILE))
    else:
        value = data.draw(st.from_regex(pattern, fullmatch=True))
    spelling = data.draw(st.sampled_from([name, name.replace("-", "_")]))
    try:
        extra = _accepted(spelling, value)
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    line = _sbatch_line(spelling, extra[spelling])
    argv = tok.sbatch_argv(line)
    assert len(argv) == 1, (line, argv)
    option, optarg = tok.resolve_long_option(argv[0])
    assert option == name
    assert optarg == (None if value is True else value)


def test_every_line_of_a_rendered_script_is_one_listed_option(tmp_path, monkeypatch):
    """The whole script submitit renders for a sweep with many extra options: sbatch reads only
    submitit's own options and the listed ones, one argument per line."""
    import submitit

    # A do-nothing srun on PATH lets submitit's SLURM executor start; nothing is submitted.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    def sbatch_script(folder, params):
        executor = submitit.AutoExecutor(folder=folder / "jobs" / "%j", cluster="slurm")
        executor.update_parameters(**params)
        return executor._executor._make_submission_file_text("true", "uid")

    extra = {"account": "proj-1", "qos": "high", "constraint": "a100&(ib|eth)", "gres": "gpu:a100:2",
             "comment": "cxr bench sweep (wang2017)", "exclusive": True, "mail_user": "me+x@lab.org",
             "nodelist": "gpu[01-04]", "mem_per_cpu": "4G"}
    opts = SlurmOptions.resolve({"partition": "gpu"}, {"extra": extra}, {})
    script = sbatch_script(tmp_path, opts.executor_parameters(1))
    sbatch_lines = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    argv = tok.sbatch_argv(script)
    assert len(argv) == len(sbatch_lines)
    own = {"array", "cpus-per-task", "error", "gpus-per-node", "job-name", "nodes", "ntasks-per-node",
           "open-mode", "output", "partition", "signal", "time", "wckey", "mem"}
    names = [tok.resolve_long_option(a)[0] for a in argv]
    assert set(names) <= own | set(ALLOWED)
    assert {n.replace("_", "-") for n in extra} <= set(names)
    for arg in argv:
        option, optarg = tok.resolve_long_option(arg)
        key = next((k for k in extra if k.replace("_", "-") == option), None)
        if key is not None:
            assert optarg == (None if extra[key] is True else extra[key])


def test_shell_quoting_alone_would_not_have_been_enough():
    """Why a character set and not quoting: for these values shlex and sbatch disagree."""
    for value in ["a\\'b", "a'b\\", "x\\ y", 'a"b\\"c']:
        line = f"#SBATCH --account={shlex.quote(value)}"
        try:
            argv = tok.sbatch_argv(line)
        except tok.Fatal:
            continue
        assert argv != [f"--account={value}"], value
        assert not re.fullmatch(ALLOWED["account"].pattern, value)
