"""A real HTTP file server on 127.0.0.1 for the download tests (this module holds no tests).

The suite runs with ``--import-mode=importlib``, so test folders are not on ``sys.path``: tests load this
module of tests/helpers (on pytest's pythonpath). It serves bytes from memory with what the download code relies on and what
real servers do differently:

- ``Range: bytes=N-`` / ``bytes=N-M`` answered with 206 and ``Content-Range`` (416 past the end), or ignored
  (200, the whole file) for paths in ``ignore_range``, as some servers and proxies do;
- HEAD, ``ETag`` and extra headers per path (the Hugging Face hub's ``X-Repo-Commit``);
- faults: ``stall`` (send N bytes, then wait until released: a client killed mid-file) and ``cut`` (send N
  bytes of a body announced longer, then close: a connection dropped mid-file).
- lies: ``swap`` (after the first GET of a path, it serves another version with other headers: a file
  replaced on the server mid-download), ``ignore_if_range`` (a stale ``If-Range`` still gets 206 of the new
  version), ``overlong`` (``Content-Length`` N bytes more than the body, then close), ``endless`` (no
  length, the body never ends), ``redirect`` (302 to any URL).

Every request is logged as ``(method, path, range header or None)`` so a test can assert that a resumed
download asked for the missing bytes only.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    stall: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the connection drops (once)
    swap: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    ignore_if_range: set[str] = field(default_factory=set)
    overlong: dict[str, int] = field(default_factory=dict)
    endless: set[str] = field(default_factory=set)
    redirect: dict[str, str] = field(default_factory=dict)
    if_range: list[tuple[str, str | None]] = field(default_factory=list)  # (path, If-Range header) per GET
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of ``path``, in order (None: no Range)."""
        with self.lock:
            return [r for m, p, r in self.log if m == "GET" and p == path]


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            rng = self.headers.get("Range")
            with site.lock:
                site.log.append((self.command, path, rng))
                if self.command == "GET":
                    site.if_range.append((path, self.headers.get("If-Range")))
                data = site.files.get(path)
                extra = dict(site.headers.get(path, {}))
                cut = site.cut.pop(path, None) if body else None
                if body and path in site.swap:  # this GET sees the old version; every later one the new
                    site.files[path], site.headers[path] = site.swap.pop(path)
                target = site.redirect.get(path)
            if target is not None:
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path in site.endless:
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    while body:
                        self.wfile.write(b"\0" * 65536)
                return
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end, status = 0, len(data), 200
            m = _RANGE.match(rng or "")
            if_range = self.headers.get("If-Range")
            if (m and if_range is not None and path not in site.ignore_if_range
                    and if_range not in (extra.get("ETag"), extra.get("Last-Modified"))):
                m = None  # RFC 9110: a validator that no longer matches gets the whole, current file
            if m and path not in site.ignore_range:
                start = int(m.group(1))
                end = min(len(data), int(m.group(2)) + 1) if m.group(2) else len(data)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(end - start + site.overlong.get(path, 0)))
            self.send_header("Accept-Ranges", "none" if path in site.ignore_range else "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if not body:
                return
            payload = data[start:end]
            stall = site.stall.get(path)
            if stall is not None and start == 0:
                n, release = stall
                self.wfile.write(payload[:n])
                self.wfile.flush()
                release.wait(30)
                self.close_connection = True
                return
            if path in site.overlong:
                self.wfile.write(payload)
                self.wfile.flush()
                self.close_connection = True
                return
            if cut is not None:
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@contextlib.contextmanager
def serve(site: Site) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1 (a free port) in a thread; yields the base URL ending in ``/``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        for _, release in site.stall.values():
            release.set()
        server.shutdown()
        server.server_close()


def targz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz holding ``members`` (name -> bytes), as the archives a server in these tests serves."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
