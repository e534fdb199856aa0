"""``cxr-bench data download`` against a real HTTP server on 127.0.0.1 that lies: a file replaced between
two requests (with and without honouring ``If-Range``), a ``Content-Length`` longer than the body with
``Range`` ignored, an endless body, an archive bomb, a redirect to ``ftp://``, hostile names in URL lists
and manifests, and a user's own image in the way of ``--layout flat``. Expected bytes come from the files
built here, never from the download code."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import range_server as rs  # tests/helpers is on pytest's pythonpath

from cxr_bench.cli import main
from cxr_bench.data import download as dl
from cxr_bench.data.download import DownloadError, download_release, load_part_list


def _list(tmp_path: Path, base: str, file: str = "big.tar.gz", kind: str = "images", **extra) -> Path:
    entry = {"file": file, "kind": kind, "url": f"{base}{file}", **extra}
    if kind == "images":
        entry["part"] = 1
    path = tmp_path / "urls.json"
    path.write_text(json.dumps({"name": "test", "parts": [entry]}))
    return path


def _fetch(tmp_path: Path, base: str, dest: Path, **kw):
    return download_release(dest, parts=load_part_list(_list(tmp_path, base, **kw)), keep_archives=True,
                            show_progress=False, retries=2)


# ----------------------------------------------------------------------------------- two versions
@pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])
@pytest.mark.parametrize("honours_if_range", [True, False])
def test_a_file_replaced_mid_download_is_never_stitched(tmp_path, validator, honours_if_range):
    a = rs.targz({"images/00000001_000.png": os.urandom(300_000)})
    b = rs.targz({"images/00000001_000.png": os.urandom(300_000)})
    tag = {"ETag": ('"A"', '"B"'), "Last-Modified": ("Mon, 01 Jan 2024 00:00:00 GMT",
                                                     "Tue, 02 Jan 2024 00:00:00 GMT")}[validator]
    site = rs.Site(files={"/big.tar.gz": a}, headers={"/big.tar.gz": {validator: tag[0]}},
                   cut={"/big.tar.gz": 100_000}, swap={"/big.tar.gz": (b, {validator: tag[1]})})
    if not honours_if_range:
        site.ignore_if_range.add("/big.tar.gz")
    with rs.serve(site) as base:
        _fetch(tmp_path, base, tmp_path / "d")
    got = (tmp_path / "d" / "archives" / "big.tar.gz").read_bytes()
    assert got == b, "half of version A and half of B"
    rec = json.loads((tmp_path / "d" / "cxr-bench-download.json").read_text())["files"]["big.tar.gz"]
    assert rec["sha256"] == hashlib.sha256(b).hexdigest()
    assert site.gets("/big.tar.gz")[1] == "bytes=100000-"  # it did try to resume, with If-Range
    assert not (tmp_path / "d" / "archives" / "big.tar.gz.part.json").exists()


def test_the_validator_survives_the_process_and_a_changed_file_is_fetched_whole(tmp_path):
    """A download stopped mid-file keeps the first response's ETag beside its .part; the next call (another
    process in real life) sends it as If-Range, and the server's new version comes whole."""
    import threading

    a, b = os.urandom(3 << 20), os.urandom(3 << 20)
    site = rs.Site(files={"/f.bin": a}, headers={"/f.bin": {"ETag": '"A"'}})
    stop = threading.Event()

    class StopAfterFirstChunk:  # the progress-bar hook is where the download looks for a stop between chunks
        def start(self, total, done):
            pass

        def update(self, n):
            stop.set()

    with rs.serve(site) as base:
        with pytest.raises(dl._Stopped):
            dl.download_file(f"{base}f.bin", tmp_path / "f.bin", bar=StopAfterFirstChunk(), stop=stop)  # type: ignore[arg-type]
        part = tmp_path / "f.bin.part"
        assert 0 < part.stat().st_size < len(a)
        assert json.loads((tmp_path / "f.bin.part.json").read_text())["validator"] == '"A"'
        site.files["/f.bin"], site.headers["/f.bin"] = b, {"ETag": '"B"'}
        size, sha = dl.download_file(f"{base}f.bin", tmp_path / "f.bin")
    assert site.if_range[-1] == ("/f.bin", '"A"')
    assert (tmp_path / "f.bin").read_bytes() == b and sha == hashlib.sha256(b).hexdigest() and size == len(b)
    assert not (tmp_path / "f.bin.part.json").exists()


def test_a_metadata_csv_without_validators_changing_length_is_fetched_whole(tmp_path):
    """No ETag, no Last-Modified: the recorded length is the validator of last resort."""
    a = "Image Index,Finding Labels\n" + "".join(f"{i:08d}_000.png,A\n" for i in range(2000))
    b = "Image Index,Finding Labels\n" + "".join(f"{i:08d}_000.png,Bb\n" for i in range(2000))
    site = rs.Site(files={"/meta.csv": a.encode()}, cut={"/meta.csv": 20_000},
                   swap={"/meta.csv": (b.encode(), {})}, ignore_if_range={"/meta.csv"})
    with rs.serve(site) as base:
        _fetch(tmp_path, base, tmp_path / "d", file="meta.csv", kind="metadata")
    assert (tmp_path / "d" / "meta.csv").read_text() == b


