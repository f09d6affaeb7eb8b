"""Loopback ``https://`` and ``gs://`` servers for tests: a Range-honouring file server and a GCS emulator.

:class:`RangeFileServer` serves objects from memory over HTTP/1.1 keep-alive (plain or TLS) and
answers ``Range: bytes=a-b`` with 206, as a CDN or a presigned-URL endpoint does;
:class:`LoopbackGCS` runs ``gcp-storage-emulator`` (a dev dependency) in this process.  Both bind
127.0.0.1 only and stop when their context exits.  Put
:class:`~wsistream.storage.loopback.FaultProxy` in front of either (plain HTTP) to inject faults.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

from wsistream.storage.loopback import _free_port, _ThreadServed

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class RangeFileServer(_ThreadServed):
    """Objects served by URL path over HTTP(S) on loopback; ``with RangeFileServer() as web: web.put(...)``.

    Parameters
    ----------
    ssl_context : ssl.SSLContext, optional
        Server-side TLS context (e.g. from ``trustme``); ``None`` serves plain ``http://``.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self._objects: dict[str, tuple[bytes, str]] = {}  # path -> (data, ETag), hashed once at put
        self._lock = threading.Lock()
        self._listen(port, self._handler_class())
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "http" if ssl_context is None else "https"
        #: GETs with a ``Range`` header answered so far.
        self.ranged_requests = 0

    @property
    def endpoint_url(self) -> str:
        """``scheme://127.0.0.1:port`` (TLS certificates for ``127.0.0.1`` must name that IP)."""
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def put(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``/path`` (replacing what was there); returns its URL."""
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        with self._lock:
            self._objects[path.lstrip("/")] = (bytes(data), etag)
        return f"{self.endpoint_url}/{path.lstrip('/')}"

    def upload(self, files: Iterable[str | os.PathLike[str]], prefix: str = "") -> list[str]:
        """Serve local files under ``prefix``; returns their URLs, in order."""
        urls = []
        for path in files:
            with open(path, "rb") as fh:
                urls.append(self.put(f"{prefix}{os.path.basename(os.fspath(path))}", fh.read()))
        return urls

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # see _ProxyHandler

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _answer(self) -> None:
                with server._lock:
                    stored = server._objects.get(self.path.split("?", 1)[0].lstrip("/"))
                if stored is None:
                    self._send(404, b"not found", {})
                    return
                data, etag = stored
                headers = {"ETag": etag, "Accept-Ranges": "bytes"}
                match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
                if match is None:
                    self._send(200, data, headers)
                    return
                with server._lock:
                    server.ranged_requests += 1
                start = int(match.group(1))
                end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
                if start >= len(data) or end <= start:
                    self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                self._send(206, data[start:end], headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer

        return Handler


class LoopbackGCS:
    """``gcp-storage-emulator`` (in memory, one bucket) on a free loopback port.

    Clients reach it with ``gcs_options(endpoint_url)``: gcsfs on its JSON API, anonymous.
    """

    def __init__(self, bucket: str = "slides") -> None:
        self.bucket = bucket
        self._server: Any = None
        self.endpoint_url = ""

    def __enter__(self) -> LoopbackGCS:
        import logging

        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)  # one line per request otherwise
        port = _free_port()
        self._server = create_server("127.0.0.1", port, in_memory=True, default_bucket=self.bucket)
        self._server.start()  # returns once the socket is bound
        self.endpoint_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()

    def filesystem(self) -> Any:
        """A gcsfs filesystem of this emulator (for uploads in tests)."""
        from wsistream.storage.config import StorageConfig

        return StorageConfig(options=gcs_options(self.endpoint_url)).filesystem(f"gs://{self.bucket}/")

    def upload(self, files: Iterable[str | os.PathLike[str]], prefix: str = "") -> list[str]:
        """Upload local files under ``prefix``; returns their ``gs://`` URLs, in order."""
        fs, urls = self.filesystem(), []
        for path in files:
            url = f"gs://{self.bucket}/{prefix}{os.path.basename(os.fspath(path))}"
            fs.put_file(os.fspath(path), url)
            urls.append(url)
        return urls


def gcs_options(endpoint_url: str) -> dict[str, dict[str, Any]]:
    """:class:`~wsistream.storage.StorageConfig` options for a loopback GCS emulator (anonymous)."""
    return {"gs": {"endpoint_url": endpoint_url, "token": "anon", "project": "loopback"}}
