"""Lower pyramid levels accumulated from level-0 row bands, never from a whole level 0.

Each level is the exact block mean of level 0 over ``downsample × downsample`` squares (OpenCV's
``INTER_AREA`` with an integer factor), so a region read at level *k* equals the level-0 region reduced by
area averaging, up to JPEG noise — the property tests of multi-resolution readers rely on. Level sizes
are ``floor(level0 / downsample)`` like Aperio's (CMU-1: 46000 × 32914 → 11500 × 8228 → 2875 × 2057), so
every pixel of a level is a full block and the partial block at the right/bottom edge is dropped.
"""

from __future__ import annotations

import cv2
import numpy as np


class AreaDownsampler:
    """Block-mean one level from level-0 row bands pushed in order, top to bottom.

    Parameters
    ----------
    level0_size : tuple of int
        ``(width, height)`` of level 0.
    downsample : int
        Integer factor ≥ 1 (1 keeps a copy of level 0; only used for tiny slides' thumbnails).

    Attributes
    ----------
    image : numpy.ndarray
        ``(height // downsample, width // downsample, 3)`` uint8, complete once every band was pushed.
    """

    def __init__(self, level0_size: tuple[int, int], downsample: int) -> None:
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        width, height = level0_size
        self.downsample = downsample
        self.size = (width // downsample, height // downsample)
        self.image = np.empty((self.size[1], self.size[0], 3), np.uint8)
        self._carry = np.empty((0, self.size[0] * downsample, 3), np.uint8)
        self._rows_done = 0

    def push(self, band: np.ndarray) -> None:
        """Add the next level-0 rows, ``(n, >= width, 3)`` uint8; columns past the level are ignored."""
        ds = self.downsample
        span = self.size[0] * ds
        if self._rows_done >= self.size[1] or span == 0:
            return
        rows = band[:, :span]
        if self._carry.shape[0]:
            rows = np.concatenate([self._carry, rows], axis=0)
        usable = min(rows.shape[0] // ds, self.size[1] - self._rows_done)
        if usable:
            block = rows[: usable * ds]
            size = (self.size[0], usable)
            reduced = block if ds == 1 else cv2.resize(block, size, interpolation=cv2.INTER_AREA)
            self.image[self._rows_done : self._rows_done + usable] = reduced
            self._rows_done += usable
        self._carry = np.ascontiguousarray(rows[usable * ds :]) if self._rows_done < self.size[1] else rows[:0]

    @property
    def complete(self) -> bool:
        """Whether all rows of the level were produced."""
        return self._rows_done == self.size[1]