# ----------------------------------------------------------------------------------- bounded work
def test_a_body_shorter_than_its_length_with_range_ignored_stops(tmp_path):
    """Each restart gets the same bytes again: no net progress, so a few requests, then one error."""
    data = os.urandom(50_000)
    site = rs.Site(files={"/big.tar.gz": data}, ignore_range={"/big.tar.gz"}, overlong={"/big.tar.gz": 10_000})
    t0 = time.monotonic()
    with rs.serve(site) as base, pytest.raises(DownloadError) as err:
        _fetch(tmp_path, base, tmp_path / "d")
    assert time.monotonic() - t0 < 30
    assert len(site.gets("/big.tar.gz")) <= 2 + 2 + 1  # first + (retries + 1) attempts without progress
    assert "without getting past" in str(err.value) and "\n" not in str(err.value)


def test_download_file_caps_requests_and_time_without_progress(tmp_path):
    data = os.urandom(50_000)
    site = rs.Site(files={"/f": data}, ignore_range={"/f"}, overlong={"/f": 10_000})
    with rs.serve(site) as base:
        with pytest.raises(DownloadError, match="3 requests"):
            dl.download_file(f"{base}f", tmp_path / "f", retries=100, max_requests=3)
        n = len(site.gets("/f"))
        with pytest.raises(DownloadError, match="s without getting past"):
            dl.download_file(f"{base}f", tmp_path / "f", retries=100, stall_timeout=0.0)
        assert len(site.gets("/f")) - n <= 3


def test_an_endless_body_is_cut_at_the_files_bound(tmp_path):
    site = rs.Site(endless={"/big.tar.gz"})
    with rs.serve(site) as base, pytest.raises(DownloadError, match="more than the 2,000,000 bytes"):
        _fetch(tmp_path, base, tmp_path / "d", max_size=2_000_000)
    assert not (tmp_path / "d" / "archives" / "big.tar.gz.part").exists()
    assert not (tmp_path / "d" / "archives" / "big.tar.gz").exists()


def test_every_nih_archive_has_a_recorded_bound_and_unknown_files_a_cap():
    parts = load_part_list()
    for p in parts.archives:
        # NIH's archives hold PNGs of at most ~0.45 MB on average; the bound must leave room for them.
        assert p.size is None and p.max_size is not None and p.max_size >= p.images * 450_000, p.file
        assert dl._max_size(p) == p.max_size
    meta = next(p for p in parts.parts if p.kind == "metadata")
    assert dl._max_size(meta) == dl.UNKNOWN_SIZE_CAP["metadata"] < 1 << 40


def test_a_decompression_bomb_is_refused_before_it_fills_the_disk(tmp_path):
    bomb = rs.targz({"images/00000001_000.png": bytes(200 << 20)})  # 200 MiB of zeros, ~200 KiB packed
    assert len(bomb) < 1 << 20
    site = rs.Site(files={"/big.tar.gz": bomb})
    with rs.serve(site) as base, pytest.raises(DownloadError, match="expands to more than"):
        _fetch(tmp_path, base, tmp_path / "d")
    assert not (tmp_path / "d" / "images_001").exists()
    assert not any(p.name.startswith(".extracting") for p in (tmp_path / "d").iterdir())


# ----------------------------------------------------------------------------------- redirects
def test_redirects_are_followed_to_http_only(tmp_path):
    data = rs.targz({"images/00000001_000.png": b"png"})
    site = rs.Site(files={"/real.tar.gz": data},
                   redirect={"/big.tar.gz": "ftp://127.0.0.1/big.tar.gz", "/ok.tar.gz": "/real.tar.gz"})
    with rs.serve(site) as base:
        with pytest.raises(DownloadError, match="only http") as err:
            _fetch(tmp_path, base, tmp_path / "d")
        assert "ftp://" in str(err.value) and "\n" not in str(err.value)
        _fetch(tmp_path, base, tmp_path / "e", file="ok.tar.gz")
    assert (tmp_path / "e" / "archives" / "ok.tar.gz").read_bytes() == data


