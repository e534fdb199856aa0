"""Suite files: loading, grid expansion, profiles and rules, dedupe across blocks, ablation pairs, and
errors that name the file and the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cxr_bench.cli import main as cli_main
from cxr_bench.config import RunConfig
from cxr_bench.errors import ConfigError
from cxr_bench.runner.precheck import check_registry_names
from cxr_bench.runner.suite import load_suite, parse_overrides, shipped_suites, varying_factors


# ---------------------------------------------------------------------------------------------- shipped
def test_shipped_suites_listed():
    assert {"wang2017", "smoke"} <= set(shipped_suites())


# Per seed, read off wang2017.toml: replication 5 backbones x 2 label sets (10, fine-tuned); backbone-training
# 4 backbones x 2 label sets x {fine-tuned, frozen}, whose fine-tuned half is the replication runs (8 new);
# grayscale 3, channels 2, heads 3 around the shared MobileNetV1/ChestX-ray14 baseline (2 + 1 + 2 new, gap
# included); CheXNet 1. 10 + 8 + 2 + 1 + 2 + 1 = 24 runs and 8 + 2 + 1 + 2 = 13 pairs. The sample profile
# leaves backbone-training out (the frozen reading is a paper-profile question: 8 runs and 8 pairs fewer)
# and adds the phantom sanity run: 17 runs, 5 pairs.
WANG_RUNS_PER_SEED = {"paper": 24, "sample": 17}
WANG_PAIRS_PER_SEED = {"paper": 13, "sample": 5}


@pytest.mark.parametrize("profile", ["paper", "sample"])
def test_wang2017_expansion(profile):
    suite = load_suite("wang2017")
    all_runs = suite.expand(profile)
    # The paper profile trains every configuration with 5 seeds (0-4), the sample profile with seed 0.
    seeds = {"paper": [0, 1, 2, 3, 4], "sample": [0]}[profile]
    assert sorted({r.config.seed for r in all_runs}) == seeds
    n = WANG_RUNS_PER_SEED[profile]
    assert len(all_runs) == n * len(seeds)
    assert len({r.run_id for r in all_runs}) == n * len(seeds)
    # Runs that differ only in seed are one configuration; each configuration has every seed once.
    by_conf: dict[str, list[int]] = {}
    for r in all_runs:
        by_conf.setdefault(r.configuration_id, []).append(r.config.seed)
    assert len(by_conf) == n and all(sorted(v) == seeds for v in by_conf.values())
    # Seed 0 is the default, so its run id is the configuration id (the pre-seeds run ids are kept).
    assert {r.configuration_id for r in all_runs if r.config.seed == 0} == \
        {r.run_id for r in all_runs if r.config.seed == 0}
    # Every ablation pair stays within one seed.
    by_id = {r.run_id: r for r in all_runs}
    assert all(by_id[p.reference].config.seed == r.config.seed for r in all_runs for p in r.pairs)

    for seed in seeds:
        _check_wang2017_structure([r for r in all_runs if r.config.seed == seed], profile)


def _check_wang2017_structure(runs, profile):
    assert len(runs) == WANG_RUNS_PER_SEED[profile]
    by_block: dict[str, list] = {}
    for r in runs:
        for b in r.blocks:
            by_block.setdefault(b, []).append(r)
    expected_blocks = {"replication": 10, "backbone-training": 16, "ablation-grayscale": 3, "ablation-channels": 2,
                       "ablation-head": 3, "chexnet": 1}
    if profile == "sample":
        del expected_blocks["backbone-training"]
        expected_blocks["sanity"] = 1
    assert {b: len(v) for b, v in by_block.items()} == expected_blocks
    backbones = sorted({r.config.model.backbone for r in by_block["replication"]})
    assert backbones == ["alexnet", "googlenet", "mobilenet_v1", "resnet50", "vgg16"]
    optimizer = {"paper": "sgd", "sample": "adamw"}[profile]
    assert {(r.config.model.head, r.config.loss.name, r.config.optim.optimizer, r.config.model.freeze_backbone)
            for r in by_block["replication"]} == {("wang2017", "wcel", optimizer, False)}
    pairs = {(p.block, p.factor, p.value, r.config.model.backbone, r.config.data.label_set): (p.reference, r)
             for r in runs for p in r.pairs}
    assert len(pairs) == WANG_PAIRS_PER_SEED[profile]

    # backbone-training: each frozen run's reference is the replication run of its backbone and label set.
    replication = {(r.config.model.backbone, r.config.data.label_set): r for r in by_block["replication"]}
    frozen = [r for r in by_block.get("backbone-training", []) if r.config.model.freeze_backbone]
    assert len(frozen) == (8 if profile == "paper" else 0) and all(r.blocks == ["backbone-training"] for r in frozen)
    for r in frozen:
        key = (r.config.model.backbone, r.config.data.label_set)
        assert pairs[("backbone-training", "model.freeze_backbone", True, *key)] == (replication[key].run_id, r)

    # The MobileNetV1 / ChestX-ray14 replication run is the shared reference of the ablations.
    baseline = replication[("mobilenet_v1", "chestxray14")]
    assert baseline.blocks == ["replication", "ablation-grayscale", "ablation-channels", "ablation-head"]
    mb = ("mobilenet_v1", "chestxray14")
    for value in ("gamma", "lstar"):
        ref, run = pairs[("ablation-grayscale", "data.grayscale", value, *mb)]
        assert ref == baseline.run_id and run.config.data.grayscale == value
    (stem,) = [r for r in by_block["ablation-channels"] if r.config.data.channels == "stem"]
    assert pairs[("ablation-channels", "data.channels", "stem", *mb)] == (baseline.run_id, stem)
    gap = [r for r in by_block["ablation-head"] if r.config.model.head == "gap"][0]
    assert pairs[("ablation-head", "model.head", "attention", *mb)][0] == gap.run_id
    assert pairs[("ablation-head", "model.head", "wang2017", *mb)] == (gap.run_id, baseline)

    chexnet = by_block["chexnet"][0].config
    assert (chexnet.model.backbone, chexnet.model.head, chexnet.loss.name) == ("densenet121", "gap", "bce")
    # CheXNet's own recipe (its block's set) is not overridden by either profile's general settings.
    assert (chexnet.data.augment, chexnet.optim.weight_decay, chexnet.optim.scheduler) == ("flip", 0.0, "plateau")


def test_wang2017_profiles_differ_where_documented():
    suite = load_suite("wang2017")
    paper_runs = [r for r in suite.expand("paper") if r.config.seed == 0]
    paper = {r.config.model.backbone: r.config for r in paper_runs if r.blocks[0] == "replication"}
    assert paper["vgg16"].data.image_size == 1024 and not paper["vgg16"].model.freeze_backbone
    assert paper["vgg16"].model.pretrained == "imagenet"
    assert paper["vgg16"].optim.batch_size * paper["vgg16"].optim.accum_steps == 80
    chexnet = [r.config for r in paper_runs if r.blocks == ["chexnet"]][0]
    assert chexnet.data.image_size == 224 and not chexnet.model.freeze_backbone and chexnet.optim.accum_steps == 1
    sample = {r.config.model.backbone: r.config for r in suite.expand("sample") if r.blocks[0] == "replication"}
    assert all(c.model.pretrained is None and c.data.image_size == 64 for c in sample.values())
    assert sample["vgg16"].optim.max_steps_per_epoch < sample["alexnet"].optim.max_steps_per_epoch
    assert suite.profiles["paper"].needs_data_root and not suite.profiles["sample"].needs_data_root


# ---------------------------------------------------------------------------------------------- hand-written
HAND_WRITTEN = """
[[block]]
name = "grid"
grid = { "model.backbone" = ["mobilenet_v1", "resnet50"], "seed" = [0, 1, 2] }

