import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cxr_bench.utils.io import atomic_open, atomic_write_json, atomic_write_text, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "r.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]  # no temp file left


def test_written_file_gets_normal_permissions(tmp_path):
    p = tmp_path / "r.txt"
    atomic_write_text(p, "x")
    old = os.umask(0o022)
    os.umask(old)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~old)


def test_failed_write_leaves_old_file(tmp_path):
    p = tmp_path / "r.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.txt"]


def test_sigkill_mid_write_never_tears_the_file(tmp_path):
    p = tmp_path / "r.txt"
    atomic_write_text(p, "old")
    code = textwrap.dedent(f"""
        import os, signal
        from cxr_bench.utils.io import atomic_open
        with atomic_open({str(p)!r}) as fh:
            fh.write("x" * 100000)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    assert p.read_text() == "old"


def test_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert not os.path.exists(tmp_path / ".f.tmp")


def test_remove_stale_temps_after_a_killed_write(tmp_path):
    p = tmp_path / "run" / "history.csv"
    atomic_write_text(p, "epoch\n1\n")
    code = textwrap.dedent(f"""
        import os, signal
        from cxr_bench.utils.io import atomic_open
        with atomic_open({str(p)!r}) as fh:
            fh.write("epoch\\n1\\n2\\n")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    (tmp_path / "run" / ".keep").write_text("not a temp file")
    litter = [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]
    assert len(litter) == 1
    from cxr_bench.utils.io import remove_stale_temps

    assert remove_stale_temps(tmp_path) == litter
    assert sorted(f.name for f in p.parent.iterdir()) == [".keep", "history.csv"]
    assert p.read_text() == "epoch\n1\n"


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_neutralised(tmp_path):
    import pandas as pd

    from cxr_bench.utils.io import csv_safe_cell, write_csv

    for cell in ("=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_safe_cell(cell) == "'" + cell
    for cell in ("-0.5", "+1e-3", "resnet50", "", "a=b"):  # numbers written as text, and plain text
        assert csv_safe_cell(cell) == cell
    assert csv_safe_cell(-1.5) == -1.5 and csv_safe_cell(None) is None
    df = pd.DataFrame({"name": ["=cmd|' /C calc'!A0", "ok"], "auc": [-0.25, 0.75], "=col": [1, 2]})
    path = write_csv(df, tmp_path / "x.csv", header_lines=["not comparable\nwith the paper"],
                     provenance={"store": "runs/"})
    text = path.read_text()
    assert text.startswith("name,auc,'=col\n")  # plain: header first, no banner
    side = json.loads((tmp_path / "x.csv.json").read_text())
    assert side["notes"] == ["not comparable", "with the paper"] and side["provenance"] == {"store": "runs/"}
    assert side["rows"] == 2 and side["columns"] == ["name", "auc", "=col"]
    back = pd.read_csv(path)
    assert back["name"].tolist() == ["'=cmd|' /C calc'!A0", "ok"]
    assert back["auc"].tolist() == [-0.25, 0.75] and list(back.columns) == ["name", "auc", "'=col"]


def test_write_csv_never_replaces_a_users_file_at_the_sidecars_name(tmp_path):
    import pandas as pd

    from cxr_bench.errors import RunStoreError
    from cxr_bench.utils.io import is_own_sidecar, sidecar_path, write_csv

    df = pd.DataFrame({"a": [1, 2]})
    out = tmp_path / "table.csv"
    write_csv(df, out)
    assert is_own_sidecar(sidecar_path(out))
    write_csv(df, out)  # its own sidecar: rewritten
    mine = tmp_path / "mine.csv"
    sidecar_path(mine).write_text('{"my": "notes"}')
    with pytest.raises(RunStoreError, match="not a sidecar cxr-bench wrote"):
        write_csv(df, mine)
    assert sidecar_path(mine).read_text() == '{"my": "notes"}' and not mine.exists()
