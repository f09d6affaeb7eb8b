"""Open a slide in object storage: TiffSlide over ranged reads, the direct JPEG path when it applies."""

from __future__ import annotations

from typing import Any

import numpy as np

from wsistream.backends._jpeg_tiles import JpegTileReader, shared_tile_cache
from wsistream.backends.base import SlideHandle, properties_from
from wsistream.errors import SlideOpenError
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
    :class:`~wsistream.errors.RemoteStorageError` subclasses naming the URL.
    """
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
