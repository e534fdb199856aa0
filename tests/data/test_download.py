"""``cxr-bench data download`` against a real HTTP server on 127.0.0.1 serving a phantom release.

The archives are built here with tarfile from a phantom release's PNGs (the NIH form: ``images/<name>``
members, the sorted names cut into consecutive parts); expected bytes, sizes and hashes come from those
files and hashlib, never from the download code.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cxr_bench.cli import main
from cxr_bench.data import download as dl
from cxr_bench.data.bundled import bundled_dir
from cxr_bench.data.download import DownloadError, download_release, load_part_list, select_parts
from cxr_bench.data.phantoms import make_phantom_release
from cxr_bench.data.release import NIHRelease

METADATA = ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "BBox_List_2017.csv")


import range_server as rs  # noqa: E402 - tests/helpers is on pytest's pythonpath


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """(root, parts): a 24-image phantom release and its images cut into 3 archives of sorted names."""
    root = make_phantom_release(tmp_path_factory.mktemp("src") / "nih", n_patients=12, images_per_patient=2,
                                size=32, seed=3)
    names = sorted(p.name for p in (root / "images").iterdir())
    chunks = [names[:8], names[8:16], names[16:]]
    archives = [rs.targz({f"images/{n}": (root / "images" / n).read_bytes() for n in c}) for c in chunks]
    return root, chunks, archives


def _site(phantom, corrupt: dict[int, bytes] | None = None):
    root, _, archives = phantom
    site = rs.Site()
    for i, data in enumerate(archives, 1):
        site.files[f"/images_{i:03d}.tar.gz"] = (corrupt or {}).get(i, data)
    for name in METADATA:
        site.files[f"/{name}"] = (root / name).read_bytes()
    return site


def _one_archive_list(tmp_path: Path, base: str, name: str = "big.tar.gz") -> Path:
    path = tmp_path / "urls.json"
    path.write_text(json.dumps({"name": "test", "parts": [
        {"part": 1, "file": name, "kind": "images", "url": f"{base}{name}"}]}))
    return path


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _gets(site, path):
    return site.gets(path)


# ------------------------------------------------------------------------------------------ end to end
def test_cli_download_parts_then_info_then_the_rest(phantom, tmp_path, capsys):
    root, chunks, archives = phantom
    site = _site(phantom)
    dest = tmp_path / "nih"
    with rs.serve(site) as base:
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1,3", "-q"]) == 0
        out = capsys.readouterr().out
        assert "images_001.tar.gz" in out and "images_002.tar.gz" not in out

        # The images of parts 1 and 3, byte for byte, in the NIH per-archive layout; part 2 absent.
        for k in (1, 3):
            got = _pngs(dest / f"images_{k:03d}" / "images")
            assert got == {n: (root / "images" / n).read_bytes() for n in chunks[k - 1]}
        assert not (dest / "images_002").exists() and not (dest / "archives" / "images_001.tar.gz").exists()
        for name in METADATA:
            assert (dest / name).read_bytes() == (root / name).read_bytes()
        man = json.loads((dest / "cxr-bench-download.json").read_text())
        for k in (1, 3):
            rec = man["files"][f"images_{k:03d}.tar.gz"]
            assert rec["sha256"] == hashlib.sha256(archives[k - 1]).hexdigest()
            assert rec["size"] == len(archives[k - 1]) and rec["images"] == len(chunks[k - 1])

        assert main(["data", "info", "--data-root", str(dest), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["images_on_disk"]["found"] == 16 and info["images_on_disk"]["missing"] == 8
        status = {r["part"]: r["status"] for r in info["parts"]["parts"]}
        assert status[1] == status[3] == "complete" and status[2] == "missing"
        assert info["parts"]["missing"] == [2] + list(range(4, 13))  # the NIH list has 12 archives

        assert main(["data", "info", "--data-root", str(dest)]) == 0
        text = capsys.readouterr().out
        assert "--parts 2,4-12" in text and "Missing or incomplete parts" in text

        # The rest: only part 2 is fetched; finished parts and metadata are not asked for again.
        before = list(site.log)
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1-3", "-q"]) == 0
        new = site.log[len(before):]
        assert [p for m, p, _ in new] == ["/images_002.tar.gz"]
    assert _pngs(dest / "images_002" / "images") == {n: (root / "images" / n).read_bytes() for n in chunks[1]}
    capsys.readouterr()
    assert main(["data", "download", "--data-root", str(dest), "--verify"]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_flat_layout_and_kept_archives(phantom, tmp_path):
    root, chunks, archives = phantom
    site = _site(phantom)
    parts = dl.load_part_list()
    with rs.serve(site) as base:
        download_release(tmp_path, parts=dl.with_base_url(parts, base), select="1-3", layout="flat",
                         keep_archives=True, show_progress=False)
    assert _pngs(tmp_path / "images") == {n: (root / "images" / n).read_bytes() for c in chunks for n in c}
    for k, data in enumerate(archives, 1):
        assert (tmp_path / "archives" / f"images_{k:03d}.tar.gz").read_bytes() == data
    assert NIHRelease.open(tmp_path).image_paths().keys() == {n for c in chunks for n in c}
    # The same folder cannot switch layouts half way.
    with pytest.raises(DownloadError, match="--layout flat"):
        download_release(tmp_path, parts=dl.with_base_url(parts, "http://127.0.0.1:9/"), select="1", layout="parts")


def test_official_list_metadata_comes_from_the_bundled_copies(phantom, tmp_path):
    # Text overrides: archive URLs from the local server, the metadata (no NIH link) from the package.
    _, chunks, archives = phantom
    site = _site(phantom)
    with rs.serve(site) as base:
        urls = tmp_path / "urls.txt"
        urls.write_text(f"# my mirror\nimages_001.tar.gz {base}images_001.tar.gz\n")
        parts = dl.read_url_overrides(urls, load_part_list())
        download_release(tmp_path / "d", parts=parts, select="1", show_progress=False)
    assert [p for _, p, _ in site.log] == ["/images_001.tar.gz"]
    nih = bundled_dir() / "nih"
    assert (tmp_path / "d" / "Data_Entry_2017_v2020.csv").read_bytes() == \
        gzip.decompress((nih / "Data_Entry_2017_v2020.csv.gz").read_bytes())
    assert (tmp_path / "d" / "BBox_List_2017.csv").read_bytes() == \
        gzip.decompress((nih / "BBox_List_2017.csv.gz").read_bytes())
    assert (tmp_path / "d" / "test_list.txt").read_bytes() == (nih / "test_list.txt").read_bytes()
    assert (tmp_path / "d" / "train_val_list.txt").read_bytes() == (nih / "train_val_list.txt").read_bytes()


# ------------------------------------------------------------------------------------------ resuming
def test_killed_mid_file_resumes_with_a_range_request(tmp_path):
    payload = os.urandom(3 << 20)  # random bytes do not compress: the archive is ~3 MiB
    archive = rs.targz({"images/00000001_000.png": payload})
    site = rs.Site(files={"/big.tar.gz": archive})
    release = threading.Event()
    site.stall["/big.tar.gz"] = (1 << 20, release)  # send 1 MiB, then hang until the test kills the client
    dest = tmp_path / "d"
    with rs.serve(site) as base:
        urls = _one_archive_list(tmp_path, base)
        code = ("import sys; from cxr_bench.data.download import download_release, load_part_list; "
                "download_release(sys.argv[1], parts=load_part_list(sys.argv[2]), keep_archives=True, "
                "show_progress=False)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(dest), str(urls)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        part = dest / "archives" / "big.tar.gz.part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= 512 << 10):
            assert proc.poll() is None and time.monotonic() < deadline, "the download never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        release.set()
        have = part.stat().st_size
        assert 0 < have < len(archive)
        download_release(dest, parts=load_part_list(urls), keep_archives=True, show_progress=False)
    assert site.gets("/big.tar.gz") == [None, f"bytes={have}-"]
    assert (dest / "archives" / "big.tar.gz").read_bytes() == archive
    assert (dest / "images_001" / "images" / "00000001_000.png").read_bytes() == payload
    rec = json.loads((dest / "cxr-bench-download.json").read_text())["files"]["big.tar.gz"]
    assert rec["sha256"] == hashlib.sha256(archive).hexdigest() and not part.exists()


def test_dropped_connection_resumes_in_the_same_call(tmp_path):
    archive = rs.targz({"images/00000001_000.png": os.urandom(400_000)})
    site = rs.Site(files={"/big.tar.gz": archive}, cut={"/big.tar.gz": 150_000})
    with rs.serve(site) as base:
        download_release(tmp_path, parts=load_part_list(_one_archive_list(tmp_path, base)), keep_archives=True,
                         show_progress=False)
    assert site.gets("/big.tar.gz") == [None, "bytes=150000-"]
    assert (tmp_path / "archives" / "big.tar.gz").read_bytes() == archive


def test_a_server_ignoring_range_is_fetched_again_from_the_start(tmp_path):
    archive = rs.targz({"images/00000001_000.png": os.urandom(200_000)})
    site = rs.Site(files={"/big.tar.gz": archive}, ignore_range={"/big.tar.gz"})
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "big.tar.gz.part").write_bytes(b"garbage from an older attempt")
    with rs.serve(site) as base:
        download_release(tmp_path, parts=load_part_list(_one_archive_list(tmp_path, base)), keep_archives=True,
                         show_progress=False)
    assert site.gets("/big.tar.gz") == ["bytes=29-"]  # asked to resume, got the whole file (200)
    assert (tmp_path / "archives" / "big.tar.gz").read_bytes() == archive


# ------------------------------------------------------------------------------------------ integrity
def _flip_middle(data: bytes) -> bytes:
    body = bytearray(data)
    for i in range(len(body) // 2, len(body) // 2 + 64):
        body[i] ^= 0xFF
    return bytes(body)


def _bad_crc(data: bytes) -> bytes:
    # The gzip trailer's CRC32: every byte decompresses, the check fails only at the very end.
    body = bytearray(data)
    body[-8] ^= 0xFF
    return bytes(body)


@pytest.mark.parametrize("damage", [_flip_middle, _bad_crc], ids=["flipped-bytes", "bad-crc"])
def test_corrupt_archive_is_named_deleted_and_fetched_again(phantom, tmp_path, damage):
    root, chunks, archives = phantom
    site = _site(phantom, corrupt={2: damage(archives[1])})
    dest = tmp_path / "d"
    with rs.serve(site) as base:
        parts = dl.with_base_url(load_part_list(), base)
        with pytest.raises(DownloadError, match=r"images_002\.tar\.gz .*is corrupt.*deleted.*again") as err:
            download_release(dest, parts=parts, select="1-2", workers=1, show_progress=False)
        assert "\n" not in str(err.value)
        assert not (dest / "archives" / "images_002.tar.gz").exists()
        assert not list(dest.glob(".extracting-*"))
        assert not list((dest / "images_002" / "images").glob("*.png")) if (dest / "images_002").exists() else True
        man = json.loads((dest / "cxr-bench-download.json").read_text())
        assert "images_002.tar.gz" not in man["files"] and man["files"]["images_001.tar.gz"]["status"] == "extracted"
        assert len(_pngs(dest / "images_001" / "images")) == 8  # the good part stays

        site.files["/images_002.tar.gz"] = archives[1]
        download_release(dest, parts=parts, select="1-2", show_progress=False)
    assert len(site.gets("/images_002.tar.gz")) == 2 and len(site.gets("/images_001.tar.gz")) == 1
    assert _pngs(dest / "images_002" / "images") == {n: (root / "images" / n).read_bytes() for n in chunks[1]}


def test_unsafe_members_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("images/00000001_000.png")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"png"))
        link = tarfile.TarInfo("images/00000002_000.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    site = rs.Site(files={"/big.tar.gz": buf.getvalue()})
    with rs.serve(site) as base:
        with pytest.raises(DownloadError, match=r"big\.tar\.gz .*unsafe member 'images/00000002_000\.png'"):
            download_release(tmp_path, parts=load_part_list(_one_archive_list(tmp_path, base)),
                             show_progress=False)
    assert not list(tmp_path.rglob("*.png"))

    evil = rs.targz({"../../escaped.png": b"x"})
    site = rs.Site(files={"/big.tar.gz": evil})
    with rs.serve(site) as base:
        with pytest.raises(DownloadError, match="unsafe member '../../escaped.png'"):
            download_release(tmp_path, parts=load_part_list(_one_archive_list(tmp_path, base)),
                             show_progress=False)
    assert not (tmp_path.parent / "escaped.png").exists() and not list(tmp_path.parent.rglob("escaped.png"))


# ------------------------------------------------------------------------------------------ OS errors
def test_unwritable_target_is_one_line_and_keeps_what_is_complete(phantom, tmp_path, capsys):
    site = _site(phantom)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with rs.serve(site) as base:
        assert main(["data", "download", "--base-url", base, "--data-root", str(blocker / "nih"), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cxr-bench: error: cannot create the data root") and str(blocker) in err
        assert err.count("\n") == 1

        dest = tmp_path / "nih"
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1", "-q"]) == 0
        (dest / "images_002").write_text("a file where part 2's folder goes")
        capsys.readouterr()
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1-2", "-q"]) == 2
        err = capsys.readouterr().err
        assert "images_002" in err and err.count("\n") == 1
        assert len(_pngs(dest / "images_001" / "images")) == 8
        # The downloaded archive is whole: kept, and not fetched again once the way is clear.
        assert (dest / "archives" / "images_002.tar.gz").read_bytes() == phantom[2][1]
        (dest / "images_002").unlink()
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1-2", "-q"]) == 0
    assert len(site.gets("/images_002.tar.gz")) == 1 and len(_pngs(dest / "images_002" / "images")) == 8


def test_disk_full_keeps_the_partial_file_and_every_complete_part(phantom, tmp_path, capsys, monkeypatch):
    root, chunks, archives = phantom
    site = _site(phantom)
    dest = tmp_path / "nih"
    written: dict[str, int] = {}
    real = dl._write_chunk

    def write_until_full(fh, data):  # the disk fills after 1,000 bytes of part 2
        name = Path(fh.name).name
        if name == "images_002.tar.gz.part" and written.get(name, 0) + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), fh.name)
        written[name] = written.get(name, 0) + len(data)
        real(fh, data)

    site.cut["/images_002.tar.gz"] = 1000  # deliver it in two pieces, so the first fits
    with rs.serve(site) as base:
        monkeypatch.setattr(dl, "_write_chunk", write_until_full)
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1-2", "--workers", "1",
                     "-q"]) == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err and "images_002.tar.gz.part" in err and err.count("\n") == 1
        assert len(_pngs(dest / "images_001" / "images")) == 8
        part = dest / "archives" / "images_002.tar.gz.part"
        assert part.read_bytes() == archives[1][:1000]

        monkeypatch.setattr(dl, "_write_chunk", real)
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1-2", "-q"]) == 0
    assert site.gets("/images_002.tar.gz")[-1] == "bytes=1000-"
    assert _pngs(dest / "images_002" / "images") == {n: (root / "images" / n).read_bytes() for n in chunks[1]}


# ------------------------------------------------------------------------------------------ verify
def test_verify_against_own_and_a_colleagues_manifest(phantom, tmp_path, capsys):
    site = _site(phantom)
    dest = tmp_path / "nih"
    with rs.serve(site) as base:
        assert main(["data", "download", "--base-url", base, "--data-root", str(dest), "--parts", "1-2",
                     "--keep-archives", "-q"]) == 0
    capsys.readouterr()
    colleague = tmp_path / "theirs.json"
    theirs = json.loads((dest / "cxr-bench-download.json").read_text())
    colleague.write_text(json.dumps(theirs))
    assert main(["data", "download", "--data-root", str(dest), "--verify", str(colleague)]) == 0
    assert capsys.readouterr().out.startswith("OK")

    theirs["files"]["images_002.tar.gz"]["sha256"] = "0" * 64
    colleague.write_text(json.dumps(theirs))
    with open(dest / "archives" / "images_001.tar.gz", "r+b") as fh:
        fh.write(b"\0")
    assert main(["data", "download", "--data-root", str(dest), "--verify", str(colleague)]) == 1
    out = capsys.readouterr().out
    assert "images_001.tar.gz: archive sha256" in out
    assert f"images_002.tar.gz: sha256 {hashlib.sha256(phantom[2][1]).hexdigest()} here, {'0' * 64}" in out
    (dest / "images_002" / "images" / phantom[1][1][0]).unlink()
    assert main(["data", "download", "--data-root", str(dest), "--verify"]) == 1
    assert "images_002.tar.gz: 7 of its 8 images" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the list
def test_packaged_list_is_nih_s():
    parts = load_part_list()
    archives = parts.archives
    assert [p.part for p in archives] == list(range(1, 13))
    assert all(p.url.startswith("https://nihcc.box.com/shared/static/") and p.url.endswith(".gz") for p in archives)
    assert len({p.url for p in archives}) == 12
    assert sum(p.images for p in archives) == 112_120
    # The name ranges tile the sorted image names of the bundled Data_Entry exactly.
    with gzip.open(bundled_dir() / "nih" / "Data_Entry_2017_v2020.csv.gz", "rt") as fh:
        names = sorted(line.split(",", 1)[0] for line in fh.read().splitlines()[1:])
    i = 0
    for p in archives:
        assert names[i] == p.first and names[i + p.images - 1] == p.last
        i += p.images
    assert [p.file for p in parts.parts if p.kind == "metadata"] == list(METADATA)


def test_part_selection_and_list_validation(tmp_path):
    parts = load_part_list()
    assert [p.part for p in select_parts(parts, "1,3-4") if p.kind == "images"] == [1, 3, 4]
    assert len(select_parts(parts, "1")) == 1 + len(METADATA)
    for bad in ("0", "13", "a", "4-2", "1,,2"):
        with pytest.raises(DownloadError, match="--parts"):
            select_parts(parts, bad)
    assert dl.format_part_numbers([1, 2, 3, 5, 7, 8]) == "1-3,5,7-8"
    for item, msg in (({"part": 1, "file": "../x.tar.gz", "kind": "images", "url": "http://h/x"}, "plain file name"),
                      ({"part": 1, "file": "x.zip", "kind": "images", "url": "http://h/x"}, "tar.gz"),
                      ({"part": 1, "file": "x.tar.gz", "kind": "images", "url": "file:///etc/passwd"}, "http"),
                      ({"part": 1, "file": "x.tar.gz", "kind": "images", "url": None, "sha256": "abc"}, "64"),
                      ({"part": 1, "file": "x.tar.gz", "kind": "images", "url": None, "colour": 1}, "unknown key")):
        path = tmp_path / "l.json"
        path.write_text(json.dumps({"parts": [item]}))
        with pytest.raises(DownloadError, match=msg):
            load_part_list(path)
    text = tmp_path / "u.txt"
    text.write_text("images_099.tar.gz http://h/x\n")
    with pytest.raises(DownloadError, match="u.txt line 1"):
        dl.read_url_overrides(text, parts)


def test_a_web_page_instead_of_an_archive_is_refused(tmp_path):
    # File hosts answer an expired or rate-limited link with an HTML page and status 200.
    site = rs.Site(files={"/big.tar.gz": b"<html>Please log in</html>"},
                   headers={"/big.tar.gz": {"Content-Type": "text/html; charset=utf-8"}})
    with rs.serve(site) as base:
        with pytest.raises(DownloadError, match=r"big\.tar\.gz: .* answered with a web page"):
            download_release(tmp_path, parts=load_part_list(_one_archive_list(tmp_path, base)),
                             show_progress=False)
    assert not list(tmp_path.rglob("big.tar.gz*"))


def test_size_given_by_the_list_is_enforced(tmp_path):
    archive = rs.targz({"images/00000001_000.png": b"x" * 100})
    site = rs.Site(files={"/big.tar.gz": archive})
    with rs.serve(site) as base:
        path = tmp_path / "l.json"
        path.write_text(json.dumps({"parts": [{"part": 1, "file": "big.tar.gz", "kind": "images",
                                               "url": f"{base}big.tar.gz", "size": len(archive) + 1}]}))
        with pytest.raises(DownloadError, match=f"serves {len(archive):,} bytes, the URL list says"):
            download_release(tmp_path / "d", parts=load_part_list(path), show_progress=False)
