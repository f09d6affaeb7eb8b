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
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

#: Default capacity of a reader's private decoded-tile cache.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024

_COMPRESSION_JPEG = 7  # "new-style" JPEG (TIFF Technical Note 2); 6 (old-style) is refused
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6
#: tifffile file flags of layouts that are plain tiled pyramids; any other flag (ndpi, bif, scn,
#: philips, ome, qpi, imagej, lsm, ...) names a vendor layout whose tiles or levels mean something else.
_PLAIN_FLAGS = frozenset({"svs", "shaped", "uniform", "multipage", "subifd"})

_SOI, _EOI, _SOS, _DRI = 0xD8, 0xD9, 0xDA, 0xDD
_BASELINE_SOF = (0xC0, 0xC1)
#: A 0xFF in entropy-coded data that is not the stuffed byte pair 0xFF00: a marker (or fill).
_FF_NOT_STUFFED = re.compile(rb"\xff[^\x00]")
_ALL_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})

_tokens = itertools.count()


class JpegTileError(RuntimeError):
    """A JPEG tile of the slide is corrupt or does not match its TIFF page."""


# -- decoded-tile cache -------------------------------------------------------------------------


class TileCache:
    """Least-recently-used store of decoded tiles, bounded in bytes.

    One cache can serve many readers (keys carry the reader's token), which keeps memory bounded
    however many slides a worker has open.  Stored arrays are read-only.

    Parameters
    ----------
    capacity_bytes : int
        Upper bound of the summed ``nbytes`` of stored tiles; 0 stores nothing.
    """

    def __init__(self, capacity_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = int(capacity_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        _ALL_CACHES.add(self)

    def _after_fork_in_child(self) -> None:
        # a thread of the parent may have held the lock at fork time; the child has no such thread
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The tile stored under ``key`` (now most recently used), or ``None``."""
        with self._lock:
            tile = self._items.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        """Store ``tile`` (made read-only), evicting least recently used tiles beyond the capacity."""
        size = tile.nbytes
        if size > self.capacity_bytes:
            return
        tile.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            self._items[key] = tile
            self._nbytes += size
            while self._nbytes > self.capacity_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= evicted.nbytes

    def discard(self, owner: int) -> None:
        """Drop every tile whose key starts with ``owner`` (a closed reader's token)."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k and k[0] == owner]:
                self._nbytes -= self._items.pop(key).nbytes

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self._nbytes = 0


_ALL_CACHES: weakref.WeakSet[TileCache] = weakref.WeakSet()
_SHARED_CACHES: dict[int, TileCache] = {}


def _reset_locks_in_child() -> None:
    for cache in list(_ALL_CACHES):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)


def shared_tile_cache(capacity_bytes: int = DEFAULT_CACHE_BYTES) -> TileCache:
    """The process-wide :class:`TileCache` of ``capacity_bytes`` (one per capacity, created on first use).

    Every reader a backend opens shares it, so memory stays bounded however many slides a worker
    cycles through (the counterpart of the OpenSlide backend's shared ``OpenSlideCache``).  A forked
    child inherits the parent's tiles; they stay valid (same files, same bytes).
    """
    cache = _SHARED_CACHES.get(capacity_bytes)
    if cache is None:
        cache = _SHARED_CACHES[capacity_bytes] = TileCache(capacity_bytes)
    return cache


# -- JPEG stream check ---------------------------------------------------------------------------


class _Frame(NamedTuple):
    """What the tile's own SOF says."""

    width: int
    height: int
    components: int
    precision: int
    baseline: bool
    mcus: int  # number of MCUs of the (interleaved) scan
    restart_interval: int  # MCUs per restart interval from a DRI in the tile, 0 if none


def _parse_header(data: bytes, restart_interval: int) -> tuple[_Frame, int]:
    """Walk the marker segments up to the first SOS; return the frame and the scan's first byte."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise JpegTileError(f"not a JPEG stream (starts with {data[:4].hex() or 'nothing'})")
    pos = 2
    frame: tuple[int, ...] | None = None
    sampling: list[tuple[int, int]] = []
    while True:
        if pos + 4 > n:
            raise JpegTileError("JPEG stream ends inside its header (no SOS)")
        if data[pos] != 0xFF:
            raise JpegTileError(f"JPEG marker expected at byte {pos}, found {data[pos]:#04x}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (_EOI, _SOI) or 0xD0 <= marker <= 0xD7:
            raise JpegTileError(f"unexpected marker 0xff{marker:02x} in the JPEG header")
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > n:
            raise JpegTileError(f"JPEG segment 0xff{marker:02x} at byte {pos} runs past the end of the tile")
        if marker in _ALL_SOF:
            body = data[pos + 4 : pos + 2 + length]
            if len(body) < 6:
                raise JpegTileError("truncated SOF segment")
            ncomp = body[5]
            if len(body) < 6 + 3 * ncomp or ncomp == 0:
                raise JpegTileError("truncated SOF segment")
            sampling = [(body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(ncomp)]
            frame = (marker, body[0], (body[1] << 8) | body[2], (body[3] << 8) | body[4], ncomp)
        elif marker == _DRI and length >= 4:
            restart_interval = (data[pos + 4] << 8) | data[pos + 5]
        elif marker == _SOS:
            if frame is None:
                raise JpegTileError("JPEG stream has SOS before SOF")
            sof, precision, height, width, ncomp = frame
            hmax = max(h for h, _ in sampling) or 1
            vmax = max(v for _, v in sampling) or 1
            mcus = math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))
            return (
                _Frame(width, height, ncomp, precision, sof in _BASELINE_SOF, mcus, restart_interval),
                pos + 2 + length,
            )
        pos += 2 + length


def _restart_interval_of(tables: bytes | None) -> int:
    """A DRI stored in ``JPEGTables`` applies to every tile (0 if none)."""
    if not tables:
        return 0
    pos = tables.find(b"\xff\xdd\x00\x04")
    return (tables[pos + 4] << 8) | tables[pos + 5] if pos >= 0 and pos + 6 <= len(tables) else 0


def check_jpeg_stream(data: bytes, *, width: int, height: int, restart_interval: int = 0) -> int:
    """Raise :class:`JpegTileError` unless ``data`` is a structurally complete JPEG tile of ``width`` × ``height``.

    Checks: SOI, header segments inside the data, a frame of the expected size with 3 components of
    8 bits, and, for baseline streams, that the entropy-coded segment contains no marker but the
    restart markers (in sequence and as many as the restart interval implies) and is closed by EOI.

    libjpeg merely *warns* on truncated data and on markers inside the scan (it fills the rest of the
    tile with flat colour), and ``imagecodecs`` ignores warnings where OpenSlide treats them as errors;
    this check closes that gap for truncation and for garbage containing marker bytes.  Damage that
    keeps the stream well formed (flipped bits, zero runs inside the scan) desynchronises the Huffman
    decoder; when that makes it run out of data early, :meth:`JpegTileReader.decode_raw` sees the
    grey tail libjpeg leaves; otherwise libjpeg decodes silently wrong pixels, as OpenSlide does too.

    Returns
    -------
    int
        Offset of the EOI marker that ends the (first) scan.
    """
    frame, scan = _parse_header(data, restart_interval)
    if (frame.width, frame.height) != (width, height):
        raise JpegTileError(f"JPEG frame is {frame.width}x{frame.height}, the TIFF tile is {width}x{height}")
    if frame.components != 3 or frame.precision != 8:
        raise JpegTileError(f"JPEG frame has {frame.components} components of {frame.precision} bits, expected 3 x 8")
    if frame.baseline and not frame.restart_interval:
        # Common case, in C: the first 0xFF that is not a stuffed 0xFF00 is the EOI.
        first = _FF_NOT_STUFFED.search(data, scan)
        if first is not None and data[first.start() + 1] == _EOI:
            return first.start()
    # Precise scan: fill bytes, restart markers, progressive streams, or an error to name.
    body = np.frombuffer(data, np.uint8, offset=scan)
    ff = np.flatnonzero(body == 0xFF)
    ff = ff[ff < body.size - 1]
    follow = body[ff + 1]
    eoi = np.flatnonzero(follow == _EOI)
    if eoi.size == 0:
        raise JpegTileError("JPEG tile is truncated (no EOI marker)")
    end = int(eoi[0])
    eoi_offset = scan + int(ff[end])
    if not frame.baseline:
        return eoi_offset  # progressive/lossless: DHT/SOS segments between scans are legal markers
    follow = follow[:end]
    is_rst = (follow >= 0xD0) & (follow <= 0xD7)
    bad = (follow != 0x00) & (follow != 0xFF) & ~is_rst
    if bad.any():
        at = scan + int(ff[int(np.flatnonzero(bad)[0])])
        raise JpegTileError(f"corrupt JPEG data: marker 0xff{int(follow[bad][0]):02x} inside the scan at byte {at}")
    if frame.restart_interval:
        rst = follow[is_rst].astype(np.intp) - 0xD0
        expected = max(0, math.ceil(frame.mcus / frame.restart_interval) - 1)
        if rst.size != expected or (rst.size and not np.array_equal(rst, np.arange(rst.size) % 8)):
            raise JpegTileError(
                f"corrupt JPEG data: {rst.size} restart markers out of sequence or count (expected {expected})"
            )
    elif is_rst.any():
        raise JpegTileError("corrupt JPEG data: restart marker without a restart interval")
    return eoi_offset


#: Entropy-coded filler spliced before the EOI to test whether the decoder needed more data.
_FILLER = b"\x55" * 4096


def _grey_tail(tile: np.ndarray) -> bool:
    """Whether the last 8×8 block of a tile is exactly (128, 128, 128), libjpeg's fill for MCUs without data."""
    return bool((tile[-8:, -8:] == 128).all())


# -- the reader --------------------------------------------------------------------------------


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
    path: str, level_dimensions: Sequence[tuple[int, int]], *, allow_ycbcr: bool
) -> list[TiffJpegLevel] | str:
    """The TIFF page of every level, or the reason the fast path cannot serve ``path``."""
    import tifffile

    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return "not a TIFF file"
        file_size = os.path.getsize(path)
        with tifffile.TiffFile(path) as tif:
            odd = set(tif.flags) - _PLAIN_FLAGS
            if odd:
                return f"tifffile identifies a {'/'.join(sorted(odd))} layout"
            candidates = {}
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
    except Exception as exc:  # anything unreadable is simply not served by the fast path
        return f"cannot inspect it with tifffile ({type(exc).__name__}: {exc})"


def _describe_page(page, file_size: int, *, allow_ycbcr: bool) -> TiffJpegLevel | str:
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


class JpegTileReader:
    """Decode regions of a tiled JPEG TIFF (Aperio SVS, generic tiled TIFF) directly from its tiles.

    Build it with :meth:`try_open`, which refuses (``None``) anything it does not decode exactly like
    OpenSlide.  Not thread-safe (one reader per thread); fork-safe (a forked child reopens the file on
    its first read); picklable (the file descriptor and the private cache are not pickled).

    Parameters
    ----------
    path : str
        The slide file.
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
        self._fd: int | None = None
        self._pid: int | None = None
        self._fh = None  # file object where os.pread does not exist
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
    ) -> JpegTileReader | None:
        """A reader for ``path`` if every level is a tiled JPEG page it decodes exactly, else ``None``.

        Never raises.  ``level_dimensions`` / ``level_downsamples`` are the slide library's view of
        the pyramid; each level must be exactly one tiled TIFF page of the same size.
        """
        try:
            plan = _plan_levels(os.fspath(path), level_dimensions, allow_ycbcr=allow_ycbcr)
            if isinstance(plan, str) or len(level_downsamples) != len(plan):
                return None
            reader = cls(
                os.fspath(path),
                plan,
                level_downsamples,
                cache=cache,
                cache_bytes=cache_bytes,
                verify=verify,
            )
            reader._file()  # fail here, not on the first read, if the file cannot be opened
            return reader
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
    def _file(self) -> int:
        """The slide file's descriptor for this process (reopened after a fork)."""
        if self._closed:
            raise ValueError(f"{self.path}: JpegTileReader is closed")
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            # In a forked child the inherited descriptor is left alone (the child may already have
            # closed it and reused the number); a fresh one shares no state with the parent.
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = pid
            if not hasattr(os, "pread"):
                self._fh = os.fdopen(self._fd, "rb", buffering=0, closefd=False)
        return self._fd

    def _read_bytes(self, offset: int, count: int) -> bytes:
        fd = self._file()
        if self._fh is None:
            data = os.pread(fd, count, offset)
        else:
            self._fh.seek(offset)
            data = self._fh.read(count)
        if len(data) != count:
            raise JpegTileError(f"short read: {len(data)} of {count} bytes at offset {offset}")
        return data

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

    def tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Decoded tile (cropped to the image at the right/bottom border), read-only, through the cache."""
        key = (self._token, level, col, row)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lv = self.levels[level]
        try:
            tile = self.decode_raw(level, self.raw_tile(level, col, row))
        except JpegTileError as exc:
            raise JpegTileError(f"level {level} tile ({col}, {row}) of {self.path}: {exc}") from None
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
        for row in range(y // th, (y + height - 1) // th + 1):
            ty = row * th
            y0, y1 = max(y, ty), min(y + height, ty + th)
            for col in range(x // tw, (x + width - 1) // tw + 1):
                tx = col * tw
                x0, x1 = max(x, tx), min(x + width, tx + tw)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = self.tile(level, col, row)[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
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
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
        if self._private_cache:
            self._cache.clear()
        else:
            self._cache.discard(self._token)

    def __enter__(self) -> JpegTileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid() and not self._closed:
                if self._fh is not None:
                    self._fh.close()
                os.close(self._fd)
        except Exception:
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _fh=None, _cache=None, tiles_decoded=0)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # a shared cache does not travel: the unpickled reader gets a private one of the same size
        self._cache = TileCache(self._cache_bytes)
        self._private_cache = True
        self._token = next(_tokens)

    def __repr__(self) -> str:
        layouts = "/".join(sorted({lv.layout for lv in self.levels}))
        return f"JpegTileReader({self.path!r}, levels={len(self.levels)}, {layouts})"
