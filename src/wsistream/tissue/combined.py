"""Combine several detectors (intersection or union of their masks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from wsistream.tissue.base import TissueDetector, TissueMask

if TYPE_CHECKING:
    from wsistream.backends.base import SlideHandle
    from wsistream.types import SlideProperties


@dataclass(frozen=True)
class CombinedTissueDetector(TissueDetector):
    """Tissue where all (``mode="and"``) or any (``mode="or"``) of ``detectors`` find it.

    On a slide (:meth:`detect_slide`, what the pipeline and feature extraction
    call) each member detects through its own ``detect_slide``, so a
    :class:`~wsistream.tissue.ModelTissueDetector` runs at its ``input_mpp``
    with its disk cache; the members' masks are then combined on the finest
    member grid (coarser masks looked up at each fine cell's centre).
    """

    detectors: Sequence[TissueDetector]
    mode: Literal["and", "or"] = "and"

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ValueError("detectors is empty; pass at least one TissueDetector")
        if self.mode not in ("and", "or"):
            raise ValueError(f"mode={self.mode!r} is not supported; pass 'and' or 'or'")
        object.__setattr__(self, "detectors", tuple(self.detectors))

    def detect_slide(self, handle: SlideHandle, props: SlideProperties, max_side: int) -> TissueMask:
        """Each member's own slide mask, combined on the finest of their grids."""
        return self._combine([d.detect_slide(handle, props, max_side) for d in self.detectors])

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Combine the members' masks of one given overview, cell by cell."""
        return self._combine([d.detect(overview, downsample) for d in self.detectors])

    def _combine(self, masks: list[TissueMask]) -> TissueMask:
        finest = min(masks, key=lambda m: m.downsample_x * m.downsample_y)
        grids = [_on_grid(m, finest) for m in masks]
        combined = np.logical_and.reduce(grids) if self.mode == "and" else np.logical_or.reduce(grids)
        return TissueMask(combined, finest.downsample_x, finest.downsample_y)


def _on_grid(mask: TissueMask, grid: TissueMask) -> np.ndarray:
    """``mask`` sampled at the level-0 centre of every cell of ``grid`` (itself when the grids agree)."""
    same = (mask.downsample_x, mask.downsample_y) == (grid.downsample_x, grid.downsample_y)
    if same and mask.mask.shape == grid.mask.shape:
        return mask.mask
    h, w = grid.mask.shape
    xs = ((np.arange(w) + 0.5) * grid.downsample_x / mask.downsample_x).astype(np.int64)
    ys = ((np.arange(h) + 0.5) * grid.downsample_y / mask.downsample_y).astype(np.int64)
    inside_x, inside_y = xs < mask.mask.shape[1], ys < mask.mask.shape[0]
    out = np.zeros((h, w), bool)
    out[np.ix_(inside_y, inside_x)] = mask.mask[np.ix_(ys[inside_y], xs[inside_x])]
    return out
