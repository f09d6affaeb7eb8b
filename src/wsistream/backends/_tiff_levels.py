"""Which TIFF page holds each pyramid level, and whether the fast path can decode it exactly."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsistream.backends._byte_source import ByteSource
from wsistream.backends._jpeg_check import _restart_interval_of
from wsistream.errors import WsiStreamError

_COMPRESSION_JPEG = 7  # "new-style" JPEG (TIFF Technical Note 2); 6 (old-style) is refused
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6
#: tifffile file flags of layouts that are plain tiled pyramids; any other flag (ndpi, bif, scn,
#: philips, ome, qpi, imagej, lsm, ...) names a vendor layout whose tiles or levels mean something else.
_PLAIN_FLAGS = frozenset({"svs", "shaped", "uniform", "multipage", "subifd"})


@dataclass(frozen=True)
class TiffJpegLevel:
    """One pyramid level as stored in the TIFF: a tiled JPEG page."""

    page: int  # index of the TIFF page (IFD) in the main chain
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    tiles_down: int
    offsets: np.ndarray  # int64, one per tile, row-major
    bytecounts: np.ndarray  # int64
    tables: bytes | None  # JPEGTables, loaded before every (abbreviated) tile
    colorspace: str  # "RGB" (Aperio JPEG/RGB: no colour transform) or "YCBCR"
    restart_interval: int  # DRI inherited from the tables

    @property
    def layout(self) -> str:
        """``"rgb"`` or ``"ycbcr"``."""
        return "rgb" if self.colorspace == "RGB" else "ycbcr"


def _plan_levels(
    path: str, level_dimensions: Sequence[tuple[int, int]], *, allow_ycbcr: bool, source: ByteSource | None = None
) -> list[TiffJpegLevel] | str:
    """The TIFF page of every level, or the reason the fast path cannot serve ``path``.

    ``source``: read the TIFF directories from it instead of the local file ``path`` (a URL).
    """
    import tifffile

    try:
        if source is None:
            with open(path, "rb") as fh:
                magic = fh.read(4)
            file_size = os.path.getsize(path)
        else:
            magic, file_size = source.read(0, min(4, source.size)), source.size
        if magic not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return "not a TIFF file"
        with tifffile.TiffFile(path if source is None else source.file()) as tif:
            odd = set(tif.flags) - _PLAIN_FLAGS
            if odd:
                return f"tifffile identifies a {'/'.join(sorted(odd))} layout"
            candidates: dict[tuple[int, int], list[Any]] = {}
            for page in tif.pages:
                if not isinstance(page, tifffile.TiffPage) or not page.is_tiled:
                    continue
                if int(page.subfiletype) & ~1:  # page (2) or mask (4) images are not levels
                    continue
                size = (int(page.imagewidth), int(page.imagelength))
                candidates.setdefault(size, []).append(page)
            levels = []
            for index, dims in enumerate(level_dimensions):
                pages = candidates.get((int(dims[0]), int(dims[1])), [])
                if len(pages) != 1:
                    return f"level {index} ({dims[0]}x{dims[1]}) matches {len(pages)} tiled pages, not 1"
                reason_or_level = _describe_page(pages[0], file_size, allow_ycbcr=allow_ycbcr)
                if isinstance(reason_or_level, str):
                    return f"level {index} (page {pages[0].index}): {reason_or_level}"
                levels.append(reason_or_level)
            if not levels:
                return "no levels"
            return levels
    except WsiStreamError:  # a remote source that failed after its retries is an error, not a refusal
        raise
    except Exception as exc:  # anything unreadable is simply not served by the fast path
        return f"cannot inspect it with tifffile ({type(exc).__name__}: {exc})"


def _describe_page(page: Any, file_size: int, *, allow_ycbcr: bool) -> TiffJpegLevel | str:
    """A :class:`TiffJpegLevel` for a tiled page, or why its tiles are not plain JPEG RGB/YCbCr."""
    if int(page.compression) != _COMPRESSION_JPEG:
        return f"compression {int(page.compression)} is not JPEG (7)"
    photometric = int(page.photometric)
    if photometric == _PHOTOMETRIC_RGB:
        colorspace = "RGB"
    elif photometric == _PHOTOMETRIC_YCBCR and allow_ycbcr:
        colorspace = "YCBCR"
    else:
        return f"photometric {photometric} is not served"
    if int(page.planarconfig) != 1 or int(page.samplesperpixel) != 3 or page.extrasamples:
        return "not 3 interleaved samples per pixel"
    bits = page.bitspersample
    if any(int(b) != 8 for b in (bits if isinstance(bits, tuple) else (bits,))):
        return f"bits per sample {bits} are not 8"
    if int(page.imagedepth) != 1 or int(page.tiledepth) != 1:
        return "volumetric tiles"
    orientation = page.tags.get(274)
    if orientation is not None and int(orientation.value) != 1:
        return f"orientation {int(orientation.value)} is not top-left"
    tw, th = int(page.tilewidth), int(page.tilelength)
    width, height = int(page.imagewidth), int(page.imagelength)
    if tw <= 0 or th <= 0:
        return "no tile size"
    across, down = -(-width // tw), -(-height // th)
    offsets = np.asarray(page.dataoffsets, np.int64)
    counts = np.asarray(page.databytecounts, np.int64)
    if offsets.size != across * down or counts.size != offsets.size:
        return f"{offsets.size} tile offsets for a {across}x{down} grid"
    if (counts <= 0).any():
        return "missing (zero-length) tiles, which the slide library renders from another level"
    if (offsets <= 0).any() or (offsets + counts > file_size).any():
        return "tile offsets point past the end of the file"
    tables = page.jpegtables
    tables = bytes(tables) if tables is not None and len(tables) else None
    return TiffJpegLevel(
        page=int(page.index),
        width=width,
        height=height,
        tile_width=tw,
        tile_height=th,
        tiles_across=across,
        tiles_down=down,
        offsets=offsets,
        bytecounts=counts,
        tables=tables,
        colorspace=colorspace,
        restart_interval=_restart_interval_of(tables),
    )
