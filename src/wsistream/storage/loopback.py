"""A real S3 server on loopback plus a latency/fault-injecting proxy, for tests and ``bench --remote``.

:class:`LoopbackS3` runs moto in server mode (``moto[server]``, a dev dependency) on 127.0.0.1 and
uploads files to a bucket; :class:`FaultProxy` sits between the client and that server, adds a
fixed latency to every request and injects the faults a real object store produces (connection
resets, stalls, 403/404/503 answers, truncated bodies).  Both bind loopback only, stop themselves
when their context exits, and every injected stall is bounded.  Nothing here reaches the internet.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

#: Faults :meth:`FaultProxy.inject` understands.
FAULT_KINDS = ("reset", "stall", "403", "404", "503", "truncate")

#: Path at which a proxy answers its own counters (JSON); never forwarded, never counted.
STATS_PATH = "/__wsistream_proxy_stats"

#: Credentials moto accepts (it checks none); real ones never appear in tests.
LOOPBACK_CREDENTIALS = {"key": "testing", "secret": "testing"}


class LoopbackS3:
    """moto's S3 on a free loopback port; ``with LoopbackS3() as s3: s3.upload(...)``.

    ``in_process=True`` (tests): a thread of this process (``ThreadedMotoServer``).  ``False``
    (benchmarks): a ``moto_server`` child process, so the server's CPU does not share this
    process's GIL with the client being measured; it is terminated on exit.
    """

    def __init__(self, bucket: str = "slides", *, in_process: bool = True) -> None:
        self.bucket = bucket
        self.in_process = in_process
        self._server: Any = None
        self._child: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""

    def __enter__(self) -> LoopbackS3:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        if self.in_process:
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
        else:
            host, port = "127.0.0.1", _free_port()
            command = [sys.executable, "-c", "from moto.server import main; main()", "-H", host, "-p", str(port)]
            self._child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_for_port(host, port, self._child)
        self.endpoint_url = f"http://{host}:{port}"
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()
        if self._child is not None:
            self._child.terminate()
            self._child.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        """The ``moto_server`` child's process id (``in_process=False``), else ``None``."""
        return None if self._child is None else self._child.pid

    def client(self) -> Any:
        """A boto3 S3 client of this server (for uploads and overwrites in tests)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=LOOPBACK_CREDENTIALS["key"],
            aws_secret_access_key=LOOPBACK_CREDENTIALS["secret"],
            region_name="us-east-1",
        )

    def upload(self, files: Iterable[str | os.PathLike[str]], prefix: str = "") -> list[str]:
        """Upload local files under ``prefix``; returns their ``s3://`` URLs, in order."""
        client, urls = self.client(), []
        for path in files:
            key = f"{prefix}{os.path.basename(os.fspath(path))}"
            client.upload_file(os.fspath(path), self.bucket, key)
            urls.append(f"s3://{self.bucket}/{key}")
        return urls

    def put(self, key: str, data: bytes) -> str:
        """Write ``data`` to ``key`` (overwrites: a new ETag); returns the URL."""
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, child: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Until the child accepts connections (bounded; it is killed if it never does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args!r} exited with status {child.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    child.kill()
    raise RuntimeError(f"moto_server did not listen on {host}:{port} within {timeout_s} s")


def s3_options(endpoint_url: str) -> dict[str, dict[str, Any]]:
    """:class:`~wsistream.storage.StorageConfig` options for a loopback endpoint."""
    return {"s3": {"endpoint_url": endpoint_url, **LOOPBACK_CREDENTIALS}}


@dataclass
class _Fault:
    kind: str
    remaining: int
    match: Callable[[str, str, dict[str, str]], bool]


class _LoopbackHTTPServer(ThreadingHTTPServer):
    """A client that hangs up (a finished DataLoader worker, an injected reset) is not a server error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ThreadServed:
    """A ``ThreadingHTTPServer`` on 127.0.0.1, served from a daemon thread between ``__enter__`` and ``__exit__``."""

    _server: ThreadingHTTPServer
    _thread: threading.Thread | None

    def _listen(self, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = _LoopbackHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class FaultProxy(_ThreadServed):
    """HTTP proxy on loopback in front of ``upstream`` with added latency and injected faults.

    Parameters
    ----------
    upstream : str
        ``http://host:port`` of the real server.
    latency_s : float
        Added before forwarding each request (a round trip to a distant region).
    stall_s : float
        How long a ``"stall"`` fault holds the connection before closing it (bounded: the client's
        timeout should fire first).
    port : int
        Loopback port to listen on (0: a free one).
    """

    def __init__(self, upstream: str, *, latency_s: float = 0.0, stall_s: float = 5.0, port: int = 0) -> None:
        up_host, up_port = upstream.split("://", 1)[1].rsplit(":", 1)
        self.upstream = (up_host, int(up_port))
        self.latency_s = float(latency_s)
        self.stall_s = float(stall_s)
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._local = threading.local()  # each handler thread's upstream connection
        #: Requests forwarded or faulted, and ranged GETs among them.
        self.requests = 0
        self.ranged_requests = 0
        self.bytes_sent = 0
        self._listen(port, self._handler_class())

    @property
    def endpoint_url(self) -> str:
        """Where clients connect."""
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def inject(self, kind: str, count: int = 1, *, key: str | None = None, ranged_only: bool = True) -> None:
        """Answer the next ``count`` matching requests with fault ``kind`` (:data:`FAULT_KINDS`).

        ``ranged_only``: only GETs with a ``Range`` header (tile/IFD reads) match, not the
        metadata request of an open; ``key``: only requests whose path contains it.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind={kind!r}; pass one of {FAULT_KINDS}")

        def match(method: str, path: str, headers: dict[str, str]) -> bool:
            if ranged_only and (method != "GET" or "range" not in headers):
                return False
            return key is None or key in path

        with self._lock:
            self._faults.append(_Fault(kind, int(count), match))

    def clear(self) -> None:
        """Drop the faults not yet used."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str, headers: dict[str, str]) -> str | None:
        with self._lock:
            self.requests += 1
            self.ranged_requests += method == "GET" and "range" in headers
            for fault in self._faults:
                if fault.remaining > 0 and fault.match(method, path, headers):
                    fault.remaining -= 1
                    return fault.kind
        return None

    def _upstream_request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Forward on this handler thread's keep-alive connection (one new connection on failure)."""
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(*self.upstream, timeout=30)
            try:
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                return resp, resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        """A handler class bound to this proxy (``ThreadingHTTPServer`` instantiates it per request)."""
        return type("Handler", (_ProxyHandler,), {"proxy": self})


class _ProxyHandler(BaseHTTPRequestHandler):
    """One request through a :class:`FaultProxy`: the stats path, an injected fault, or a relay upstream."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: the headers and the body go out in two writes; with Nagle's algorithm the body
    #: waits for the ACK of the headers, which the client delays (up to 40 ms on Linux): every
    #: ranged GET took ~44 ms on loopback before this, whatever latency was asked for.
    disable_nagle_algorithm = True
    proxy: FaultProxy

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _forward(self) -> None:
        if self.path == STATS_PATH:
            self._stats()
            return
        proxy = self.proxy
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self.rfile.read(int(headers.get("content-length", 0) or 0))
        fault = proxy._take_fault(self.command, self.path, headers)
        if proxy.latency_s:
            time.sleep(proxy.latency_s)
        if fault in ("reset", "stall"):
            if fault == "stall":
                time.sleep(proxy.stall_s)
            self._abort()
            return
        if fault in ("403", "404", "503"):
            self._error(int(fault))
            return
        self._relay(body, truncate=fault == "truncate")

    def _relay(self, body: bytes, *, truncate: bool) -> None:
        """Send the request upstream and its response back (half the body, then a reset, when ``truncate``)."""
        proxy = self.proxy
        resp, data = proxy._upstream_request(self.command, self.path, body, dict(self.headers.items()))
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            sent = data[: len(data) // 2] if truncate else data
            self.wfile.write(sent)
            with proxy._lock:
                proxy.bytes_sent += len(sent)
        if truncate:
            self._abort()

    def _stats(self) -> None:
        proxy = self.proxy
        with proxy._lock:
            counts = {"requests": proxy.requests, "ranged_requests": proxy.ranged_requests}
            counts["bytes_sent"] = proxy.bytes_sent
        payload = json.dumps(counts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, status: int) -> None:
        code = {403: "AccessDenied", 404: "NoSuchKey", 503: "SlowDown"}[status]
        payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward
