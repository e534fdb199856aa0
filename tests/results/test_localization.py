"""Wang et al. Table 4 beside a run's localization: a phantom sanity run is never set beside the paper."""

from __future__ import annotations

from cxr_bench.results.localization import localization_report_table


def test_phantom_runs_stay_out_of_the_table4_comparison(tmp_path, store_factory):
    base = {"optim.epochs": 3, "data.image_size": 64}
    _, real = store_factory.write_run(tmp_path / "runs", "s", {**base, "data.root": "/data/nih"}, strength=1.0,
                                      n_bootstrap=5)
    _, fake = store_factory.write_run(tmp_path / "runs", "s", {**base, "model.backbone": "alexnet",
                                                               "data.root": "phantom:0"}, strength=1.0, n_bootstrap=5)
    for run_dir in (real, fake):
        store_factory.write_localization(run_dir)
    table = localization_report_table(real)
    assert table is not None and "Atelectasis (paper)" in table.columns
    assert localization_report_table(fake) is None
    assert localization_report_table(fake, include_synthetic=True) is not None
