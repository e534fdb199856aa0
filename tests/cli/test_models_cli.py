"""``cxr-bench models``: the table and its JSON agree with model_complexity."""

from __future__ import annotations

import json

import pytest

from cxr_bench.cli import main
from cxr_bench.models import list_heads, list_models, model_complexity


def test_json_rows_match_model_complexity(capsys):
    assert main(["models", "--image-size", "64", "--json", "--backbone", "mobilenet_v1", "--timm", "test_vit"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["backbone"], r["head"]) for r in rows] == [
        (b, h) for b in ("mobilenet_v1", "timm:test_vit") for h in list_heads()]
    for row in rows:
        assert row["img_size"] == 64
        expected = model_complexity(row["backbone"], 64, head=row["head"], num_labels=14)
        assert row["params"] == expected["params"]
        assert row["gmacs"] == pytest.approx(expected["gmacs"], rel=1e-9)
    assert rows[0]["feature_shape"] == [1024, 2, 2]


def test_table(capsys):
    assert main(["models", "--backbone", "alexnet", "--num-labels", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("input: 1 x 224 x 224, 3 labels")
    assert lines[1].split() == ["backbone", "head", "features", "params", "(M)", "GMACs"]
    assert set(lines[2].replace(" ", "")) == {"-"}
    gap = lines[3].split()
    # AlexNet's convolutions: 2.47M parameters, 0.66 GMACs at 224 px; 256 x 6 x 6 features.
    assert gap[:4] == ["alexnet", "gap", "256x6x6", "2.47"]
    assert float(gap[4]) == pytest.approx(0.656, abs=1e-3)


def test_unknown_backbone_is_one_line_error(capsys):
    assert main(["models", "--backbone", "resnet5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr-bench: error: unknown backbone 'resnet5'") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_lists_every_backbone_and_head(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["backbone"], r["head"]) for r in rows} == {(b, h) for b in list_models() for h in list_heads()}
    assert all(r["params"] > 1e6 and r["gmacs"] > 0.1 for r in rows)


def test_the_shipped_default_table_is_what_the_models_give():
    """``cxr-bench models`` at its defaults reads cxr_bench/bundled/complexity_224px_14labels.json: it must be
    complexity_table() of today's registry (regenerate it with write_shipped_complexity when a model changes)."""
    from cxr_bench.models.factory import SHIPPED_COMPLEXITY, complexity_table

    shipped = json.loads(SHIPPED_COMPLEXITY.read_text())
    computed = complexity_table(224, num_labels=14)
    assert [(r["backbone"], r["head"], r["params"], r["feature_shape"]) for r in shipped] == \
        [(r["backbone"], r["head"], r["params"], r["feature_shape"]) for r in computed]
    assert [r["gmacs"] for r in shipped] == pytest.approx([r["gmacs"] for r in computed], rel=1e-12)


def test_the_default_listing_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys, io, contextlib\nfrom cxr_bench.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    assert main(['models', '--backbone', 'resnet50']) == 0\n"
            "assert 'torch' not in sys.modules and 'resnet50' in buf.getvalue()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
