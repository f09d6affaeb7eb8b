"""A byte-bounded LRU of decoded tiles, shareable by every slide a process reads."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

#: Default capacity of a reader's private decoded-tile cache.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


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
        #: Lookups that found / did not find their tile (``wsistream bench`` reports the hit share).
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

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is stored (no hit/miss counted, recency unchanged)."""
        return key in self._items

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


def tile_cache_counts() -> tuple[int, int]:
    """``(hits, misses)`` summed over the shared caches of this process (:func:`shared_tile_cache`).

    Those caches live as long as the process, so the counts only grow: the difference of two calls
    around a read loop is how many decoded tiles the loop's slides reused and how many they decoded
    (``wsistream bench`` reports it for the 20x pool, ``docs/performance.md``). A reader's private
    cache (``JpegTileReader(cache=None)``) is not counted.
    """
    caches = list(_SHARED_CACHES.values())
    return sum(c.hits for c in caches), sum(c.misses for c in caches)
