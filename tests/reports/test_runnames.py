"""Run names: a configuration's name is its runs' name without the seed."""

from __future__ import annotations

from cxr_bench.reports.runnames import configuration_name, short_names
from cxr_bench.results.runs import RunRecord


def test_configuration_name_drops_only_the_seed(tmp_path, store_factory):
    root = tmp_path / "runs"
    for seed in (0, 1):
        store_factory.write_run(root, "s", {"data.image_size": 64, "seed": seed, "loss.name": "wcel"}, strength=1.0)
    store_factory.write_run(root, "s", {"data.image_size": 64, "seed": 1}, strength=1.0)
    runs = [RunRecord.load(p) for p in sorted((root / "s").iterdir())]
    names = short_names(runs)
    by_seed = {(r.cfg("loss.name"), r.cfg("seed")): names[r.run_id] for r in runs}
    assert len(set(names.values())) == 3  # the two seeds of one configuration have different names
    wcel = {configuration_name(by_seed["wcel", 0]), configuration_name(by_seed["wcel", 1])}
    assert len(wcel) == 1 and "seed" not in wcel.pop()
    assert configuration_name(by_seed[("bce", 1)]) != configuration_name(by_seed[("wcel", 1)])
    assert configuration_name("mobilenet_v1 · gamma") == "mobilenet_v1 · gamma"
