"""TiffSlide backend (pure Python: tifffile + imagecodecs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wsistream.backends._jpeg_tiles import shared_tile_cache
from wsistream.backends.base import SlideBackend, SlideHandle, properties_from


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
    """

    name: ClassVar[str] = "tiffslide"
    requires: ClassVar[str] = "tiffslide"
    fast_tiles: bool = True

    def _open(self, slide_path: str) -> SlideHandle:
        import tiffslide

        ts = tiffslide.TiffSlide(slide_path)
        # TiffSlide opens files whose compression it cannot decode at all (OpenSlide
        # refuses them at open).  Probe the smallest level: a format-level refusal
        # (unknown compression -> ValueError/NotImplementedError) is an open error,
        # as with OpenSlide; a codec error in the tile data (RuntimeError subclasses
        # such as imagecodecs.Jpeg8Error) is left to surface as a TileDecodeError
        # on the region that holds it.
        try:
            level = ts.level_count - 1
            w, h = ts.level_dimensions[level]
            ts.read_region((0, 0), level, (min(w, 16), min(h, 16)), as_array=True)
        except (ValueError, NotImplementedError, KeyError):
            ts.close()
            raise
        except RuntimeError:
            pass
        try:
            handle = _TiffSlideHandle(slide_path, ts)
        except BaseException:
            ts.close()
            raise
        if self.fast_tiles:
            handle.enable_fast_tiles(shared_tile_cache())
        return handle
