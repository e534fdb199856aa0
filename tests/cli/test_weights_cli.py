"""``cxr-bench weights fetch`` / ``list`` end to end: a real HTTP mirror on 127.0.0.1, empty caches."""

from __future__ import annotations

import hashlib
import io
import json
import tomllib
from pathlib import Path

import range_server as rs  # noqa: E402 - tests/helpers is on pytest's pythonpath
import torch

from cxr_bench.cli import main
from cxr_bench.models import BACKBONES
from cxr_bench.models import weights as W
from cxr_bench.models.backbones import CachedWeights, alexnet


def test_fetch_through_a_mirror_then_cached(caches, monkeypatch, capsys):
    buf = io.BytesIO()
    torch.save({k: torch.ones_like(v) for k, v in alexnet().net.state_dict().items()}, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    name = f"alexnet-cli-{digest[:8]}.pth"
    ref = CachedWeights(source="torchvision:AlexNet_Weights.CLI", filename=name,
                        url=f"https://download.pytorch.org/models/{name}")

    def tv_cli():
        backbone = alexnet()
        backbone.name, backbone.cached_weights = "tv_cli", (ref,)
        return backbone

    monkeypatch.setitem(BACKBONES._entries, "tv_cli", tv_cli)
    site = rs.Site(files={f"/models/{name}": data})
    with rs.serve(site) as base:
        assert main(["weights", "fetch", "tv_cli", "--mirror", base, "-q"]) == 0
        first = capsys.readouterr().out
        assert main(["weights", "fetch", "tv_cli", "--mirror", base, "-q"]) == 0
        second = capsys.readouterr().out
    assert site.gets(f"/models/{name}") == [None]
    assert "fetched" in first and digest[:12] in first and "cached" in second
    assert (caches / "torch-hub" / "checkpoints" / name).read_bytes() == data


def test_list_and_fetch_a_suite_offline(caches, monkeypatch, capsys):
    # The wang2017 paper profile's backbones, read from the suite file itself.
    suite = tomllib.loads((Path(W.__file__).parents[1] / "suites" / "wang2017.toml").read_text())
    expected = set()
    skipped = {b for b, t in suite["profiles"]["paper"].get("block", {}).items() if t.get("skip")}
    for block in suite["block"]:
        if block["name"] in skipped:  # e.g. the phantom sanity block: sample profile only
            continue
        grid = block.get("grid", {}).get("model.backbone") or [block.get("set", {}).get("model.backbone")]
        expected.update(b for b in grid if b)
    assert main(["weights", "list", "--suite", "wang2017", "--profile", "paper", "--json", "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["backbone"] for r in rows} == expected and not any(r["cached"] for r in rows)
    assert all(r["url"].startswith(("https://download.pytorch.org/", "https://huggingface.co/")) for r in rows)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "fetch", "--suite", "wang2017", "--profile", "paper", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{len(expected)} of {len(expected)} checkpoint(s) not available" in err
    assert "`cxr-bench weights fetch --suite wang2017 --profile paper`" in err and "HF_HUB_OFFLINE=1" in err


def test_a_suite_without_pretrained_weights_needs_nothing(caches, capsys):
    assert main(["weights", "fetch", "--suite", "smoke", "-q"]) == 0
    assert "nothing to fetch" in capsys.readouterr().out
