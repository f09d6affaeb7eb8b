"""Tissue masks kept per process: an LRU keyed by slide file, detection config and overview size.

One store per process (per capacity), shared by every :class:`PatchPipeline`
built in it, so the copies that ``WsiStreamDataset`` derives for each pass and
epoch (``dataclasses.replace``) reuse the masks of the passes before instead
of segmenting every slide again; with ``persistent_workers=True`` that holds
across epochs too. A key includes the file's size and modification time, so a
slide rewritten in place is segmented anew.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable

from wsistream.tissue.base import TissueMask


class MaskCache:
    """Least-recently-used cache of :class:`TissueMask` (capacity 0 disables it)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"tissue_mask_cache_size must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, TissueMask] = OrderedDict()

    def get(self, key: Hashable) -> TissueMask | None:
        """The cached mask, refreshed as most recent; ``None`` when absent."""
        mask = self._items.get(key)
        if mask is not None:
            self._items.move_to_end(key)
        return mask

    def put(self, key: Hashable, mask: TissueMask) -> None:
        """Store ``mask``, evicting the least recently used beyond capacity."""
        if self.capacity == 0:
            return
        self._items[key] = mask
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_PROCESS_CACHES: dict[int, MaskCache] = {}


def process_mask_cache(capacity: int) -> MaskCache:
    """The mask store of ``capacity`` masks shared in this process (a fresh, disabled one for 0)."""
    if capacity == 0:
        return MaskCache(0)
    if capacity not in _PROCESS_CACHES:
        _PROCESS_CACHES[capacity] = MaskCache(capacity)
    return _PROCESS_CACHES[capacity]


def file_version(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a local file, ``None`` where it cannot be stat'ed (a URL, a vanished file)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns
