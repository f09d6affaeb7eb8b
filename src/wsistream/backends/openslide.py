"""OpenSlide backend (``openslide-python`` + the ``openslide-bin`` wheel)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wsistream.backends._dicom import library_path
from wsistream.backends._jpeg_tiles import shared_tile_cache
from wsistream.backends.base import SlideBackend, SlideHandle, properties_from

# One tile cache per process, shared by every handle this backend opens, so
# memory stays bounded however many slides a worker cycles through
# (OpenSlide's default is a separate 32 MiB cache per handle).
_CACHES: dict[int, Any] = {}


def _shared_cache(capacity_bytes: int) -> Any:
    import openslide

    cache = _CACHES.get(capacity_bytes)
    if cache is None:
        cache = _CACHES[capacity_bytes] = openslide.OpenSlideCache(capacity_bytes)
    return cache


class _OpenSlideHandle(SlideHandle):
    def __init__(self, slide_path: str, osr: Any, cache_bytes: int) -> None:
        properties, raw_mpp = properties_from(
            slide_path, osr.properties, "openslide", osr.level_dimensions, osr.level_downsamples, "openslide"
        )
        super().__init__(slide_path, properties, raw_mpp)
        if cache_bytes > 0:
            osr.set_cache(_shared_cache(cache_bytes))
        self._osr = osr
        self._cache_bytes = cache_bytes

    def _read_level_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        try:
            return np.asarray(self._osr.read_region((x0, y0), level, (width, height)))
        except Exception:
            # An OpenSlide handle stays in its error state after one failed read
            # (every later read fails too); reopen it so one corrupt tile costs one
            # region, not the rest of the slide.
            self._reopen()
            raise

    def _reopen(self) -> None:
        """Swap in a fresh handle; if the file cannot be reopened (deleted...), keep the old one."""
        import openslide

        try:
            fresh = openslide.OpenSlide(library_path(self.slide_path))
        except Exception:
            return  # the original read error stands
        if self._cache_bytes > 0:
            fresh.set_cache(_shared_cache(self._cache_bytes))
        old, self._osr = self._osr, fresh
        old.close()

    def _close_library(self) -> None:
        osr, self._osr = self._osr, None
        if osr is not None:
            osr.close()


@dataclass(frozen=True)
class OpenSlideBackend(SlideBackend):
    """Read slides with OpenSlide (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, ...).

    Parameters
    ----------
    cache_bytes : int
        Capacity of the per-process OpenSlide tile cache shared by all handles
        (openslide-python's ``OpenSlideCache``).  0 keeps OpenSlide's own
        per-handle default.  Default 64 MiB.  The fast path keeps its decoded tiles in a
        per-process cache of the same size (0: a private 64 MiB cache per slide).
    fast_tiles : bool
        Decode the JPEG tiles of Aperio SVS and generic tiled JPEG TIFF directly
        (tifffile offsets + libjpeg-turbo, :mod:`wsistream.backends._jpeg_tiles`) instead of
        through ``read_region``: OpenSlide's pixels at level 0 and wherever the level origin is a
        whole level pixel, several times faster.  Files it does not decode exactly (JPEG 2000,
        NDPI, MIRAX, LZW, missing tiles, ...) are read by OpenSlide as before.  Default True.
    """

    name: ClassVar[str] = "openslide"
    requires: ClassVar[str] = "openslide"
    install: ClassVar[str] = "pip install openslide-python openslide-bin"
    reads_dicom: ClassVar[bool] = True  # OpenSlide >= 4.0
    cache_bytes: int = 64 * 1024 * 1024
    fast_tiles: bool = True

    def __post_init__(self) -> None:
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {self.cache_bytes}")

    def _open(self, slide_path: str) -> SlideHandle:
        import openslide

        osr = openslide.OpenSlide(library_path(slide_path))
        try:
            handle = _OpenSlideHandle(slide_path, osr, self.cache_bytes)
        except BaseException:
            osr.close()
            raise
        if self.fast_tiles and not os.path.isdir(slide_path):  # DICOM folders: OpenSlide decodes
            handle.enable_fast_tiles(shared_tile_cache(self.cache_bytes) if self.cache_bytes > 0 else None)
        return handle
