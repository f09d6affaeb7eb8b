"""Ranged reads of one object in storage: bounded retries, timeouts, coalescing, a block cache."""

from __future__ import annotations

import contextlib
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
from wsistream.storage.faults import translate_error, underlying


def _is_permanent(err: RemoteStorageError) -> bool:
    return isinstance(err, (RemoteNotFoundError, RemoteAccessDeniedError, RemoteObjectChangedError))


def _key(r: Sequence[int]) -> tuple[int, int]:
    return int(r[0]), int(r[1])


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
        self._tiles: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # stored tile bytes by (offset, count)
        self._tiles_nbytes = 0
        self.requests = 0
        self.bytes_read = 0
        #: The last error raised to a caller; tifffile logs and swallows some read errors, so the
        #: opener checks this after parsing (:meth:`raise_if_failed`).
        self.failure: RemoteStorageError | None = None
        #: range -> the batched prefetch fetching it (its result maps each range it fetched to its bytes)
        self._prefetched: dict[tuple[int, int], Future[dict[tuple[int, int], bytes]]] = {}
        self._prefetcher: ThreadPoolExecutor | None = None  # runs batches; their requests use _pool
        self._pid: int | None = None
        self._file: Any = None
        #: ``(start, end) -> bytes``, one request: the fsspec file's, or a presigned-URL reader's (S3)
        self._get_range: Callable[[int, int], bytes] | None = None
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
        self._get_range = self._file._fetch_range
        if storage.s3_reads == "presigned" and self.name.lower().startswith("s3://"):
            from wsistream.storage.presigned import PresignedRangeReader

            try:  # signing is local: no request, no timeout needed
                reader = PresignedRangeReader(
                    self.name,
                    storage.filesystem(self.name),
                    etag=etag,
                    timeout_s=storage.timeout_s,
                    max_concurrency=storage.max_concurrency,
                )
            except Exception as exc:
                raise self._fail(translate_error(self.name, "presign", exc)) from exc
            self._get_range = reader.read

    def _ensure(self) -> None:
        if self._closed:
            raise ValueError(f"{self.name}: source is closed")
        if self._pid != os.getpid():  # a forked child: the parent's event loop and pool do not exist here
            self._file = self._pool = self._prefetcher = self._get_range = None
            self._prefetched = {}
            self._blocks, self._tiles = OrderedDict(), OrderedDict()
            self._blocks_nbytes = self._tiles_nbytes = 0
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
                    last = underlying(exc)
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
        get_range = self._get_range
        assert get_range is not None

        def call(start: int, end: int) -> Callable[[], bytes]:
            def fetch() -> bytes:
                data = bytes(get_range(start, end))
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

    @property
    def readahead_tiles(self) -> int:
        """Tiles each side of a fetched row the tile reader offers as ``spare`` (``storage.readahead_tiles``)."""
        return self.storage.readahead_tiles

    def prefetch_ranges(self, ranges: Sequence[tuple[int, int]], spare: Sequence[tuple[int, int]] = ()) -> None:
        """Start fetching ``ranges`` (and adjacent ``spare``) in the background; a later read waits for it.

        Failures are not raised here: the read that needs the bytes fetches them again (with its
        retries) and raises there, so prefetching never changes which error a read reports.
        """
        self._ensure()
        self._prefetched = {r: f for r, f in self._prefetched.items() if not f.done()}  # done: in the tile cache
        wanted = [r for r in map(_key, ranges) if r not in self._prefetched and self._cached_tile(r) is None]
        if not wanted:
            return
        taken = set(wanted)
        extra = [r for r in map(_key, spare) if r not in taken and r not in self._prefetched]
        while len(self._prefetched) + len(wanted) + len(extra) > self.MAX_PREFETCHED and self._prefetched:
            del self._prefetched[next(iter(self._prefetched))]  # dropped unread; its batch may serve others
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(2, thread_name_prefix="wsistream-prefetch")
        batch = self._prefetcher.submit(self._fetch_tiles, wanted, extra)  # -> {range: bytes} of what it fetched
        for r in wanted + extra:  # one shared future per batch: no per-range Future (a Condition each)
            self._prefetched[r] = batch

    def read_ranges(self, ranges: Sequence[tuple[int, int]], spare: Sequence[tuple[int, int]] = ()) -> list[bytes]:
        """Each ``(offset, count)``; ranges closer than ``coalesce_gap_bytes`` share one request.

        ``spare`` ranges (tiles next to the wanted ones) are fetched only where they extend a
        request for wanted ranges, and kept in the stored-tile cache for later reads.
        """
        self._ensure()
        out: dict[tuple[int, int], bytes] = {}
        for r in map(_key, ranges):
            data = self._cached_tile(r)
            batch = self._prefetched.pop(r, None) if data is None else None
            if batch is not None:
                with contextlib.suppress(Exception):  # else fetched again below, where a failure is raised
                    data = batch.result(timeout=self.storage.timeout_s * (self.storage.retries + 1)).get(r)
            if data is not None:
                out[r] = data
        rest = [r for r in map(_key, ranges) if r not in out]
        if rest:
            taken = set(rest)
            extra = [r for r in map(_key, spare) if r not in taken and r not in self._prefetched]
            out.update(self._fetch_tiles(rest, extra))
        return [out[_key(r)] for r in ranges]

    def _cached_tile(self, r: tuple[int, int]) -> bytes | None:
        with self._lock:
            data = self._tiles.get(r)
            if data is not None:
                self._tiles.move_to_end(r)
            return data

    def _fetch_tiles(
        self, wanted: Sequence[tuple[int, int]], spare: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """Fetch ``wanted`` (coalesced) plus the ``spare`` ranges that chain onto them.

        Candidates sorted by offset are grouped where the gap is at most ``coalesce_gap_bytes``; a
        group with no wanted range is not fetched, and its ends are trimmed of spare ranges already
        cached (inside a group they are read again: bridging them costs bytes, not a request).
        Every range fetched enters the tile cache.
        """
        if not wanted:
            return {}
        want = set(wanted)
        groups: list[list[tuple[int, int]]] = []
        group_end = -1
        for r in sorted(want.union(spare)):
            if groups and r[0] - group_end <= self.storage.coalesce_gap_bytes:
                groups[-1].append(r)
                group_end = max(group_end, r[0] + r[1])
            else:
                groups.append([r])
                group_end = r[0] + r[1]
        kept = []
        for g in groups:
            needed = [i for i, r in enumerate(g) if r in want or self._cached_tile(r) is None]
            if any(r in want for r in g):
                kept.append(g[needed[0] : needed[-1] + 1])
        groups = kept
        spans = [(g[0][0], max(o + n for o, n in g)) for g in groups]
        for start, end in spans:
            if end > self.size:
                raise self._fail(RemoteStorageError(self.name, f"range {start}-{end - 1} is past the end"))
        data = self._fetch(spans, f"{len(want)} tile ranges in {len(spans)} requests")
        out = {}
        for group, (start, _), chunk in zip(groups, spans, data, strict=True):
            for offset, count in group:
                out[(offset, count)] = chunk[offset - start : offset - start + count]
        self._store_tiles(out)
        return out

    def _store_tiles(self, tiles: dict[tuple[int, int], bytes]) -> None:
        capacity = self.storage.tile_bytes_cache_bytes
        with self._lock:
            for r, data in tiles.items():
                if r not in self._tiles and len(data) <= capacity:
                    self._tiles[r] = data
                    self._tiles_nbytes += len(data)
            while self._tiles_nbytes > capacity:
                _, evicted = self._tiles.popitem(last=False)
                self._tiles_nbytes -= len(evicted)

    def close(self) -> None:
        """Stop the request threads of this process and drop the blocks; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pid == os.getpid():
            for pool in (self._prefetcher, self._pool):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._prefetcher = self._file = self._get_range = None
        self._prefetched = {}
        self._blocks.clear()
        self._tiles.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_file": None, "_get_range": None, "_pool": None, "_pid": None, "_lock": None}
        state.update(_prefetched={}, _prefetcher=None)
        state.update(_blocks=OrderedDict(), _blocks_nbytes=0, _tiles=OrderedDict(), _tiles_nbytes=0)
        state.update(requests=0, bytes_read=0, failure=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteByteSource({self.name!r}, size={self._size}, etag={self.etag!r})"