# ----------------------------------------------------------------------------------- hostile names
HOSTILE_NAMES = ["evil\u202egpj.tar.gz", "a\u2028b.tar.gz", "a\u0085b.tar.gz", "a\u200fb.tar.gz",
                 "cxr-bench-download.json", "archives", "images", "IMAGES_003", "x.tar.gz.part",
                 "x.tar.gz.part.json", "../x.tar.gz", "/etc/x.tar.gz", ".hidden.tar.gz", "a\tb.tar.gz",
                 "a\ue000b.tar.gz"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_part_names_in_a_url_list_are_one_error_line(tmp_path, capsys, name):
    path = tmp_path / "urls.json"
    path.write_text(json.dumps({"name": "t", "parts": [
        {"file": name, "kind": "images", "part": 1, "url": "http://127.0.0.1:9/x.tar.gz"}]}))
    assert main(["data", "download", "--urls", str(path), "--data-root", str(tmp_path / "d"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cxr-bench: error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def _manifest(dest: Path, files: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "cxr-bench-download.json").write_text(json.dumps({"schema": 1, "files": files, "parts": []}))


@pytest.mark.parametrize("files", [
    {"../../outside.csv": {"kind": "metadata", "sha256": "0" * 64}},
    {"a\u2028b.csv": {"kind": "metadata", "sha256": "0" * 64}},
    {"x.tar.gz": "not a record"},
    {"x.tar.gz": {"kind": "images", "sha256": 5}},
    {"x.tar.gz": {"kind": "images", "sha256": "0" * 64, "status": "extracted", "folder": "../../etc",
                  "images": 1, "first": "a", "last": "b"}},
    {"x.tar.gz": {"kind": "images", "sha256": "0" * 64, "status": "extracted", "folder": "images",
                  "images": "lots"}},
])
def test_a_hostile_manifest_is_one_error_line(tmp_path, capsys, files):
    _manifest(tmp_path / "d", files)
    for extra in ([], [str(tmp_path / "d" / "cxr-bench-download.json")]):
        assert main(["data", "download", "--data-root", str(tmp_path / "d"), "--verify", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cxr-bench: error: ") and "\n" not in err


def test_verify_never_hashes_a_file_outside_the_data_root(tmp_path, capsys, monkeypatch):
    secret = tmp_path / "secret.csv"
    secret.write_text("not yours\n")
    dest = tmp_path / "d"
    _manifest(dest, {"meta.csv": {"kind": "metadata", "sha256": "0" * 64},
                     "x.tar.gz": {"kind": "images", "sha256": "0" * 64, "status": "downloaded"}})
    (dest / "meta.csv").symlink_to(secret)
    (dest / "archives").mkdir()
    (dest / "archives" / "x.tar.gz").symlink_to(secret)
    real_sha = dl.sha256_file
    hashed: list[Path] = []  # a spy: every file the verification hashes, still hashed for real
    monkeypatch.setattr(dl, "sha256_file", lambda p: hashed.append(Path(p)) or real_sha(p))
    assert main(["data", "download", "--data-root", str(dest), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "meta.csv" in out and "leads outside" in out and hashed == []


# ----------------------------------------------------------------------------------- a user's files
def _flat_site(members: dict[str, bytes]) -> rs.Site:
    return rs.Site(files={"/big.tar.gz": rs.targz({f"images/{n}": d for n, d in members.items()})})


def test_flat_layout_never_overwrites_a_users_image(tmp_path, capsys):
    theirs = b"the user's own image, not NIH's"
    members = {"00000001_000.png": b"archive one", "00000002_000.png": b"archive two"}
    dest = tmp_path / "d"
    (dest / "images").mkdir(parents=True)
    (dest / "images" / "00000001_000.png").write_bytes(theirs)
    site = _flat_site(members)
    with rs.serve(site) as base:
        urls = _list(tmp_path, base)
        assert main(["data", "download", "--urls", str(urls), "--data-root", str(dest), "--layout", "flat", "-q"]) == 2
    err = capsys.readouterr().err
    assert "00000001_000.png" in err and "nothing was overwritten" in err
    assert (dest / "images" / "00000001_000.png").read_bytes() == theirs
    assert not (dest / "images" / "00000002_000.png").exists()  # nothing moved at all
    assert (dest / "archives" / "big.tar.gz").is_file()  # kept: the archive is fine
    assert main(["data", "download", "--data-root", str(dest), "--verify"]) == 1  # the part is not extracted

    # The same bytes already there are the archive's own: kept, and the part completes.
    (dest / "images" / "00000001_000.png").write_bytes(members["00000001_000.png"])
    with rs.serve(site) as base:
        urls = _list(tmp_path, base)
        assert main(["data", "download", "--urls", str(urls), "--data-root", str(dest), "--layout", "flat", "-q"]) == 0
    assert {p.name: p.read_bytes() for p in (dest / "images").iterdir()} == members
    capsys.readouterr()
    assert main(["data", "download", "--data-root", str(dest), "--verify"]) == 0


def test_a_link_in_the_way_is_not_replaced(tmp_path):
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(b"mine")
    dest = tmp_path / "d"
    (dest / "images_001" / "images").mkdir(parents=True)
    (dest / "images_001" / "images" / "00000001_000.png").symlink_to(elsewhere)
    with rs.serve(_flat_site({"00000001_000.png": b"archive"})) as base, pytest.raises(DownloadError):
        _fetch(tmp_path, base, dest)
    assert (dest / "images_001" / "images" / "00000001_000.png").is_symlink()
    assert elsewhere.read_bytes() == b"mine"
