"""TiffSlide backend (pure Python: tifffile + imagecodecs)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from wsistream.backends._jpeg_tiles import shared_tile_cache
from wsistream.backends.base import SlideBackend, SlideHandle, properties_from
from wsistream.storage.urls import is_url

if TYPE_CHECKING:
    from wsistream.storage.config import StorageConfig


class _TiffSlideHandle(SlideHandle):
    def __init__(self, slide_path: str, ts: Any) -> None:
        properties, raw_mpp = properties_from(
            slide_path, ts.properties, "tiffslide", ts.level_dimensions, ts.level_downsamples, "tiffslide"
        )
        super().__init__(slide_path, properties, raw_mpp)
        self._ts = ts

    def _read_level_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        return np.asarray(self._ts.read_region((x0, y0), level, (width, height), as_array=True))

    def _close_library(self) -> None:
        ts, self._ts = self._ts, None
        if ts is not None:
            ts.close()


@dataclass(frozen=True)
class TiffSlideBackend(SlideBackend):
    """Read slides with TiffSlide (SVS, NDPI and generic TIFF without a C library).

    Parameters
    ----------
    fast_tiles : bool
        Decode the JPEG tiles of Aperio SVS and generic tiled JPEG TIFF directly
        (:mod:`wsistream.backends._jpeg_tiles`, pixels identical to OpenSlide's) through a
        per-process 64 MiB decoded-tile cache; other files are read by TiffSlide.  Default True.
        Over a URL the same decoder reads the tiles with coalesced ranged requests.
    storage : StorageConfig, optional
        How ``s3://``, ``gs://`` and ``https://`` slides are reached (fsspec options, timeouts,
        retries, caches); ``None``: defaults, credentials from the environment (``docs/storage.md``).
    """

    name: ClassVar[str] = "tiffslide"
    requires: ClassVar[str] = "tiffslide"
    install: ClassVar[str] = "pip install tiffslide"
    reads_urls: ClassVar[bool] = True
    fast_tiles: bool = True
    storage: StorageConfig | None = None

    def preopen(self, slide_paths: Sequence[str], *, overview_side: int | None = None) -> None:
        """Start opening the URLs among ``slide_paths`` in background threads (``docs/storage.md``)."""
        urls = [p for p in slide_paths if is_url(p)]
        if urls:
            from wsistream.storage.config import StorageConfig
            from wsistream.storage.slide import preopen

            storage = self.storage if self.storage is not None else StorageConfig()
            preopen(urls, storage, fast_tiles=self.fast_tiles, probe=_probe_smallest_level, overview_side=overview_side)

    def _open(self, slide_path: str) -> SlideHandle:
        import tiffslide

        if is_url(slide_path):
            from wsistream.storage.config import StorageConfig
            from wsistream.storage.slide import open_remote

            storage = self.storage if self.storage is not None else StorageConfig()
            return open_remote(slide_path, storage, fast_tiles=self.fast_tiles, probe=_probe_smallest_level)
        ts = tiffslide.TiffSlide(slide_path)
        try:
            _probe_smallest_level(ts)
        except BaseException:
            ts.close()
            raise
        try:
            handle = _TiffSlideHandle(slide_path, ts)
        except BaseException:
            ts.close()
            raise
        if self.fast_tiles:
            handle.enable_fast_tiles(shared_tile_cache())
        return handle


def _probe_smallest_level(ts: Any) -> None:
    """Raise if TiffSlide cannot decode this file's compression at all.

    TiffSlide opens files whose compression it cannot decode at all (OpenSlide refuses them at
    open).  Probe the smallest level: a format-level refusal (unknown compression ->
    ValueError/NotImplementedError) is an open error, as with OpenSlide; a codec error in the tile
    data (RuntimeError subclasses such as imagecodecs.Jpeg8Error) is left to surface as a
    TileDecodeError on the region that holds it.
    """
    level = ts.level_count - 1
    w, h = ts.level_dimensions[level]
    with contextlib.suppress(RuntimeError):
        ts.read_region((0, 0), level, (min(w, 16), min(h, 16)), as_array=True)
