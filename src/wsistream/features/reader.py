"""The extraction tile reader: each JPEG tile of a slide decoded once, in grid order.

A DeepZoom/grid tiling touches every JPEG tile under the tissue, most of them
by several neighbouring tiles (a 448² read at 40x spans 2–3 × 2–3 stored
240² tiles). :class:`TileReader` reads through its own decoded-tile LRU sized
for one row of the grid (:func:`row_cache_bytes`), and the batches are planned
in grid order (:func:`grid_batches`), so a stored tile is decoded once per slide
and served from memory to every tile that overlaps it.

Reads go to the direct JPEG decoder (:mod:`wsistream.backends._jpeg_tiles`,
libjpeg-turbo on the stored tile bytes, pixel-identical to OpenSlide's
``read_region``) when the backend allows it (``fast_tiles``) and the file is a
layout that decoder accepts; everything else — other formats, and reads whose
level-0 origin is not a whole pixel of the read level, where OpenSlide blends
neighbouring pixels — goes to the slide library. The fast path is never used
where its pixels could differ from OpenSlide's.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, cast

import numpy as np

from wsistream.backends._jpeg_tiles import JpegTileError, JpegTileReader, TileCache
from wsistream.backends.base import SlideBackend, SlideHandle
from wsistream.errors import TileDecodeError

#: Smallest decoded-tile cache of a reader (a few rows of small slides).
MIN_CACHE_BYTES = 16 * 1024 * 1024
#: Largest (a 40x slide 150k px wide needs ~260 MiB for one DeepZoom row).
MAX_CACHE_BYTES = 512 * 1024 * 1024


def row_cache_bytes(fast: JpegTileReader, level: int, read_h: int) -> int:
    """Bytes of the decoded stored tiles one row of ``read_h``-pixel reads touches, plus the next row's first.

    A read of ``read_h`` level pixels spans at most ``ceil((read_h - 1) / tile_h) + 1`` stored
    rows; one more stored row keeps the row shared with the next grid row. Clamped to
    [:data:`MIN_CACHE_BYTES`, :data:`MAX_CACHE_BYTES`].
    """
    lv = fast.levels[level]
    rows = math.ceil(max(read_h - 1, 0) / lv.tile_height) + 2
    need = rows * lv.tiles_across * lv.tile_width * lv.tile_height * 3
    return int(min(max(need, MIN_CACHE_BYTES), MAX_CACHE_BYTES))


def _library_backend(backend: SlideBackend) -> SlideBackend:
    """The same backend with its own direct-JPEG path off (the reader decides when to use it)."""
    if not dataclasses.is_dataclass(backend) or "fast_tiles" not in {f.name for f in dataclasses.fields(backend)}:
        return backend
    return cast(SlideBackend, dataclasses.replace(cast(Any, backend), fast_tiles=False))


class TileReader:
    """Reads level regions of one slide for extraction; one per process (re-opened after a fork).

    Parameters
    ----------
    slide_path : str
        The slide.
    backend : SlideBackend
        The slide library; its ``fast_tiles`` flag (OpenSlide, TiffSlide backends) says whether the
        direct JPEG path may be used.
    level : int
        The pyramid level the tiling reads (sizes the cache).
    read_h : int
        Height in level pixels of the tiling's reads (sizes the cache).
    """

    def __init__(self, slide_path: str, backend: SlideBackend, level: int, read_h: int) -> None:
        self.slide_path = slide_path
        self._want_fast = bool(getattr(backend, "fast_tiles", False))
        self.backend = _library_backend(backend)
        self.level = level
        self.read_h = read_h
        self._handle: SlideHandle | None = None
        self._fast: JpegTileReader | None = None
        self._pid: int | None = None
        #: Reads served by the slide library instead of the direct decoder (non-grid origins).
        self.library_reads = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_handle=None, _fast=None, _pid=None, library_reads=0)
        return state

    def _open(self) -> SlideHandle:
        if self._handle is not None and self._pid == os.getpid():
            return self._handle
        self._handle = handle = self.backend.open(self.slide_path)
        self._pid = os.getpid()
        self._fast = None
        if self._want_fast:
            dims, downsamples = handle.properties.level_dimensions, handle.properties.level_downsamples
            probe = JpegTileReader.try_open(self.slide_path, dims, downsamples, cache_bytes=0)
            if probe is not None:  # reopened with a cache sized from its tile grid
                cache = TileCache(row_cache_bytes(probe, self.level, self.read_h))
                probe.close()
                self._fast = JpegTileReader.try_open(self.slide_path, dims, downsamples, cache=cache)
        return handle

    @property
    def fast(self) -> JpegTileReader | None:
        """The direct JPEG decoder in use, or ``None`` (the library reads everything)."""
        self._open()
        return self._fast

    def read(self, x0: int, y0: int, level: int, width: int, height: int) -> np.ndarray:
        """``width × height`` pixels of ``level`` at level-0 ``(x0, y0)``: contiguous uint8 RGB, as ``read_region``.

        Raises
        ------
        TileDecodeError
            A stored tile is corrupt; the message names the slide, the region and the tile.
        """
        handle = self._open()
        fast = self._fast
        if fast is not None:
            ds = handle.properties.level_downsamples[level]
            lx, ly = x0 / ds, y0 / ds
            level_w, level_h = handle.properties.level_dimensions[level]
            on_grid = lx == int(lx) and ly == int(ly)
            inside = lx >= 0 and ly >= 0 and lx + width <= level_w and ly + height <= level_h
            if on_grid and inside:
                try:
                    return fast.read(level, int(lx), int(ly), width, height)
                except JpegTileError as exc:
                    raise TileDecodeError(
                        self.slide_path,
                        f"cannot decode region x0={x0}, y0={y0}, level={level}, size={width}x{height} ({exc})",
                    ) from exc
            self.library_reads += 1
        return handle.read_region(x0, y0, level, (width, height))

    def close(self) -> None:
        """Close this process's handles (idempotent)."""
        if self._pid == os.getpid():
            if self._fast is not None:
                self._fast.close()
            if self._handle is not None:
                self._handle.close()
        self._handle, self._fast, self._pid = None, None, None


