"""Loopback servers in child processes, for benchmarks: their CPU does not share the measured process's GIL.

:class:`LatencyProxyProcess` is a :class:`~wsistream.storage.loopback.FaultProxy` adding latency;
:class:`RangeServerProcess` a :class:`~wsistream.storage.loopback_http.RangeFileServer` of local files.
Both bind 127.0.0.1 only and are terminated when their context exits.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from typing import Self

from wsistream.storage.loopback import STATS_PATH, _free_port, _wait_for_port


class ChildServer:
    """A loopback server in a child process, so its CPU does not share the measured process's GIL.

    Subclasses give ``_code`` (run as ``python -c _code PORT *_args()``, serving forever on PORT)
    and ``_args``; the child is terminated on exit.
    """

    _code = ""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""

    def _args(self) -> list[str]:
        return []

    def __enter__(self) -> Self:
        port = _free_port()
        command = [sys.executable, "-c", self._code, str(port), *self._args()]
        self._child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port("127.0.0.1", port, self._child)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            self._child.terminate()
            self._child.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        """The child's process id (benchmarks read its CPU time), ``None`` before ``__enter__``."""
        return None if self._child is None else self._child.pid


class LatencyProxyProcess(ChildServer):
    """A :class:`FaultProxy` with latency only, in a child process (benchmarks).

    In-process, the proxy's threads parse and copy every request under the measured process's GIL,
    which a client talking to a real object store never pays.  Counters come from the child over
    :data:`STATS_PATH`.
    """

    _code = (
        "import sys; from wsistream.storage.loopback import FaultProxy; "
        "p = FaultProxy(sys.argv[2], latency_s=float(sys.argv[3]), port=int(sys.argv[1])); "
        "p._server.serve_forever()"
    )

    def __init__(self, upstream: str, *, latency_s: float) -> None:
        super().__init__()
        self.upstream = upstream
        self.latency_s = float(latency_s)

    def _args(self) -> list[str]:
        return [self.upstream, str(self.latency_s)]

    def _counts(self) -> dict[str, int]:
        host, port = self.endpoint_url.split("://", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", STATS_PATH)
            counts: dict[str, int] = json.loads(conn.getresponse().read())
            return counts
        finally:
            conn.close()

    @property
    def ranged_requests(self) -> int:
        """Ranged GETs forwarded so far."""
        return self._counts()["ranged_requests"]

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent to clients so far."""
        return self._counts()["bytes_sent"]


class RangeServerProcess(ChildServer):
    """A plain-HTTP :class:`RangeFileServer` of local ``files`` under ``prefix``, in a child process (benchmarks).

    A server that costs ~0.3 ms of CPU per ranged GET (moto: 8 ms on the bench's 17 MB objects, which it
    copies whole per GET), standing in for an object store whose serving is not the bottleneck.
    """

    _code = (
        "import sys; from wsistream.storage.loopback_http import RangeFileServer; "
        "web = RangeFileServer(port=int(sys.argv[1])); web.upload(sys.argv[3:], prefix=sys.argv[2]); "
        "web._server.serve_forever()"
    )

    def __init__(self, files: Iterable[str | os.PathLike[str]], *, prefix: str = "") -> None:
        super().__init__()
        self.files = [os.fspath(f) for f in files]
        self.prefix = prefix

    def _args(self) -> list[str]:
        return [self.prefix, *self.files]

    @property
    def urls(self) -> list[str]:
        """The files' URLs, in order."""
        return [f"{self.endpoint_url}/{self.prefix}{os.path.basename(f)}" for f in self.files]
