"""Ranged reads of one object in storage: bounded retries, timeouts, coalescing, a block cache."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from wsistream.backends._byte_source import ByteSource
from wsistream.errors import (
    RemoteAccessDeniedError,
    RemoteNotFoundError,
    RemoteObjectChangedError,
    RemoteStorageError,
)
from wsistream.storage.config import StorageConfig


def translate_error(url: str, what: str, exc: BaseException) -> RemoteStorageError:
    """The :class:`RemoteStorageError` subclass for a library exception (404, 403, ETag change, other)."""
    text = f"{type(exc).__name__}: {exc}"
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return RemoteNotFoundError(url, f"{what}: object does not exist (404; {text})")
    if isinstance(exc, PermissionError) or status in (401, 403):
        return RemoteAccessDeniedError(url, f"{what}: access denied (403; check the credentials; {text})")
    if type(exc).__name__ == "FileExpired" or status == 412 or "PreconditionFailed" in str(exc):
        return RemoteObjectChangedError(url, f"{what}: the object changed while it was read (ETag mismatch; {text})")
    return RemoteStorageError(url, f"{what}: {text}")


def _is_permanent(err: RemoteStorageError) -> bool:
    return isinstance(err, (RemoteNotFoundError, RemoteAccessDeniedError, RemoteObjectChangedError))


def _resolve_part(part: Future, index: int, whole: Future) -> None:
    """Complete one range's future from the batched prefetch it belongs to."""
    if whole.cancelled():
        part.cancel()
    elif whole.exception() is not None:
        part.set_exception(whole.exception())
    else:
        part.set_result(whole.result()[index])


class _Truncated(OSError):
    """A response shorter than the range asked for (connection closed mid-body)."""


