"""OpenSlide backend (``openslide-python`` + the ``openslide-bin`` wheel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from wsistream.backends.base import SlideBackend, SlideHandle, plausible_mpp
from wsistream.types import SlideProperties

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
        import openslide

        props = osr.properties
        raw_mpp = props.get(openslide.PROPERTY_NAME_MPP_X)
        mpp = plausible_mpp(raw_mpp)
        mpp_y = plausible_mpp(props.get(openslide.PROPERTY_NAME_MPP_Y))
        if mpp is not None and mpp_y is not None and abs(mpp - mpp_y) / mpp > 0.02:
            mpp = None  # anisotropic pixels: no single µm/px describes the slide
        objective = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        properties = SlideProperties(
            slide_path=slide_path,
            level_dimensions=tuple((int(w), int(h)) for w, h in osr.level_dimensions),
            level_downsamples=tuple(float(d) for d in osr.level_downsamples),
            mpp=mpp,
            mpp_source="slide" if mpp is not None else "none",
            objective_power=float(objective) if objective not in (None, "") else None,
            vendor=str(props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"),
            backend="openslide",
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
        import openslide

        self._osr.close()
        self._osr = openslide.OpenSlide(self.slide_path)
        if self._cache_bytes > 0:
            self._osr.set_cache(_shared_cache(self._cache_bytes))

    def close(self) -> None:
        self._osr.close()


@dataclass(frozen=True)
class OpenSlideBackend(SlideBackend):
    """Read slides with OpenSlide (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, ...).

    Parameters
    ----------
    cache_bytes : int
        Capacity of the per-process OpenSlide tile cache shared by all handles
        (openslide-python's ``OpenSlideCache``).  0 keeps OpenSlide's own
        per-handle default.  Default 64 MiB.
    """

    name: ClassVar[str] = "openslide"
    requires: ClassVar[str] = "openslide"
    cache_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {self.cache_bytes}")

    def _open(self, slide_path: str) -> SlideHandle:
        import openslide

        return _OpenSlideHandle(slide_path, openslide.OpenSlide(slide_path), self.cache_bytes)