def grid_batches(order_key: np.ndarray, shape_key: np.ndarray, batch_size: int, num_workers: int) -> list[list[int]]:
    """Batches of tile indices in grid order, one shape per batch, each worker on a contiguous band.

    Parameters
    ----------
    order_key : np.ndarray
        (N, 2) ``(y, x)`` of each tile; batches follow row-major order of it.
    shape_key : np.ndarray
        (N, k) per-tile shape description; a batch never mixes two shapes (it is stacked as is).
    batch_size : int
        Most tiles per batch.
    num_workers : int
        DataLoader workers. DataLoader hands batch ``i`` to worker ``i % num_workers``; the
        list is interleaved so that worker ``w`` gets the ``w``-th contiguous band of the grid,
        and so decodes the stored tiles its neighbouring tiles share only once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(order_key)
    order = np.lexsort((order_key[:, 1], order_key[:, 0])) if n else np.zeros(0, np.int64)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        if current and (len(current) == batch_size or not np.array_equal(shape_key[i], shape_key[current[0]])):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return interleave_bands(batches, num_workers)


def interleave_bands(batches: list[list[int]], num_workers: int) -> list[list[int]]:
    """``batches`` cut into ``num_workers`` contiguous bands, interleaved so that worker ``w`` gets band ``w``.

    DataLoader's multi-process iterator hands batch ``i`` of its sampler to worker
    ``i % num_workers`` (``_worker_queue_idx_cycle``) and yields batches in sampler order. Bands
    differ in length by at most one batch, the longer ones first, so every round of
    ``num_workers`` batches but the last is full and position ``i`` stays on worker ``i % num_workers``
    (with ``ceil`` bands a short or empty band would shift the later rounds onto other workers).
    """
    workers = max(1, num_workers)
    if workers == 1:
        return batches
    per, extra = divmod(len(batches), workers)
    starts = [w * per + min(w, extra) for w in range(workers + 1)]
    bands = [batches[starts[w] : starts[w + 1]] for w in range(workers)]
    return [band[j] for j in range(per + (extra > 0)) for band in bands if j < len(band)]