[[block]]
name = "gray"
set = { "model.backbone" = "mobilenet_v1" }
grid = { "data.grayscale" = ["identity", "gamma"], "seed" = [0, 1] }
reference = { "data.grayscale" = "identity" }

[profiles.small]
set = { "data.image_size" = 48 }
[[profiles.small.when]]
match = { "model.backbone" = "resnet50" }
set = { "optim.max_steps_per_epoch" = 1 }
[[profiles.small.when]]
match = { block = "gray" }
set = { "model.head_kwargs" = { drop_rate = 0.1 } }
"""


def test_hand_written_suite(write_suite):
    path = write_suite(HAND_WRITTEN, name="hand")
    suite = load_suite(path)
    assert suite.name == "hand" and suite.path == path.resolve()
    runs = suite.expand(None)
    # 2 x 3 + 2 x 2, minus mobilenet/identity/seed 0 and seed 1, which both blocks ask for.
    assert len(runs) == 8
    shared = [r for r in runs if r.blocks == ["grid", "gray"]]
    assert sorted(r.config.seed for r in shared) == [0, 1]
    # Pairs stay within a stratum (same seed).
    for r in runs:
        for p in r.pairs:
            ref = next(x for x in runs if x.run_id == p.reference)
            assert ref.config.seed == r.config.seed and ref.config.data.grayscale == "identity"
            assert r.config.data.grayscale == "gamma" and p.factor == "data.grayscale"

    small = suite.expand("small")
    assert len(small) == 10  # the gray block's rule changes head_kwargs, so nothing is shared any more
    assert {r.config.data.image_size for r in small} == {48}
    steps = {(r.config.model.backbone, r.config.optim.max_steps_per_epoch) for r in small}
    assert ("resnet50", 1) in steps and ("mobilenet_v1", 2) in steps
    assert all(r.config.model.head_kwargs == {"drop_rate": 0.1} for r in small if "gray" in r.blocks)

    over = suite.expand("small", parse_overrides(["optim.epochs=3"]))
    assert all(r.config.optim.epochs == 3 for r in over)
    # Forcing a grid axis from the command line would collapse the gray block onto its gamma runs: refused.
    with pytest.raises(ConfigError, match="block 'gray'"):
        suite.expand("small", parse_overrides(["data.grayscale=\"gamma\""]))


def test_run_ids_are_stable_and_match_config(write_suite):
    path = write_suite(HAND_WRITTEN, name="hand")
    a = {r.run_id: r.config.to_dict() for r in load_suite(path).expand("small")}
    b = {r.run_id: r.config.to_dict() for r in load_suite(path).expand("small")}
    assert a == b
    assert all(RunConfig.from_dict(d).run_id() == rid for rid, d in a.items())


# ---------------------------------------------------------------------------------------------- errors
BAD = [
    ("unknown top-level table", '[[block]]\nname = "b"\ngrid = { seed = [0] }\n[bogus]\nx = 1\n', "'bogus'"),
    ("unknown config key", '[[block]]\nname = "b"\ngrid = { "model.backbon" = ["x"] }\n', "model.backbon"),
    ("empty axis", '[[block]]\nname = "b"\ngrid = { seed = [] }\n', "'seed'"),
    ("axis not a list", '[[block]]\nname = "b"\ngrid = { seed = 3 }\n', "'seed'"),
    ("duplicate block", '[[block]]\nname = "b"\ngrid = { seed = [0] }\n[[block]]\nname = "b"\ngrid = { seed = [1] }\n',
     "block 'b' is defined twice"),
    ("path in block name", '[[block]]\nname = "../b"\ngrid = { seed = [0] }\n', "'../b'"),
    ("bad value type", '[[block]]\nname = "b"\nset = { "data.image_size" = "big" }\ngrid = { seed = [0] }\n',
     "data.image_size"),
    ("reference not an axis", '[[block]]\nname = "b"\ngrid = { seed = [0, 1] }\nreference = { "data.grayscale" = "x" }\n',
     "data.grayscale"),
    ("reference value not on axis", '[[block]]\nname = "b"\ngrid = { seed = [0, 1] }\nreference = { seed = 5 }\n',
     "seed = 5"),
    ("profile sets an axis", '[[block]]\nname = "b"\ngrid = { seed = [0, 1] }\n[profiles.p]\nset = { seed = 3 }\n',
     "'seed'"),
    ("unknown profile key", '[[block]]\nname = "b"\ngrid = { seed = [0] }\n[profiles.p]\nsett = { seed = 3 }\n',
     "'sett'"),
    ("pair differs twice",
     '[[block]]\nname = "b"\ngrid = { "data.grayscale" = ["identity", "gamma"] }\n'
     'reference = { "data.grayscale" = "identity" }\n[profiles.p]\n[[profiles.p.when]]\n'
     'match = { "data.grayscale" = "gamma" }\nset = { "data.image_size" = 64 }\n', "data.image_size"),
    ("no blocks", "", "[[block]]"),
]


@pytest.mark.parametrize("label,text,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_suite_files_name_file_and_key(write_suite, label, text, needle):
    path = write_suite(text, name="bad")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    msg = str(err.value)
    assert str(path.resolve()) in msg or str(path) in msg, msg
    assert needle in msg, msg


def test_unknown_suite_and_profile(write_suite):
    with pytest.raises(ConfigError, match="shipped suites: .*wang2017"):
        load_suite("no_such_suite")
    suite = load_suite(write_suite(HAND_WRITTEN, name="hand"))
    with pytest.raises(ConfigError, match="no profile 'huge'; known: small"):
        suite.expand("huge")


def test_parse_overrides():
    assert parse_overrides(["optim.lr=0.5", "data.grayscale=gamma", "optim.amp=\"bf16\"",
                            "model.freeze_backbone=true"]) == {
        "optim.lr": 0.5, "data.grayscale": "gamma", "optim.amp": "bf16", "model.freeze_backbone": True}
    with pytest.raises(ConfigError, match="optim.lrr"):
        parse_overrides(["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_suites_lists_counts(capsys):
    assert cli_main(["suites"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("wang2017"))
    assert f"paper: {5 * WANG_RUNS_PER_SEED['paper']}" in line and f"sample: {WANG_RUNS_PER_SEED['sample']}" in line


def test_cli_dry_run_prints_runs(capsys, tmp_path: Path):
    assert cli_main(["run", "--suite", "wang2017", "--dry-run", "--runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    expanded = load_suite("wang2017").expand("sample")
    n_real = sum(r.config.data.root is None for r in expanded)
    assert (f"NOT COMPARABLE WITH ANY PAPER: {n_real} run(s) on the bundled 1,673-image NIH sample (profile "
            "'sample')") in captured.err
    assert "'sample') at 64 px" in captured.err and "A phantom 'sanity' run" in captured.err
    ids = {r.run_id for r in expanded}
    rows = _table_rows(captured.out)
    assert len(rows) == WANG_RUNS_PER_SEED['sample'] and {x.split()[0] for x in rows} == ids
    assert not any(tmp_path.iterdir())  # a dry run writes nothing

    assert cli_main(["run", "--suite", "wang2017", "--dry-run", "--only", "vgg*", "--runs", str(tmp_path)]) == 0
    rows = _table_rows(capsys.readouterr().out)
    vgg = {r.run_id for r in load_suite("wang2017").expand("sample") if r.config.model.backbone == "vgg16"}
    assert len(rows) == 2 and {x.split()[0] for x in rows} == vgg  # 2 label sets (frozen: paper profile only)


def _table_rows(out: str) -> list[str]:
    """The rows of a dry-run table: the lines that start with a run id."""
    return [x for x in out.splitlines() if re.match(r"[0-9a-f]{12}\s", x)]


def test_cli_paper_profile_needs_data_root(capsys, tmp_path: Path):
    # A dry run plans the paper profile without the data (19.1); running it needs --data-root.
    assert cli_main(["run", "--suite", "wang2017", "--profile", "paper", "--dry-run", "--runs", str(tmp_path)]) == 0
    assert len(_table_rows(capsys.readouterr().out)) == len(load_suite("wang2017").expand("paper"))
    assert cli_main(["run", "--suite", "wang2017", "--profile", "paper", "--runs", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_set_on_a_grid_axis_is_refused():
    # --set data.grayscale=gamma would collapse the grayscale grid to one run (and drop its pairs): refused,
    # naming the block (tests/runner/test_suite_extends.py covers the message and the alternative).
    with pytest.raises(ConfigError, match="block 'ablation-grayscale'"):
        load_suite("wang2017").expand("sample", {"data.grayscale": "gamma"})


# ---------------------------------------------------------------------------------------------- precedence
# Every level of the documented order (suite.py's module docstring) sets keys of its own and one key of the
# level below it; the expected values below are read off the file by that order, by hand.
PRECEDENCE = """
[[block]]
name = "b"
set = { "optim.momentum" = 0.2, "optim.warmup_epochs" = 3 }
grid = { "data.grayscale" = ["identity", "gamma"] }

