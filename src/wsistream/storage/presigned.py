"""Ranged GETs of one S3 object through a presigned URL and a plain keep-alive ``urllib3`` pool.

Through s3fs every tile request runs aiobotocore's whole per-call machinery (event hooks, user-agent
string, SigV4 signing, response parsing with dateutil) on fsspec's event-loop thread, then crosses
back over its sync bridge: 3.6-3.9 ms of client CPU per ranged GET on the 2-core box, against
1.1-1.2 ms for a ``urllib3`` GET of a presigned URL (measured, docs/storage.md).  That CPU is taken
under the GIL the decoder needs.  So the object is presigned once (s3fs's own ``generate_presigned_url``,
with the filesystem's credentials, endpoint and addressing style) and re-signed at half its lifetime;
listing, opening and metadata stay on fsspec.  Retries, timeouts and the named errors stay in
:class:`~wsistream.storage.source.RemoteByteSource`: this module sends one request per call.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

#: Lifetime of a presigned URL.  Re-signed at half of it; SigV4 allows up to 7 days, but with
#: temporary (STS) credentials a URL dies with its token, hence also one re-sign on a 403.
PRESIGN_EXPIRES_S = 3600

_pools_lock = threading.Lock()
_pools: dict[tuple[int, Any], Any] = {}  # (pid, TLS settings) -> urllib3.PoolManager


class HTTPStatusError(OSError):
    """A ranged GET answered with a status other than 206 (``status`` read by ``translate_error``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status


def _pool_manager(verify: Any, max_concurrency: int) -> Any:
    """The keep-alive pool of this process for one TLS setting (a forked child builds its own)."""
    import urllib3

    key = (os.getpid(), verify if isinstance(verify, (bool, str)) or verify is None else id(verify))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            tls: dict[str, Any] = {}
            if verify is False:
                tls["cert_reqs"] = "CERT_NONE"
            else:  # a CA bundle path, or botocore's default bundle: the trust s3fs's own requests have
                from botocore.httpsession import get_cert_path

                tls["ca_certs"] = verify if isinstance(verify, str) else get_cert_path(True)
            # shared by every slide of the process: a pool of 8 open slides' batches and prefetches
            # stay on kept-alive connections; no retries (they are ours)
            size = 8 * max_concurrency
            pool = _pools[key] = urllib3.PoolManager(num_pools=16, maxsize=size, retries=False, **tls)
        return pool


class PresignedRangeReader:
    """``read(start, end)``: the bytes ``[start, end)`` of ``url`` over a presigned GET with ``If-Match``.

    Parameters
    ----------
    url : str
        ``s3://bucket/key``.
    fs : s3fs.S3FileSystem
        The filesystem the object was opened with (credentials, endpoint, requester-pays).
    etag : str or None
        Sent as ``If-Match``: an object replaced since it was opened answers 412.
    timeout_s : float
        urllib3's connect and read timeouts.
    max_concurrency : int
        Sizes the process's connection pool (requests of one batched read in flight at once).
    """

    def __init__(self, url: str, fs: Any, *, etag: str | None, timeout_s: float, max_concurrency: int) -> None:
        import urllib3

        self.url = url
        self._fs = fs
        self._headers = {} if etag is None else {"If-Match": etag}
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        verify = (getattr(fs, "client_kwargs", None) or {}).get("verify")
        self._http = _pool_manager(verify, max_concurrency)
        self._lock = threading.Lock()
        self._signed = ""
        self._signed_at = 0.0
        self._sign()

    def _sign(self) -> str:
        with self._lock:
            self._signed = self._fs.url(self.url, expires=PRESIGN_EXPIRES_S, **getattr(self._fs, "req_kw", {}))
            self._signed_at = time.monotonic()
            return self._signed

    def _current(self) -> str:
        if time.monotonic() - self._signed_at > PRESIGN_EXPIRES_S / 2:
            return self._sign()
        return self._signed

    def read(self, start: int, end: int) -> bytes:
        """One ranged GET (re-signed and sent once more if the signature was refused)."""
        signed = self._current()
        for resign in (True, False):
            headers = {**self._headers, "Range": f"bytes={start}-{end - 1}"}
            response = self._http.request("GET", signed, headers=headers, timeout=self._timeout, preload_content=True)
            if response.status == 206:
                return bytes(response.data)
            if response.status == 403 and resign:  # an expired signature or token: sign with fresh credentials
                signed = self._sign()
                continue
            raise HTTPStatusError(response.status, response.reason or "")
        raise AssertionError("unreachable")
