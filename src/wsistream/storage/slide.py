"""Open a slide in object storage: TiffSlide over ranged reads, the direct JPEG path when it applies."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from wsistream.backends._jpeg_tiles import JpegTileReader, shared_tile_cache
from wsistream.backends.base import SlideHandle, properties_from
from wsistream.errors import SlideOpenError, WsiStreamError
from wsistream.storage.config import StorageConfig
from wsistream.storage.dircache import DirectoryEntry, load_entry, save_entry
from wsistream.storage.source import RemoteByteSource
from wsistream.types import SlideProperties


class RemoteSlideHandle(SlideHandle):
    """A slide read through a :class:`RemoteByteSource`.

    Served by the direct JPEG tile reader when the file is an Aperio SVS / plain tiled JPEG TIFF
    (pixels identical to the local file's); otherwise by TiffSlide over the same source.  A handle
    opened from the directory cache has no TiffSlide object until a read needs one.
    """

    def __init__(
        self, url: str, properties: SlideProperties, raw_mpp: object, source: RemoteByteSource, ts: Any = None
    ) -> None:
        super().__init__(url, properties, raw_mpp)
        self.source = source
        self._ts = ts

    def _read_level_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        if self._ts is None:
            import tiffslide

            self._ts = tiffslide.TiffSlide(self.source.file())
        region = np.asarray(self._ts.read_region((x0, y0), level, (width, height), as_array=True))
        self.source.raise_if_failed()
        return region

    def _close_library(self) -> None:
        ts, self._ts = self._ts, None
        if ts is not None:
            ts.close()
        self.source.close()


def open_remote(url: str, storage: StorageConfig, *, fast_tiles: bool, probe: Any) -> SlideHandle:
    """Open ``url``: one metadata request, then the cached directories or an IFD walk.

    ``probe(ts)`` is the TiffSlide backend's open-time decodability check, applied when TiffSlide
    (not the fast path) will read the pixels.  Storage failures raise
    :class:`~wsistream.errors.RemoteStorageError` subclasses naming the URL.  A slide that
    :func:`preopen` started opening is taken from there (its error, if any, is raised here).
    """
    handle = _ahead.take(url, storage, fast_tiles)
    return handle if handle is not None else _open_now(url, storage, fast_tiles=fast_tiles, probe=probe)


def preopen(
    urls: Sequence[str], storage: StorageConfig, *, fast_tiles: bool, probe: Any, overview_side: int | None
) -> None:
    """Start opening ``urls`` in background threads; :func:`open_remote` of one of them takes it.

    A pool of slides opened one after the other costs the sum of their round trips (metadata, IFD
    walk, overview); opened ahead they overlap.  With ``overview_side`` the tiles of the level
    :meth:`~wsistream.backends.base.SlideHandle.read_overview` will read are fetched too (one
    coalesced request into the stored-tile cache), so the tissue mask needs no round trip.
    """
    _ahead.start(urls, storage, fast_tiles=fast_tiles, probe=probe, overview_side=overview_side)


def _open_ahead(
    url: str, storage: StorageConfig, fast_tiles: bool, probe: Any, overview_side: int | None
) -> SlideHandle:
    handle = _open_now(url, storage, fast_tiles=fast_tiles, probe=probe)
    fast = handle._fast
    if overview_side is not None and fast is not None and isinstance(handle, RemoteSlideHandle):
        lv = fast.levels[handle.overview_level(overview_side)]
        if int(lv.bytecounts.sum()) <= storage.tile_bytes_cache_bytes // 2:
            ranges = [(int(o), int(n)) for o, n in zip(lv.offsets, lv.bytecounts, strict=True)]
            try:
                handle.source.read_ranges(ranges)
            except WsiStreamError:  # the overview read itself fetches again and reports
                handle.source.failure = None
    return handle


class _SlidesAhead:
    """Slides being opened in background threads, by (URL, fast_tiles); bounded, per process."""

    CAPACITY = 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._futures: OrderedDict[tuple[str, bool], tuple[StorageConfig, Future[SlideHandle]]] = OrderedDict()

    def _here(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid() or self._pool is None:  # a forked child: the parent's threads are not here
            self._pid, self._futures = os.getpid(), OrderedDict()
            self._pool = ThreadPoolExecutor(8, thread_name_prefix="wsistream-open")
        return self._pool

    def start(
        self, urls: Sequence[str], storage: StorageConfig, *, fast_tiles: bool, probe: Any, overview_side: int | None
    ) -> None:
        with self._lock:
            pool = self._here()
            for url in urls:
                if (url, fast_tiles) not in self._futures:
                    future = pool.submit(_open_ahead, url, storage, fast_tiles, probe, overview_side)
                    self._futures[(url, fast_tiles)] = (storage, future)
            while len(self._futures) > self.CAPACITY:  # never taken: closed once open
                _, (_, stale) = self._futures.popitem(last=False)
                stale.add_done_callback(_close_opened)

    def take(self, url: str, storage: StorageConfig, fast_tiles: bool) -> SlideHandle | None:
        with self._lock:
            self._here()
            entry = self._futures.pop((url, fast_tiles), None)
        if entry is None:
            return None
        opened_with, future = entry
        if opened_with != storage:
            future.add_done_callback(_close_opened)
            return None
        handle: SlideHandle = future.result()  # every request inside is bounded by timeout_s and retries
        return handle


def _close_opened(future: Future[SlideHandle]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


_ahead = _SlidesAhead()


def _open_now(url: str, storage: StorageConfig, *, fast_tiles: bool, probe: Any) -> SlideHandle:
    source = RemoteByteSource(url, storage)
    try:
        if source.size == 0:
            raise SlideOpenError(url, "object is empty (0 bytes)")
        cache_dir = storage.resolved_cache_dir
        entry = load_entry(cache_dir, url, source.etag, source.size) if fast_tiles else None
        if entry is not None:
            handle = RemoteSlideHandle(url, entry.properties, entry.raw_mpp, source)
            handle._fast = JpegTileReader(
                url, entry.levels, entry.properties.level_downsamples, cache=shared_tile_cache(), source=source
            )
            return handle
        return _open_walking(url, source, cache_dir, fast_tiles=fast_tiles, probe=probe)
    except BaseException:
        source.close()
        raise


def _open_walking(url: str, source: RemoteByteSource, cache_dir: str, *, fast_tiles: bool, probe: Any) -> SlideHandle:
    import tiffslide

    ts = tiffslide.TiffSlide(source.file())
    try:
        source.raise_if_failed()
        properties, raw_mpp = properties_from(
            url, ts.properties, "tiffslide", ts.level_dimensions, ts.level_downsamples, "tiffslide"
        )
        reader = None
        if fast_tiles:
            reader = JpegTileReader.try_open(
                url, properties.level_dimensions, properties.level_downsamples, cache=shared_tile_cache(), source=source
            )
            source.raise_if_failed()
        if reader is None:
            probe(ts)
            source.raise_if_failed()
        handle = RemoteSlideHandle(url, properties, raw_mpp, source, None if reader is not None else ts)
    except BaseException:
        ts.close()
        raise
    if reader is not None:  # the fast path reads every pixel: TiffSlide's parsed pages are not needed
        ts.close()
        handle._fast = reader
        entry = DirectoryEntry(url, source.etag, source.size, properties, raw_mpp, reader.levels)
        save_entry(cache_dir, entry)
    return handle
