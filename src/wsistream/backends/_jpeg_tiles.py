"""Fast path for TIFF-family slides: read raw JPEG tiles and decode them with libjpeg-turbo.

OpenSlide spends most of a small ``read_region`` outside the JPEG decoder (cairo compositing, ARGB
conversion, per-call setup); TiffSlide goes through zarr. :class:`JpegTileReader` reads the tile bytes
straight from the offsets in the TIFF (``os.pread``), decodes them with ``imagecodecs.jpeg8_decode``
(libjpeg-turbo) and keeps decoded tiles in a byte-bounded LRU shared by every level of the file, so
neighbouring patches reuse tiles.

It reproduces the decode that OpenSlide does for these files exactly (``openslide-decode-tiff.c``,
direct path): the JPEG colour space is taken from the TIFF ``PhotometricInterpretation`` and never
guessed from markers (Aperio "JPEG/RGB" tiles carry no marker saying they are RGB), the shared
``JPEGTables`` are loaded before each abbreviated tile, fancy upsampling and the integer slow DCT are
libjpeg's defaults in both, and tiles at the right/bottom border are decoded whole and cropped.
Measured pixel-exact against ``OpenSlide.read_region`` for RGB, YCbCr 4:4:4 and YCbCr 4:2:0 tiles
(``tests/backends/test_fast_tiles.py``).

Coordinates: :meth:`JpegTileReader.read` takes level pixels.  OpenSlide takes a level-0 origin and,
when ``x0 / downsample`` is not a whole number (always the case for Aperio levels whose size is not
an exact division, e.g. downsample 4.00012), composites the tiles at that sub-pixel offset with
cairo's bilinear filter.  :meth:`JpegTileReader.level_origin` snaps to the nearest level pixel
instead: identical to OpenSlide wherever the origin is on the level's pixel grid, and the stored
pixels, not a blend, elsewhere.  Callers that record coordinates should sample on the read level's
grid (``x0 = round(lx * downsample)``) so the record and the pixels agree exactly.

Anything it does not handle exactly is refused by :meth:`JpegTileReader.try_open` (``None``), so the
caller keeps its library for that file: other compressions (LZW, Deflate, Aperio JPEG 2000
33003/33005), other photometrics, planar or non-8-bit data, NDPI / BIF / SCN / Philips / OME layouts,
missing (zero-length) tiles, tiles past the end of the file, or levels that do not match the
backend's own view of the pyramid.

A corrupt tile raises :class:`JpegTileError` (the slide handle turns it into ``TileDecodeError``).
libjpeg only *warns* on some damage and ``imagecodecs`` ignores warnings, where OpenSlide turns them
into errors; the stream is therefore checked before decoding (SOI, frame size, a marker-free
entropy-coded segment, the restart-marker sequence, an EOI) and for libjpeg's grey fill after data
that ran out, which catches truncated tiles and most damage OpenSlide reports; ``verify="strict"``
matches OpenSlide's detection in every case measured, at twice the decode cost.  See
:func:`check_jpeg_stream` for what no JPEG decoder can see.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from wsistream.backends._byte_source import ByteSource, LocalFileSource
from wsistream.backends._jpeg_check import _FILLER, JpegTileError, _grey_tail, check_jpeg_stream
from wsistream.backends._tiff_levels import TiffJpegLevel, _plan_levels
from wsistream.backends._tile_cache import DEFAULT_CACHE_BYTES, TileCache, shared_tile_cache
from wsistream.errors import WsiStreamError

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "JpegTileError",
    "JpegTileReader",
    "TileCache",
    "check_jpeg_stream",
    "shared_tile_cache",
]

_tokens = itertools.count()


class JpegTileReader:
    """Decode regions of a tiled JPEG TIFF (Aperio SVS, generic tiled TIFF) directly from its tiles.

    Build it with :meth:`try_open`, which refuses (``None``) anything it does not decode exactly like
    OpenSlide.  Not thread-safe (one reader per thread); fork-safe (a forked child reopens the file on
    its first read); picklable (the file descriptor and the private cache are not pickled).

    Parameters
    ----------
    path : str
        The slide file or URL.
    levels : sequence of TiffJpegLevel
        The TIFF page behind each pyramid level, in the backend's level order.
    level_downsamples : sequence of float
        The backend's downsample of each level (for :meth:`level_origin`).
    cache : TileCache or None
        A cache shared with other readers; ``None`` makes a private one of ``cache_bytes``.
    cache_bytes : int
        Capacity of the private cache (0 disables caching).
    verify : {"structure", "strict", "none"}
        How hard to look for corrupt tiles (libjpeg only *warns* on some damage, and imagecodecs
        ignores warnings, where OpenSlide raises).  ``"structure"`` (default): :func:`check_jpeg_stream`
        before each decode plus the grey-tail test after it (a few % of a decode); catches truncation,
        marker garbage and entropy data that runs out before the tile's last MCU.  ``"strict"``: also
        decode every tile a second time with filler spliced before the EOI, which catches data that
        runs out *inside* the last MCU too: OpenSlide's "premature end of data segment" in every case
        measured, at twice the decode cost.  ``"none"``: decode only.
    source : ByteSource or None
        Where the bytes come from (the reader owns and closes it); ``None``: the local file ``path``.
        A remote source (:class:`wsistream.storage.RemoteByteSource`) gets every missing tile of a
        :meth:`read` in one :meth:`ByteSource.read_ranges` call, which it coalesces.
    """

    def __init__(
        self,
        path: str,
        levels: Sequence[TiffJpegLevel],
        level_downsamples: Sequence[float],
        *,
        cache: TileCache | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        verify: Literal["structure", "strict", "none"] = "structure",
        source: ByteSource | None = None,
    ) -> None:
        if len(levels) != len(level_downsamples):
            raise ValueError("one downsample per level is needed")
        self.path = os.fspath(path)
        self.levels = tuple(levels)
        self.level_downsamples = tuple(float(d) for d in level_downsamples)
        if verify not in ("structure", "strict", "none"):
            raise ValueError(f"verify must be 'structure', 'strict' or 'none', got {verify!r}")
        self.verify = verify
        self._private_cache = cache is None
        self._cache_bytes = int(cache_bytes) if cache is None else cache.capacity_bytes
        self._cache = TileCache(cache_bytes) if cache is None else cache
        self._token = next(_tokens)
        self._source = source if source is not None else LocalFileSource(self.path)
        self._closed = False
        #: Tiles decoded by this reader (cache misses), for benchmarks.
        self.tiles_decoded = 0

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def try_open(
        cls,
        path: str | os.PathLike[str],
        level_dimensions: Sequence[tuple[int, int]],
        level_downsamples: Sequence[float],
        *,
        cache: TileCache | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        allow_ycbcr: bool = True,
        verify: Literal["structure", "strict", "none"] = "structure",
        source: ByteSource | None = None,
    ) -> JpegTileReader | None:
        """A reader for ``path`` if every level is a tiled JPEG page it decodes exactly, else ``None``.

        Never raises.  ``level_dimensions`` / ``level_downsamples`` are the slide library's view of
        the pyramid; each level must be exactly one tiled TIFF page of the same size.  ``source``
        (owned by the reader when accepted) replaces the local file.
        """
        try:
            plan = _plan_levels(os.fspath(path), level_dimensions, allow_ycbcr=allow_ycbcr, source=source)
            if isinstance(plan, str) or len(level_downsamples) != len(plan):
                return None
            reader = cls(
                os.fspath(path),
                plan,
                level_downsamples,
                cache=cache,
                cache_bytes=cache_bytes,
                verify=verify,
                source=source,
            )
            reader._read_bytes(0, 4)  # fail here, not on the first read, if the file cannot be read
            return reader
        except WsiStreamError:  # a remote source that failed after its retries: not a refusal
            raise
        except Exception:
            return None

    @staticmethod
    def refusal_reason(
        path: str | os.PathLike[str], level_dimensions: Sequence[tuple[int, int]], *, allow_ycbcr: bool = True
    ) -> str | None:
        """Why :meth:`try_open` refuses ``path`` (``None`` if it accepts it); for logs and tests."""
        plan = _plan_levels(os.fspath(path), level_dimensions, allow_ycbcr=allow_ycbcr)
        return plan if isinstance(plan, str) else None

    # -- file access ----------------------------------------------------------------------------
    def _read_bytes(self, offset: int, count: int) -> bytes:
        if self._closed:
            raise ValueError(f"{self.path}: JpegTileReader is closed")
        return self._source.read(offset, count)

    def raw_tile(self, level: int, col: int, row: int) -> bytes:
        """The stored (possibly abbreviated) JPEG stream of one tile."""
        lv = self.levels[level]
        if not (0 <= col < lv.tiles_across and 0 <= row < lv.tiles_down):
            raise IndexError(f"tile ({col}, {row}) outside the {lv.tiles_across}x{lv.tiles_down} grid of level {level}")
        i = row * lv.tiles_across + col
        return self._read_bytes(int(lv.offsets[i]), int(lv.bytecounts[i]))

    # -- decoding -------------------------------------------------------------------------------
    def decode_raw(self, level: int, data: bytes) -> np.ndarray:
        """Decode one tile's bytes to a full ``tile_height × tile_width × 3`` array (no crop, no cache)."""
        import imagecodecs

        lv = self.levels[level]
        eoi = None
        if self.verify != "none":
            eoi = check_jpeg_stream(
                data, width=lv.tile_width, height=lv.tile_height, restart_interval=lv.restart_interval
            )
        tile = imagecodecs.jpeg8_decode(data, tables=lv.tables, colorspace=lv.colorspace, outcolorspace="RGB")
        if tile.shape != (lv.tile_height, lv.tile_width, 3) or tile.dtype != np.uint8:
            raise JpegTileError(
                f"decoded tile is {tile.shape} {tile.dtype}, expected ({lv.tile_height}, {lv.tile_width}, 3) uint8"
            )
        if eoi is not None and (self.verify == "strict" or _grey_tail(tile)):
            # libjpeg leaves every MCU after the point where the entropy data ran out at zero, i.e.
            # uniform 128 grey, and only warns ("premature end of data segment").  A legitimately
            # grey last block is possible, so confirm: with filler bits spliced in before the EOI a
            # healthy stream decodes identically (the filler is never reached), a short one does not.
            # "strict" always confirms: data running out inside the last MCU leaves no grey tail.
            padded = data[:eoi] + _FILLER + data[eoi:]
            again = imagecodecs.jpeg8_decode(padded, tables=lv.tables, colorspace=lv.colorspace, outcolorspace="RGB")
            if not np.array_equal(tile, again):
                raise JpegTileError("corrupt JPEG data: premature end of data segment")
        return tile

    def tile(self, level: int, col: int, row: int, data: bytes | None = None) -> np.ndarray:
        """Decoded tile (cropped to the image at the right/bottom border), read-only, through the cache.

        ``data``: the tile's stored bytes when the caller already fetched them (:meth:`read`).
        """
        key = (self._token, level, col, row)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lv = self.levels[level]
        try:
            tile = self.decode_raw(level, self.raw_tile(level, col, row) if data is None else data)
        except JpegTileError as exc:
            raise JpegTileError(f"level {level} tile ({col}, {row}) of {self.path}: {exc}") from None
        except WsiStreamError:
            raise
        except RuntimeError as exc:  # imagecodecs.Jpeg8Error and friends
            raise JpegTileError(
                f"level {level} tile ({col}, {row}) of {self.path}: {type(exc).__name__}: {exc}"
            ) from exc
        w = min(lv.tile_width, lv.width - col * lv.tile_width)
        h = min(lv.tile_height, lv.height - row * lv.tile_height)
        if (h, w) != tile.shape[:2]:
            tile = np.ascontiguousarray(tile[:h, :w])  # the padding of edge tiles is never shown
        self.tiles_decoded += 1
        self._cache.put(key, tile)
        tile.flags.writeable = False
        return tile

    def _missing(self, level: int, cols: range, rows: range) -> list[tuple[int, int]]:
        return [(c, r) for r in rows for c in cols if (self._token, level, c, r) not in self._cache]

    def _ranges(self, level: int, tiles: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        lv = self.levels[level]
        index = [r * lv.tiles_across + c for c, r in tiles]
        return [(int(lv.offsets[i]), int(lv.bytecounts[i])) for i in index]

    def _spare(self, level: int, missing: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Byte ranges of the undecoded tiles beside each row's missing ones (remote read-ahead).

        Up to ``source.readahead_tiles`` columns each side of a row's missing tiles; the source
        fetches them only where they extend that row's request (no extra round trip).
        """
        ahead = int(getattr(self._source, "readahead_tiles", 0))
        if not ahead or not missing:
            return []
        lv = self.levels[level]
        spans: dict[int, list[int]] = {}
        for c, r in missing:
            spans.setdefault(r, []).append(c)
        taken = set(missing)
        spare = [
            (c, r)
            for r, cs in spans.items()
            for c in range(max(0, min(cs) - ahead), min(lv.tiles_across, max(cs) + ahead + 1))
            if (c, r) not in taken and (self._token, level, c, r) not in self._cache
        ]
        return self._ranges(level, spare)

    def _fetch_missing(self, level: int, cols: range, rows: range) -> dict[tuple[int, int], bytes]:
        """Stored bytes of the tiles of ``cols × rows`` not in the cache, in one batched read."""
        missing = self._missing(level, cols, rows)
        if not missing:
            return {}
        if self._closed:
            raise ValueError(f"{self.path}: JpegTileReader is closed")
        ranges = self._ranges(level, missing)
        spare = self._spare(level, missing)
        data = self._source.read_ranges(ranges, spare)
        return dict(zip(missing, data, strict=True))

    @property
    def can_prefetch(self) -> bool:
        """Whether :meth:`prefetch` does anything (a source with background reads: remote storage)."""
        return hasattr(self._source, "prefetch_ranges")

    def prefetch(self, level: int, x: int, y: int, width: int, height: int) -> None:
        """Start fetching the uncached tiles of a later :meth:`read` (sources that can; else nothing)."""
        start = getattr(self._source, "prefetch_ranges", None)
        lv = self.levels[level]
        if start is None or self._closed or x < 0 or y < 0 or x + width > lv.width or y + height > lv.height:
            return
        tw, th = lv.tile_width, lv.tile_height
        cols, rows = range(x // tw, (x + width - 1) // tw + 1), range(y // th, (y + height - 1) // th + 1)
        missing = self._missing(level, cols, rows)
        start(self._ranges(level, missing), self._spare(level, missing))

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels ``[y, y + height) × [x, x + width)`` of ``level`` (level pixels, inside the level).

        Returns a new contiguous uint8 ``height × width × 3`` RGB array.
        """
        lv = self.levels[level]
        x, y, width, height = int(x), int(y), int(width), int(height)
        if width < 1 or height < 1 or x < 0 or y < 0 or x + width > lv.width or y + height > lv.height:
            raise ValueError(
                f"region x={x}, y={y}, {width}x{height} is not inside level {level} ({lv.width}x{lv.height})"
            )
        tw, th = lv.tile_width, lv.tile_height
        out = np.empty((height, width, 3), np.uint8)
        cols, rows = range(x // tw, (x + width - 1) // tw + 1), range(y // th, (y + height - 1) // th + 1)
        fetched = self._fetch_missing(level, cols, rows)
        for row in rows:
            ty = row * th
            y0, y1 = max(y, ty), min(y + height, ty + th)
            for col in cols:
                tx = col * tw
                x0, x1 = max(x, tx), min(x + width, tx + tw)
                tile = self.tile(level, col, row, fetched.get((col, row)))
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
        return out

    def level_origin(self, level: int, x0: int, y0: int, width: int, height: int) -> tuple[int, int]:
        """Level pixel that level-0 ``(x0, y0)`` falls on, for a ``width × height`` read.

        The nearest level pixel (``round(x0 / downsample)``): the inverse of ``x0 = round(x * ds)``
        even for the non-integer downsamples OpenSlide reports when a level's size is not an exact
        division (Aperio: 4.00012), and the pixel OpenSlide's sub-pixel compositing weights most.
        Falls back to ``floor`` (what ``SlideHandle.read_region`` clips with) where rounding up
        would push the region past the level's edge.
        """
        lv = self.levels[level]
        ds = self.level_downsamples[level]
        lx, ly = math.floor(x0 / ds + 0.5), math.floor(y0 / ds + 0.5)
        if lx + width > lv.width:
            lx = math.floor(x0 / ds)
        if ly + height > lv.height:
            ly = math.floor(y0 / ds)
        return lx, ly

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def cache(self) -> TileCache:
        """The decoded-tile cache this reader uses."""
        return self._cache

    def close(self) -> None:
        """Close the file and drop this reader's tiles from the cache; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._source.close()
        if self._private_cache:
            self._cache.clear()
        else:
            self._cache.discard(self._token)

    def __enter__(self) -> JpegTileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_cache=None, tiles_decoded=0)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # a shared cache does not travel: the unpickled reader gets a private one of the same size
        self._cache = TileCache(self._cache_bytes)
        self._private_cache = True
        self._token = next(_tokens)

    def __repr__(self) -> str:
        layouts = "/".join(sorted({lv.layout for lv in self.levels}))
        return f"JpegTileReader({self.path!r}, levels={len(self.levels)}, {layouts})"
