"""TiffSlide backend (pure Python: tifffile + imagecodecs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wsistream.backends._jpeg_tiles import JpegTileReader, shared_tile_cache
from wsistream.backends.base import SlideBackend, SlideHandle, plausible_mpp
from wsistream.types import SlideProperties


class _TiffSlideHandle(SlideHandle):
    def __init__(self, slide_path: str, ts: Any) -> None:
        props = ts.properties
        raw_mpp = props.get("tiffslide.mpp-x")
        mpp = plausible_mpp(raw_mpp)
        mpp_y = plausible_mpp(props.get("tiffslide.mpp-y"))
        if mpp is not None and mpp_y is not None and abs(mpp - mpp_y) / mpp > 0.02:
            mpp = None
        objective = props.get("tiffslide.objective-power")
        properties = SlideProperties(
            slide_path=slide_path,
            level_dimensions=tuple((int(w), int(h)) for w, h in ts.level_dimensions),
            level_downsamples=tuple(float(d) for d in ts.level_downsamples),
            mpp=mpp,
            mpp_source="slide" if mpp is not None else "none",
            objective_power=float(objective) if objective not in (None, "") else None,
            vendor=str(props.get("tiffslide.vendor") or "unknown"),
            backend="tiffslide",
        )
        super().__init__(slide_path, properties, raw_mpp)
        self._ts = ts
        #: Direct JPEG tile decoder (Aperio / generic tiled JPEG TIFF), or None: TiffSlide reads.
        self._fast: JpegTileReader | None = None

    def _read_level_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        fast = self._fast
        if fast is not None:
            lx, ly = fast.level_origin(level, x0, y0, width, height)
            return fast.read(level, lx, ly, width, height)
        return np.asarray(self._ts.read_region((x0, y0), level, (width, height), as_array=True))

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        self._ts.close()


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
            props = handle.properties
            handle._fast = JpegTileReader.try_open(
                slide_path, props.level_dimensions, props.level_downsamples, cache=shared_tile_cache()
            )
        return handle
