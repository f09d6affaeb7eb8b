"""Tissue masks and the detector interface.

A detector turns a low-resolution overview into a :class:`TissueMask`: a
boolean grid plus the level-0 pixels each mask cell covers along x and y.
Masks are computed once per slide (and cached by the pipeline); every patch
decision afterwards is an O(1) lookup in the mask's summed-area table.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from wsistream.backends.base import SlideHandle
    from wsistream.types import SlideProperties

#: Longest side (overview pixels) of the overview a tissue mask is detected on, wherever one is made:
#: ``PatchPipeline.overview_side`` (so ``wsistream validate`` and ``preview``, through the recipe's pipeline),
#: ``DeepZoomTiling`` / ``GridTiling`` and ``wsistream tissue --overview-side``. The overview is read from the
#: coarsest level whose longer side is at least 0.45 × this (``SlideHandle.overview_level``): on an 8000² slide
#: with levels 1/4/16 that is level 2 (500²), a mask cell of 16 level-0 px (1/14 of a 224-px patch at
#: 0.5 µm/px); on a 40000×30000 pyramid level 3, 39 px. 1024, not 2048 (the tilings' old default): 2048 reads
#: one level finer wherever the coarsest level is under 922 px, 4–16× the mask time per slide, and took the
#: 8-slide bench pool's first patch from 0.34 s to 3.35 s for cells far below a patch
#: (``benchmarks/overview_side.py``, docs/performance.md).
DEFAULT_OVERVIEW_SIDE = 1024


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask on an overview grid.

    Attributes
    ----------
    mask : np.ndarray
        bool (H, W); True = tissue.
    downsample_x, downsample_y : float
        Level-0 pixels per mask cell along x and y.
    contours : tuple
        Optional tissue polygons in level-0 pixels as ``(contour, holes)``
        pairs (CLAM-style detectors fill this; containment criteria use it).
    """

    mask: np.ndarray
    downsample_x: float
    downsample_y: float
    contours: tuple[Any, ...] = field(default=(), repr=False)

    @cached_property
    def _integral(self) -> np.ndarray:
        """Summed-area table (H+1, W+1), int32 (exact up to 2^31 cells)."""
        import cv2

        return cv2.integral(self.mask.astype(np.uint8), sdepth=cv2.CV_32S)

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the whole overview that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def is_empty(self) -> bool:
        """True when the mask has no tissue cell."""
        return not bool(self.mask.any())

    def cell_box(self, x0: float, y0: float, width0: float, height0: float) -> tuple[int, int, int, int]:
        """Mask cells (c0, r0, c1, r1), end-exclusive, touched by a level-0 box."""
        h, w = self.mask.shape
        c0 = min(w, max(0, math.floor(x0 / self.downsample_x)))
        r0 = min(h, max(0, math.floor(y0 / self.downsample_y)))
        c1 = min(w, max(c0 + 1, math.ceil((x0 + width0) / self.downsample_x)))
        r1 = min(h, max(r0 + 1, math.ceil((y0 + height0) / self.downsample_y)))
        return c0, r0, c1, r1

    def fraction_in(self, x0: float, y0: float, width0: float, height0: float) -> float:
        """Fraction of the mask cells touched by the level-0 box that are tissue."""
        c0, r0, c1, r1 = self.cell_box(x0, y0, width0, height0)
        area = (c1 - c0) * (r1 - r0)
        if area <= 0:
            return 0.0
        ii = self._integral
        return float(ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]) / area

    def window_fractions(self, cells_x: int, cells_y: int) -> np.ndarray:
        """Tissue fraction of every ``cells_x``×``cells_y`` window, indexed by its top-left cell.

        Shape (H - cells_y + 1, W - cells_x + 1); empty when the window does not fit.
        """
        h, w = self.mask.shape
        if cells_x > w or cells_y > h:
            return np.zeros((0, 0), np.float32)
        ii = self._integral
        sums = ii[cells_y:, cells_x:] - ii[:-cells_y, cells_x:] - ii[cells_y:, :-cells_x] + ii[:-cells_y, :-cells_x]
        return np.asarray(sums.astype(np.float32) * np.float32(1.0 / (cells_x * cells_y)))


class TissueDetector(ABC):
    """Finds tissue on a slide overview.

    Subclasses are frozen dataclasses, so ``repr(detector)`` is a complete,
    stable description of the configuration (used as the mask-cache key).
    """

    def detect_slide(self, handle: SlideHandle, props: SlideProperties, max_side: int) -> TissueMask:
        """Mask of an opened slide: by default :meth:`detect` on the ``max_side`` overview.

        Detectors that need the slide at a stated µm/px, or that cache masks on
        disk (:class:`~wsistream.tissue.ModelTissueDetector`), override this.
        ``props`` carries the µm/px the pipeline resolved (overrides included).
        """
        overview, downsample = handle.read_overview(max_side)
        return self.detect(overview, downsample)

    @abstractmethod
    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Return the tissue mask of ``overview`` (uint8 H×W×3 RGB).

        ``downsample`` is the level-0 pixels per overview pixel along (x, y);
        detectors whose parameters are physical areas (CLAM) need it.
        """


def saturation(overview: np.ndarray) -> np.ndarray:
    """HSV saturation channel (uint8) of an RGB image, as CLAM and TIAToolbox threshold it."""
    import cv2

    return cv2.cvtColor(overview, cv2.COLOR_RGB2HSV)[:, :, 1]
