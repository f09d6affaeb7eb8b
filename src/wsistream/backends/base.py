"""The slide interface every backend implements (template method).

:class:`SlideBackend` is a small, picklable *factory* (it is what a user
passes to ``PatchPipeline(backend=...)`` and what travels to DataLoader
workers); :meth:`SlideBackend.open` returns a :class:`SlideHandle`, one per
opened file.  Subclasses implement ``_open`` / ``_read_level_region`` and the
metadata; the base class owns everything that must be identical across
backends: existence checks, bounds clipping (outside the slide is white),
alpha handling (transparent is white, never black), contiguous ``uint8``
H×W×3 output, chunked overview reads, and errors that name the slide.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import cv2
import numpy as np

from wsistream.backends._dicom import dicom_member
from wsistream.backends._jpeg_tiles import JpegTileReader, TileCache
from wsistream.backends._ome import ome_mpp
from wsistream.errors import SlideNotFoundError, SlideOpenError, TileDecodeError, WsiStreamError
from wsistream.registry import MissingDependencyError
from wsistream.storage.urls import is_url
from wsistream.types import SlideProperties

#: Plausible level-0 µm/px for a brightfield/fluorescence WSI scan.  Values
#: outside (e.g. 352.8 µm/px, the 72-dpi default a generic TIFF writer stores)
#: are treated as missing, never used.
PLAUSIBLE_MPP_RANGE = (0.05, 20.0)

#: A pyramid level down to this fraction of the asked overview size is used
#: rather than the next finer level (see :meth:`SlideHandle.overview_level`).
OVERVIEW_MIN_FRACTION = 0.45

#: Longest side (read-level pixels) of one chunk of an overview read; bounds
#: the memory of overviews taken from a large level.
_OVERVIEW_CHUNK = 4096


def plausible_mpp(value: object) -> float | None:
    """``float(value)`` if it is a finite µm/px inside :data:`PLAUSIBLE_MPP_RANGE`, else ``None``."""
    try:
        mpp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(mpp) or not (PLAUSIBLE_MPP_RANGE[0] <= mpp <= PLAUSIBLE_MPP_RANGE[1]):
        return None
    return mpp


def properties_from(
    slide_path: str,
    props: Mapping[str, str],
    prefix: str,
    level_dimensions: Sequence[tuple[int, int]],
    level_downsamples: Sequence[float],
    backend: str,
) -> tuple[SlideProperties, object]:
    """:class:`SlideProperties` from a library's property map (``{prefix}.mpp-x``, ``.vendor``...).

    Returns the properties and the raw µm/px string.  µm/px is kept only when
    plausible in x and isotropic within 2 % (anisotropic pixels have no single µm/px).
    """
    raw_mpp: object = props.get(f"{prefix}.mpp-x")
    raw_mpp_y: object = props.get(f"{prefix}.mpp-y")
    if raw_mpp is None and (ome := ome_mpp(slide_path)) is not None:  # OME-TIFF: PhysicalSizeX/Y (+ unit)
        raw_mpp, raw_mpp_y = ome
    mpp = plausible_mpp(raw_mpp)
    mpp_y = plausible_mpp(raw_mpp_y)
    if mpp is not None and mpp_y is not None and abs(mpp - mpp_y) / mpp > 0.02:
        mpp = None
    objective = props.get(f"{prefix}.objective-power")
    properties = SlideProperties(
        slide_path=slide_path,
        level_dimensions=tuple((int(w), int(h)) for w, h in level_dimensions),
        level_downsamples=tuple(float(d) for d in level_downsamples),
        mpp_level0=mpp,
        mpp_source="slide" if mpp is not None else "none",
        objective_power=plausible_objective(objective),
        vendor=str(props.get(f"{prefix}.vendor") or "unknown"),
        backend=backend,
    )
    return properties, raw_mpp


def plausible_objective(value: object) -> float | None:
    """Objective power as a positive float, or ``None``."""
    try:
        power = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return power if math.isfinite(power) and power > 0 else None


def _to_rgb(region: np.ndarray) -> np.ndarray:
    """Contiguous uint8 H×W×3; RGBA pixels with alpha 0 become white."""
    if region.ndim == 2:
        region = np.repeat(region[:, :, None], 3, axis=2)
    if region.shape[2] == 4:
        rgb = np.ascontiguousarray(region[:, :, :3])
        transparent = region[:, :, 3] == 0
        if transparent.any():
            rgb[transparent] = 255
        return rgb
    return np.ascontiguousarray(region[:, :, :3], dtype=np.uint8)


class SlideHandle(ABC):
    """An opened slide file.  Use as a context manager or call :meth:`close`."""

    def __init__(self, slide_path: str, properties: SlideProperties, raw_mpp: object) -> None:
        self.slide_path = slide_path
        #: Properties as read from the file; ``mpp`` is ``None`` when absent or implausible.
        self.properties = properties
        #: The µm/px value exactly as the file states it (for error messages).
        self.raw_mpp = raw_mpp
        #: Direct JPEG tile decoder (Aperio / generic tiled JPEG TIFF), or None: the library reads.
        self._fast: JpegTileReader | None = None

    def enable_fast_tiles(self, cache: TileCache | None) -> None:
        """Serve reads from the direct JPEG tile decoder when it supports this file exactly."""
        props = self.properties
        self._fast = JpegTileReader.try_open(
            self.slide_path, props.level_dimensions, props.level_downsamples, cache=cache
        )

    @property
    def prefetches(self) -> bool:
        """Whether :meth:`prefetch_region` does anything (direct JPEG path over a remote source)."""
        return self._fast is not None and self._fast.can_prefetch

    def prefetch_region(self, x0: int, y0: int, level: int, size: tuple[int, int]) -> None:
        """Start fetching the tiles of a later ``read_region(x0, y0, level, size)``; never raises for data.

        Network latency then overlaps the decoding of other patches (the stream calls it for each
        slot's next position); a failed prefetch is fetched again, and reported, by the read.
        """
        fast = self._fast
        if fast is not None:
            lx, ly = fast.level_origin(level, x0, y0, int(size[0]), int(size[1]))
            fast.prefetch(level, lx, ly, int(size[0]), int(size[1]))

    @property
    def uses_fast_tiles(self) -> bool:
        """Whether reads bypass the library (see :mod:`wsistream.backends._jpeg_tiles`)."""
        return self._fast is not None

    def _read(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        fast = self._fast
        if fast is not None:  # a corrupt tile raises JpegTileError (-> TileDecodeError); nothing sticky
            lx, ly = fast.level_origin(level, x0, y0, width, height)
            return fast.read(level, lx, ly, width, height)
        return self._read_level_region(x0, y0, level, width, height)

    def close(self) -> None:
        """Release the file (idempotent)."""
        fast, self._fast = self._fast, None
        if fast is not None:
            fast.close()
        self._close_library()

    # -- implemented by backends ------------------------------------------------
    @abstractmethod
    def _read_level_region(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        """Read an in-bounds region; returns H×W×3 or H×W×4 uint8."""

    @abstractmethod
    def _close_library(self) -> None:
        """Release the library handle (must tolerate being called twice)."""

    # -- shared behaviour --------------------------------------------------------
    def __enter__(self) -> SlideHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_region(self, x0: int, y0: int, level: int, size: tuple[int, int], fill: int = 255) -> np.ndarray:
        """Read ``size`` = (width, height) pixels of ``level`` whose top-left is level-0 (x0, y0).

        Parts outside the slide are ``fill`` (default 255, white; CLAM's padded
        edge patches are black, 0: see :class:`~wsistream.sampling.CLAMGridSampler`).
        Returns a contiguous uint8 H×W×3 RGB array.

        Raises
        ------
        TileDecodeError
            When the backend cannot decode the region; the message names the slide and region.
        """
        props = self.properties
        if not 0 <= level < props.level_count:
            raise ValueError(f"level={level} does not exist in {self.slide_path} (levels 0..{props.level_count - 1})")
        width, height = int(size[0]), int(size[1])
        if width < 1 or height < 1:
            raise ValueError(f"size={size!r} must be positive")
        ds = props.level_downsamples[level]
        level_w, level_h = props.level_dimensions[level]
        # region in read-level pixels, clipped to the level
        lx, ly = x0 / ds, y0 / ds
        cx0, cy0 = max(0, math.floor(lx)), max(0, math.floor(ly))
        cx1, cy1 = min(level_w, math.floor(lx) + width), min(level_h, math.floor(ly) + height)
        try:
            if cx0 == math.floor(lx) and cy0 == math.floor(ly) and cx1 - cx0 == width and cy1 - cy0 == height:
                return _to_rgb(self._read(x0, y0, level, width, height))
            out = np.full((height, width, 3), fill, np.uint8)
            if cx1 > cx0 and cy1 > cy0:
                sub = self._read(round(cx0 * ds), round(cy0 * ds), level, cx1 - cx0, cy1 - cy0)
                ox, oy = cx0 - math.floor(lx), cy0 - math.floor(ly)
                out[oy : oy + (cy1 - cy0), ox : ox + (cx1 - cx0)] = _to_rgb(sub)
            return out
        except WsiStreamError:
            raise
        except Exception as exc:  # backend libraries raise their own types (OpenSlideError, Jpeg8Error...)
            raise TileDecodeError(
                self.slide_path,
                f"cannot decode region x0={x0}, y0={y0}, level={level}, size={width}x{height} "
                f"({type(exc).__name__}: {exc})",
            ) from exc

    def overview_level(self, max_side: int) -> int:
        """The coarsest level whose longer side is at least ``max_side`` × :data:`OVERVIEW_MIN_FRACTION`.

        A level somewhat smaller than asked is used as it is (never upsampled)
        rather than decoding the next finer level, up to 16× more pixels: on an
        8000² slide with levels 1/4/16 and ``max_side=1024`` this reads level 2
        (500², ~7 ms), where ``get_thumbnail`` decodes far more (all of level 0
        for 2048 on such a slide, 3.25 s measured).
        """
        props = self.properties
        for level in range(props.level_count - 1, -1, -1):
            if max(props.level_dimensions[level]) >= max_side * OVERVIEW_MIN_FRACTION:
                return level
        return 0

    def read_overview(self, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
        """Low-resolution RGB overview whose longer side is at most ``max_side``.

        Read from :meth:`overview_level` in chunks (bounded memory even for a
        single-level slide) and area-resampled.

        Returns
        -------
        image : np.ndarray
            uint8 H×W×3.
        downsample : (float, float)
            Level-0 pixels per overview pixel along x and y.
        """
        props = self.properties
        level = self.overview_level(max_side)
        level_w, level_h = props.level_dimensions[level]
        scale = min(1.0, max_side / max(level_w, level_h))
        out_w, out_h = max(1, round(level_w * scale)), max(1, round(level_h * scale))
        ds = props.level_downsamples[level]
        if scale == 1.0 and level_w * level_h <= _OVERVIEW_CHUNK**2:
            overview = self.read_region(0, 0, level, (level_w, level_h))
        else:
            overview = np.empty((out_h, out_w, 3), np.uint8)
            for cy in range(0, level_h, _OVERVIEW_CHUNK):
                for cx in range(0, level_w, _OVERVIEW_CHUNK):
                    cw, ch = min(_OVERVIEW_CHUNK, level_w - cx), min(_OVERVIEW_CHUNK, level_h - cy)
                    ox0, oy0 = round(cx * scale), round(cy * scale)
                    ox1, oy1 = round((cx + cw) * scale), round((cy + ch) * scale)
                    if ox1 <= ox0 or oy1 <= oy0:
                        continue
                    chunk = self.read_region(round(cx * ds), round(cy * ds), level, (cw, ch))
                    overview[oy0:oy1, ox0:ox1] = cv2.resize(chunk, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
        return overview, (props.level0_width / out_w, props.level0_height / out_h)


class SlideBackend(ABC):
    """Factory that opens slide files; picklable, holds configuration only."""

    #: Registry name (``"openslide"``, ``"tiffslide"``).
    name: ClassVar[str]
    #: Python module the backend needs; checked in :meth:`is_available` before every open.
    requires: ClassVar[str]
    #: How to install :attr:`requires` (the hint of :class:`~wsistream.registry.MissingDependencyError`).
    install: ClassVar[str] = ""
    #: Whether ``s3://`` / ``gs://`` / ``https://`` slides can be opened (:mod:`wsistream.storage`).
    reads_urls: ClassVar[bool] = False
    #: Whether a folder of DICOM ``.dcm`` files opens as one slide (:mod:`wsistream.backends._dicom`).
    reads_dicom: ClassVar[bool] = False

    @classmethod
    def is_available(cls) -> bool:
        """Whether the library behind this backend imports."""
        import importlib.util

        return importlib.util.find_spec(cls.requires) is not None

    @classmethod
    def require(cls) -> None:
        """Raise :class:`MissingDependencyError` (with the install hint) when :meth:`is_available` is false.

        Called by :meth:`open` and, before any slide, by cohort-wide tools (``validate``), so a
        machine without the library gets one error instead of one failure per slide.
        """
        if not cls.is_available():
            raise MissingDependencyError(f"backend {cls.name!r}", cls.requires, cls.install)

    def open(self, slide_path: str | os.PathLike[str]) -> SlideHandle:
        """Open ``slide_path``.

        Raises
        ------
        SlideNotFoundError
            The file does not exist.
        SlideOpenError
            The backend cannot open it (the cause is chained), or it is a URL and the backend reads
            local files only.
        RemoteStorageError
            A URL's storage failed after the bounded retries (subclasses: not found, access denied,
            changed while read).
        MissingDependencyError
            The library behind the backend is not installed: an environment error, not a slide's,
            so a stream stops at the first slide with the install hint instead of recording every slide.
        """
        self.require()
        path = os.fspath(slide_path)
        if is_url(path):
            if not self.reads_urls:
                raise SlideOpenError(
                    path,
                    f"{self.name} reads local files only; pass backend=TiffSlideBackend() to stream URLs "
                    "(docs/storage.md), or copy the slide to local disk",
                )
        elif not os.path.exists(path):
            raise SlideNotFoundError(path, "file does not exist")
        elif os.path.isdir(path):
            if dicom_member(path) is None:
                raise SlideOpenError(path, "is a directory, not a slide file (nor a folder of DICOM .dcm files)")
            if not self.reads_dicom:
                raise SlideOpenError(
                    path,
                    f"is a DICOM slide (a folder of .dcm files); {self.name} cannot read DICOM, "
                    "pass OpenSlideBackend()",
                )
        elif os.path.getsize(path) == 0:
            raise SlideOpenError(path, "file is empty (0 bytes)")
        elif not os.access(path, os.R_OK):
            raise SlideOpenError(path, "permission denied: the file is not readable by this process")
        try:
            return self._open(path)
        except WsiStreamError:
            raise
        except Exception as exc:
            raise SlideOpenError(path, f"{self.name} cannot open it ({type(exc).__name__}: {exc})") from exc

    def preopen(self, slide_paths: Sequence[str], *, overview_side: int | None = None) -> None:
        """Start opening slides the stream will open next (URL-reading backends; default nothing).

        A later :meth:`open` of one of them returns it (or raises its error); the order of opens
        and everything read are unchanged.  ``overview_side``: the stream's overview size.
        """
        return None

    @abstractmethod
    def _open(self, slide_path: str) -> SlideHandle:
        """Open an existing file; library exceptions propagate (wrapped by :meth:`open`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
