"""A small LRU of tissue masks, keyed by slide and detection config."""

from __future__ import annotations

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