[profiles.p]
set = { "optim.weight_decay" = 0.2, "optim.momentum" = 0.2 }
[profiles.p.block.b]
set = { "optim.momentum" = 0.4, "optim.plateau_patience" = 4 }
[[profiles.p.when]]
match = { "data.grayscale" = "gamma" }
set = { "optim.min_lr_ratio" = 0.5 }
"""
PRECEDENCE_BASE = ('"optim.lr" = 0.1\n"optim.weight_decay" = 0.1\n"optim.momentum" = 0.1\n'
                   '"optim.warmup_epochs" = 1\n"optim.plateau_patience" = 1\n')


def _suite_text(blocks: str, base: str = "") -> str:
    return '[suite]\nname = "t"\n[base]\n' + base + blocks


def test_precedence_order(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text(PRECEDENCE, PRECEDENCE_BASE))
    suite = load_suite(path)
    runs = {r.config.data.grayscale: r.config.optim
            for r in suite.expand("p", parse_overrides(["optim.lr=0.7", "optim.plateau_patience=6"]))}
    for gray, o in runs.items():
        assert o.lr == 0.7                    # --set over [base]
        assert o.weight_decay == 0.2          # profile set over [base]
        assert o.warmup_epochs == 3           # block set over [base]
        assert o.momentum == 0.4              # [profiles.p.block.b] over profile and block set (which agree)
        assert o.plateau_patience == 6        # --set over [profiles.p.block.b]
        assert o.min_lr_ratio == (0.5 if gray == "gamma" else 0.0)  # the rule matched on the grid value
    # Without the profile: [base] and the block only.
    o = {r.config.data.grayscale: r.config.optim for r in suite.expand(None)}["identity"]
    assert (o.lr, o.weight_decay, o.momentum, o.warmup_epochs, o.plateau_patience) == (0.1, 0.1, 0.2, 3, 1)


def test_profile_and_block_may_not_disagree(tmp_path):
    path = tmp_path / "t.toml"
    text = PRECEDENCE.replace('set = { "optim.momentum" = 0.2, "optim.warmup_epochs" = 3 }',
                              'set = { "optim.momentum" = 0.3, "optim.weight_decay" = 0.5 }')
    path.write_text(_suite_text(text.replace('"optim.momentum" = 0.4, ', '')))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    msg = str(err.value)
    assert str(path) in msg and "[profiles.p] and block 'b' disagree on 'optim.momentum'" in msg
    assert "[profiles.p.block.b] set" in msg  # says where to decide
    # The profile's settings for the block decide both keys; then it loads, with those values.
    path.write_text(_suite_text(text.replace('"optim.momentum" = 0.4,', '"optim.momentum" = 0.4, "optim.weight_decay" = 0.6,')))
    opts = {(r.config.optim.momentum, r.config.optim.weight_decay) for r in load_suite(path).expand("p")}
    assert opts == {(0.4, 0.6)}


def test_level4_sources_may_not_disagree(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text(PRECEDENCE + '[[profiles.p.when]]\nmatch = { block = "b" }\n'
                                             'set = { "optim.plateau_patience" = 9 }\n'))
    with pytest.raises(ConfigError, match=r"\[profiles.p.block.b\] set and \[\[profiles.p.when\]\] #2 both apply "
                                          r".*'optim.plateau_patience' \(4 vs 9\)"):
        load_suite(path)


@pytest.mark.parametrize("extra,needle", [
    ('[profiles.p.block.nosuch]\nset = { seed = 1 }\n', "'nosuch' is not a block"),
    ('[profiles.q.block.b]\nset = { "data.grayscale" = "gamma" }\n', "'data.grayscale', which is a grid axis"),
    ('[profiles.q.block.b]\nsett = { seed = 1 }\n', "unknown key 'sett'"),
])
def test_profile_block_settings_errors(tmp_path, extra, needle):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text(PRECEDENCE + extra))
    with pytest.raises(ConfigError, match=needle) as err:
        load_suite(path)
    assert str(path) in str(err.value)


def test_profile_block_settings_may_set_another_blocks_axis(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text('[[block]]\nname = "a"\ngrid = { "data.grayscale" = ["identity", "gamma"] }\n'
                                '[[block]]\nname = "c"\nset = { "model.head" = "wang2017" }\n'
                                '[profiles.p.block.c]\nset = { "data.grayscale" = "lstar" }\n'))
    runs = load_suite(path).expand("p")
    assert sorted((r.blocks[0], r.config.data.grayscale) for r in runs) == \
        [("a", "gamma"), ("a", "identity"), ("c", "lstar")]


# ---------------------------------------------------------------------------------------------- seeds
SEEDED = """
[[block]]
name = "gray"
grid = { "data.grayscale" = ["identity", "gamma"] }
reference = { "data.grayscale" = "identity" }

[[block]]
name = "head"
set = { "model.head" = "wang2017" }

[profiles.three]
seeds = [0, 1, 2]
[profiles.own]
[profiles.own.block.gray]
seeds = [5]
"""


def _seeds_of(runs, block):
    return sorted(r.config.seed for r in runs if block in r.blocks)


def test_seeds_each_seed_its_own_run_and_pairs_per_seed(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text(SEEDED, "seeds = [0, 1]\n"))
    suite = load_suite(path)
    base = suite.expand(None)  # [base] seeds
    assert _seeds_of(base, "gray") == [0, 0, 1, 1] and _seeds_of(base, "head") == [0, 1]
    three = suite.expand("three")  # a profile's seeds over [base]
    assert _seeds_of(three, "gray") == [0, 0, 1, 1, 2, 2] and _seeds_of(three, "head") == [0, 1, 2]
    own = suite.expand("own")  # [profiles.own.block.gray]: for that block only
    assert _seeds_of(own, "gray") == [5, 5] and _seeds_of(own, "head") == [0, 1]
    cli = suite.expand("own", seeds=4)  # --seeds N: 0..N-1 everywhere
    assert _seeds_of(cli, "gray") == [0, 0, 1, 1, 2, 2, 3, 3] and _seeds_of(cli, "head") == [0, 1, 2, 3]
    one = suite.expand("three", parse_overrides(["seed=9"]))  # --set seed: one seed; duplicates merge
    assert _seeds_of(one, "gray") == [9, 9] and len(one) == 3

    by_id = {r.run_id: r for r in three}
    pairs = [(p, r) for r in three for p in r.pairs]
    assert len(pairs) == 3  # one gamma-vs-identity pair per seed
    for p, r in pairs:
        ref = by_id[p.reference]
        assert (ref.config.seed, ref.config.data.grayscale, r.config.data.grayscale) == (r.config.seed, "identity", "gamma")
        assert ref.grid["gray"] == {"data.grayscale": "identity", "seed": r.config.seed}
    # Same configuration, other seed: same configuration id; other grayscale: another one. Seed 0 is the
    # default, so the configuration id of a configuration is the run id of its seed-0 run.
    gray = [r for r in three if "gray" in r.blocks]
    assert len({r.configuration_id for r in gray}) == 2
    assert {r.configuration_id for r in gray if r.config.data.grayscale == "gamma"} == \
        {r.run_id for r in gray if r.config.data.grayscale == "gamma" and r.config.seed == 0}


def test_seed_axis_and_seed_lists(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text('[[block]]\nname = "axis"\ngrid = { seed = [7, 8], "model.head" = ["gap", "wang2017"] }\n'
                                'reference = { "model.head" = "gap" }\n'
                                '[[block]]\nname = "plain"\nset = { "model.head" = "attention" }\n', "seeds = [0, 1]\n"))
    suite = load_suite(path)
    runs = suite.expand(None)  # a grid axis 'seed' is above [base] seeds
    assert _seeds_of(runs, "axis") == [7, 7, 8, 8] and _seeds_of(runs, "plain") == [0, 1]
    runs = suite.expand(None, seeds=3)  # --seeds replaces the axis too; pairs follow
    assert _seeds_of(runs, "axis") == [0, 0, 1, 1, 2, 2] and _seeds_of(runs, "plain") == [0, 1, 2]
    by_id = {r.run_id: r for r in runs}
    assert sorted((by_id[p.reference].config.seed, r.config.seed) for r in runs for p in r.pairs) == \
        [(0, 0), (1, 1), (2, 2)]


@pytest.mark.parametrize("text,needle", [
    ('[base]\nseeds = []\n', "seeds must be a list"),
    ('[base]\nseeds = "0,1"\n', "seeds must be a list"),
    ('[base]\nseeds = [0, -1]\n', "-1 is not a seed"),
    ('[base]\nseeds = [0, true]\n', "True is not a seed"),
    ('[base]\nseeds = [1, 1]\n', "lists a seed twice"),
    ('[base]\nseed = 1\nseeds = [0]\n', "seed and seeds both"),
    ('[[block]]\nname = "x"\nseeds = [0]\ngrid = { seed = [1] }\n', "seeds and a grid axis 'seed'"),
    ('[[block]]\nname = "x"\nset = { seeds = [0] }\n', "seeds = [...] is a key of"),
    ('[[block]]\nname = "x"\ngrid = { seed = [1, 2] }\n[profiles.p]\nseeds = [0]\n', "'seed', which is a grid axis"),
    ('[[block]]\nname = "x"\nseeds = [0, 1]\n[profiles.p]\nseeds = [0, 1, 2]\n',
     "[profiles.p] and block 'x' disagree on 'seed'"),
    ('[[block]]\nname = "x"\n[profiles.p]\n[[profiles.p.when]]\nmatch = { block = "x" }\nset = { seed = 3 }\n',
     "may not choose the seed"),
])
def test_bad_seeds(tmp_path, text, needle):
    path = tmp_path / "t.toml"
    if "[[block]]" not in text:
        text += '[[block]]\nname = "x"\n'
    path.write_text('[suite]\nname = "t"\n' + text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)


def test_seeds_flag_errors(write_suite, two_heads):
    suite = load_suite(write_suite(two_heads))
    for bad in (0, -2, True, 10_001):
        with pytest.raises(ConfigError, match="--seeds"):
            suite.expand(None, seeds=bad)
    with pytest.raises(ConfigError, match="--seeds 2 and --set seed=1 both choose the seed"):
        suite.expand(None, parse_overrides(["seed=1"]), seeds=2)
    with pytest.raises(ConfigError, match="--set seeds=3: the number of seeds is --seeds N"):
        parse_overrides(["seeds=3"])
    assert len(suite.expand(None, seeds=3)) == 6


# ---------------------------------------------------------------------------------------------- run_name
def test_run_name_plain_field_references(write_suite, two_heads):
    path = write_suite(two_heads, extra='')
    text = path.read_text().replace('name = "tiny"\n', 'name = "tiny"\nrun_name = "{model.head}/{optim.lr:g}-s{seed:02d}{{x}}"\n', 1)
    path.write_text(text)
    names = sorted(r.name for r in load_suite(path).expand(None, seeds=2))
    # optim.lr is the default 1e-3 (TINY_BASE does not set it): format(0.001, "g") == "0.001".
    assert names == ["gap/0.001-s00{x}", "gap/0.001-s01{x}", "wang2017/0.001-s00{x}", "wang2017/0.001-s01{x}"]


@pytest.mark.parametrize("template", [
    "{model}", "{nosuch.key}", "{name}", "{}", "{0}", "{seed!r}", "{model.backbone[0]}", "{seed:{seed}}",
    "{seed:>999999}", "{model.backbone", "a\\nb-{seed}", "{model.pretrained:g}",
])
def test_run_name_rejected_at_load(write_suite, two_heads, template):
    path = write_suite(two_heads)
    path.write_text(path.read_text().replace('name = "tiny"\n', f'name = "tiny"\nrun_name = "{template}"\n', 1))
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    msg = str(err.value)
    assert msg.startswith(f"{path.resolve()}: [suite] run_name"), msg
    assert "\n" not in msg


# ---------------------------------------------------------------------------------------------- sources
def test_bad_values_name_their_source(tmp_path, write_suite, two_heads, capsys):
    suite = load_suite(write_suite(two_heads))
    for item, key in (("optim.lr=nan", "optim.lr"), ("seed=-1", "seed"), ("optim.epochs=0", "optim.epochs")):
        with pytest.raises(ConfigError) as err:
            suite.expand(None, parse_overrides([item]))
        msg = str(err.value)
        assert msg.startswith(f"--set {item.replace(chr(34), '')}: config key {key!r}"), msg
        assert str(suite.path) not in msg and "block" not in msg  # the flag, not a suite block
    # A name is checked against its registry, before any work; it names the flag too.
    overrides = parse_overrides(['data.split="by-hand"'])
    with pytest.raises(ConfigError, match=r"^--set data\.split=by-hand: unknown split 'by-hand'; known: official"):
        check_registry_names(suite.expand(None, overrides), overrides)
    with pytest.raises(ConfigError, match=r"^--set optim\.lrr=1: unknown config key 'optim.lrr'"):
        parse_overrides(["optim.lrr=1"])
    # Through the command line: exit 2, one line naming the flag.
    assert cli_main(["run", "--suite", str(suite.path), "--dry-run", "--runs", str(tmp_path / "runs"),
                     "--set", "optim.lr=nan"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("cxr-bench: error: --set optim.lr=nan: config key 'optim.lr'") and err_text.count("\n") == 1

    # A value from the suite file names the file and the table it is in.
    for text, source in (
        (two_heads.replace('name = "heads"', 'name = "heads"\nset = { "optim.lr" = -1.0 }'), "block 'heads' set"),
        (two_heads + '[profiles.p.block.heads]\nset = { "optim.lr" = -1.0 }\n', "[profiles.p.block.heads] set"),
        (two_heads + '[profiles.p]\n[[profiles.p.when]]\nmatch = { "model.head" = "gap" }\nset = { "optim.lr" = -1.0 }\n',
         "[[profiles.p.when]] #1"),
    ):
        path = write_suite(text, name="bad")
        with pytest.raises(ConfigError) as err:
            load_suite(path)
        msg = str(err.value)
        assert msg.startswith(f"{path.resolve()}: {source}, a run of block 'heads'") and "'optim.lr'" in msg, msg


# ---------------------------------------------------------------------------------------------- display
def test_varying_factors(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_suite_text('[[block]]\nname = "a"\ngrid = { "model.backbone" = ["alexnet", "vgg16"], '
                                '"data.grayscale" = ["identity", "gamma"] }\n'
                                '[[block]]\nname = "f"\nset = { "model.freeze_backbone" = true, "optim.amp" = "bf16" }\n',
                                '"model.head_kwargs" = { r = 5 }\n'))
    runs = load_suite(path).expand(None)
    # Read off the file: backbone and grayscale vary in block a; block f (defaults: mobilenet_v1, identity)
    # adds a frozen backbone. optim.amp differs too but does not change the numbers (not an identity field);
    # head_kwargs is the same everywhere. Order: config field order (data before model).
    assert varying_factors(runs) == ["data.grayscale", "model.backbone", "model.freeze_backbone"]
    assert varying_factors(runs[:1]) == [] and varying_factors([r.config for r in runs[:2]]) == ["data.grayscale"]


@pytest.mark.parametrize("profile", ["paper", "sample"])
def test_varying_factors_tell_every_wang2017_run_apart(profile):
    runs = load_suite("wang2017").expand(profile)
    factors = varying_factors(runs)
    # Brute force: a key whose values are not all equal, over every identity key of every run.
    flats = [_flat_identity(r.config) for r in runs]
    keys = set().union(*flats)
    assert set(factors) == {k for k in keys if len({repr(f.get(k)) for f in flats}) > 1}
    rows = {tuple(repr(f.get(k)) for k in factors) for f in flats}
    assert len(rows) == len(runs)  # no two rows of a dry-run table look the same
    if profile == "paper":
        assert "model.freeze_backbone" in factors and "seed" in factors


def _flat_identity(cfg: RunConfig) -> dict:
    out = {}
    for k, v in cfg.identity_dict(full=True).items():
        if isinstance(v, dict) and k in ("data", "model", "optim", "loss", "eval"):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def test_cli_suites_json(capsys, write_suite, two_heads):
    assert cli_main(["suites", "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert set(shipped_suites()) <= set(listed)
    wang = listed["wang2017"]
    suite = load_suite("wang2017")
    assert {p["name"]: p["runs"] for p in wang["profiles"]} == {p: len(suite.expand(p)) for p in suite.profiles}
    assert {p["name"]: p["seeds"] for p in wang["profiles"]} == {"paper": [0, 1, 2, 3, 4], "sample": [0]}
    assert [b["name"] for b in wang["blocks"]] == [b.name for b in suite.blocks]
    assert wang["file"] == str(suite.path) and wang["imports"] == []

    path = write_suite(two_heads)
    assert cli_main(["suites", str(path), "--json"]) == 0
    (one,) = json.loads(capsys.readouterr().out)
    assert one["name"] == "tiny" and one["profiles"] == [
        {"name": None, "description": "", "needs_data_root": False, "runs": 2, "seeds": [0]}]
    assert one["blocks"][0]["axes"] == ["model.head"] and one["blocks"][0]["reference"] == {"model.head": "gap"}