class RemoteByteSource(ByteSource):
    """One object in storage (``s3://``, ``gs://``, ``https://``) as a :class:`ByteSource`.

    Opening sends one metadata request (size and ETag).  Every request runs under
    ``storage.timeout_s`` and is retried ``storage.retries`` times with exponential backoff; 404,
    403 and an ETag change fail at once.  S3 reads send ``If-Match: <ETag>``, so an object
    re-uploaded while it is streamed fails with :class:`~wsistream.errors.RemoteObjectChangedError`
    instead of mixing two versions' bytes; other protocols check size and ETag when a process
    (re)connects (a forked DataLoader worker).

    Small reads (TIFF directories) go through an LRU of aligned ``block_bytes`` blocks;
    :meth:`read_ranges` (the tiles of a patch) coalesces ranges closer than ``coalesce_gap_bytes``
    and sends the resulting requests concurrently.  :attr:`requests` / :attr:`bytes_read` count
    every request sent and every byte received (benchmarks).
    """

    def __init__(self, url: str, storage: StorageConfig, *, etag: str | None = None, size: int | None = None) -> None:
        self.name = url
        self.storage = storage
        self.etag = etag
        self._size = size
        self._closed = False
        self._lock = threading.Lock()
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._blocks_nbytes = 0
        self.requests = 0
        self.bytes_read = 0
        #: The last error raised to a caller; tifffile logs and swallows some read errors, so the
        #: opener checks this after parsing (:meth:`raise_if_failed`).
        self.failure: RemoteStorageError | None = None
        self._prefetched: dict[tuple[int, int], Future] = {}
        self._prefetcher: ThreadPoolExecutor | None = None  # runs batches; their requests use _pool
        self._pid: int | None = None
        self._file: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._connect()

    # -- connection -----------------------------------------------------------------------------
    def _connect(self) -> None:
        """Open the object in this process: size and ETag, checked against what we knew before."""
        storage = self.storage

        def open_file() -> Any:
            fs = storage.filesystem(self.name)
            return fs.open(self.name, "rb", cache_type="none", block_size=storage.block_bytes)

        self._pid = os.getpid()
        self._pool = ThreadPoolExecutor(storage.max_concurrency, thread_name_prefix="wsistream-remote")
        (self._file,) = self._run([open_file], "open")
        details = getattr(self._file, "details", None) or {}
        size = int(details.get("size", getattr(self._file, "size", 0)) or 0)
        etag = details.get("ETag") or details.get("etag") or details.get("generation")
        etag = None if etag is None else str(etag)
        if (self._size is not None and size != self._size) or (self.etag is not None and etag != self.etag):
            raise self._fail(
                RemoteObjectChangedError(
                    self.name, f"the object changed since it was opened (size {self._size} -> {size}, ETag changed)"
                )
            )
        self._size, self.etag = size, etag

    def _ensure(self) -> None:
        if self._closed:
            raise ValueError(f"{self.name}: source is closed")
        if self._pid != os.getpid():  # a forked child: the parent's event loop and pool do not exist here
            self._file = self._pool = self._prefetcher = None
            self._prefetched = {}
            self._blocks = OrderedDict()
            self._blocks_nbytes = 0
            self._lock = threading.Lock()
            self._connect()

    def _fail(self, err: RemoteStorageError) -> RemoteStorageError:
        self.failure = err
        return err

    def raise_if_failed(self) -> None:
        """Raise the error a caller (tifffile) may have swallowed."""
        if self.failure is not None:
            raise self.failure

    # -- requests -------------------------------------------------------------------------------
    def _run(self, calls: Sequence[Callable[[], Any]], what: str) -> list[Any]:
        """Run ``calls`` concurrently, each under the timeout, retrying failures with backoff."""
        storage = self.storage
        assert self._pool is not None
        results: dict[int, Any] = {}
        pending = list(range(len(calls)))
        last: BaseException | None = None
        for attempt in range(storage.retries + 1):
            futures = {i: self._pool.submit(calls[i]) for i in pending}
            self.requests += len(futures)
            deadline = time.monotonic() + storage.timeout_s
            failed = []
            for i, future in futures.items():
                try:
                    results[i] = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FuturesTimeout:
                    future.cancel()
                    failed.append(i)
                    last = TimeoutError(f"no answer within timeout_s={storage.timeout_s} s")
                except Exception as exc:
                    err = translate_error(self.name, what, exc)
                    if _is_permanent(err):
                        raise self._fail(err) from exc
                    failed.append(i)
                    last = exc
            if not failed:
                return [results[i] for i in range(len(calls))]
            pending = failed
            if attempt < storage.retries:
                time.sleep(storage.backoff_s * 2**attempt)
        assert last is not None
        raise self._fail(
            RemoteStorageError(
                self.name,
                f"{what}: failed after {storage.retries + 1} attempts ({type(last).__name__}: {last})",
            )
        )

    def _fetch(self, spans: Sequence[tuple[int, int]], what: str) -> list[bytes]:
        """The bytes ``[start, end)`` of each span, one request each, concurrently."""
        file = self._file

        def call(start: int, end: int) -> Callable[[], bytes]:
            def fetch() -> bytes:
                data = bytes(file._fetch_range(start, end))
                if len(data) != end - start:
                    raise _Truncated(f"truncated response: {len(data)} of {end - start} bytes")
                return data

            return fetch

        data = self._run([call(s, e) for s, e in spans], what)
        self.bytes_read += sum(len(d) for d in data)
        return data

    # -- ByteSource -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Object size from the metadata request."""
        assert self._size is not None
        return self._size

    def read(self, offset: int, count: int) -> bytes:
        """Exactly ``count`` bytes at ``offset``; small reads through the block cache."""
        self._ensure()
        if offset < 0 or count < 0 or offset + count > self.size:
            raise self._fail(
                RemoteStorageError(self.name, f"read of {count} bytes at {offset} is past the end ({self.size} bytes)")
            )
        block = self.storage.block_bytes
        if count == 0:
            return b""
        if count >= block or self.storage.byte_cache_bytes == 0:
            return self._fetch([(offset, offset + count)], f"bytes {offset}-{offset + count - 1}")[0]
        first, last = offset // block, (offset + count - 1) // block
        self._load_blocks(first, last)
        with self._lock:
            joined = b"".join(self._blocks[b] for b in range(first, last + 1))
        start = offset - first * block
        return joined[start : start + count]

    def _load_blocks(self, first: int, last: int) -> None:
        block = self.storage.block_bytes
        with self._lock:
            missing = [b for b in range(first, last + 1) if b not in self._blocks]
            for b in range(first, last + 1):
                if b in self._blocks:
                    self._blocks.move_to_end(b)
        if missing:
            start, end = missing[0] * block, min(self.size, (missing[-1] + 1) * block)
            (data,) = self._fetch([(start, end)], f"bytes {start}-{end - 1}")
            with self._lock:
                for b in missing:
                    chunk = data[(b - missing[0]) * block : (b - missing[0] + 1) * block]
                    self._blocks[b] = chunk
                    self._blocks_nbytes += len(chunk)
                # the blocks of this read stay even past the capacity (one read is served whole)
                while self._blocks_nbytes > self.storage.byte_cache_bytes and len(self._blocks) > last - first + 1:
                    _, evicted = self._blocks.popitem(last=False)
                    self._blocks_nbytes -= len(evicted)

    #: Prefetched ranges kept at most (older ones are dropped unread).
    MAX_PREFETCHED = 256

    def prefetch_ranges(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Start fetching ``ranges`` in the background; a later :meth:`read_ranges` of them waits for it.

        Failures are not raised here: the read that needs the bytes fetches them again (with its
        retries) and raises there, so prefetching never changes which error a read reports.
        """
        self._ensure()
        wanted = [tuple(r) for r in ranges if tuple(r) not in self._prefetched]
        if not wanted:
            return
        while len(self._prefetched) + len(wanted) > self.MAX_PREFETCHED and self._prefetched:
            self._prefetched.pop(next(iter(self._prefetched))).cancel()
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(2, thread_name_prefix="wsistream-prefetch")
        future = self._prefetcher.submit(self._read_ranges_now, wanted)
        for i, r in enumerate(wanted):
            part: Future = Future()
            future.add_done_callback(functools.partial(_resolve_part, part, i))
            self._prefetched[r] = part

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Each ``(offset, count)``; ranges closer than ``coalesce_gap_bytes`` share one request."""
        self._ensure()
        if not ranges:
            return []
        out: dict[int, bytes] = {}
        for i, r in enumerate(ranges):
            part = self._prefetched.pop(tuple(r), None)
            if part is not None:
                with contextlib.suppress(Exception):  # else fetched again below, where a failure is raised
                    out[i] = part.result(timeout=self.storage.timeout_s * (self.storage.retries + 1))
        rest = [i for i in range(len(ranges)) if i not in out]
        if rest:
            for i, data in zip(rest, self._read_ranges_now([ranges[i] for i in rest]), strict=True):
                out[i] = data
        return [out[i] for i in range(len(ranges))]

    def _read_ranges_now(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        groups: list[list[int]] = []
        for i in order:
            offset, _ = ranges[i]
            if groups:
                prev_end = max(ranges[j][0] + ranges[j][1] for j in groups[-1])
                if offset - prev_end <= self.storage.coalesce_gap_bytes:
                    groups[-1].append(i)
                    continue
            groups.append([i])
        spans = [(ranges[g[0]][0], max(ranges[j][0] + ranges[j][1] for j in g)) for g in groups]
        for start, end in spans:
            if end > self.size:
                raise self._fail(RemoteStorageError(self.name, f"range {start}-{end - 1} is past the end"))
        data = self._fetch(spans, f"{len(ranges)} tile ranges in {len(spans)} requests")
        out: list[bytes] = [b""] * len(ranges)
        for group, (start, _), chunk in zip(groups, spans, data, strict=True):
            for i in group:
                offset, count = ranges[i]
                out[i] = chunk[offset - start : offset - start + count]
        return out

    def close(self) -> None:
        """Stop the request threads of this process and drop the blocks; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pid == os.getpid():
            for pool in (self._prefetcher, self._pool):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._prefetcher = self._file = None
        self._prefetched = {}
        self._blocks.clear()

    def __getstate__(self) -> dict:
        state = {**self.__dict__, "_file": None, "_pool": None, "_pid": None, "_lock": None}
        state.update(_prefetched={}, _prefetcher=None)
        state.update(_blocks=OrderedDict(), _blocks_nbytes=0, requests=0, bytes_read=0, failure=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteByteSource({self.name!r}, size={self._size}, etag={self.etag!r})"
