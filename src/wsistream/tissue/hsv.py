"""Per-pixel HSV range thresholds."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wsistream.tissue.base import TissueDetector, TissueMask
from wsistream.tissue.otsu import clean_mask


@dataclass(frozen=True)
class HSVTissueDetector(TissueDetector):
    """Keep pixels whose OpenCV HSV values fall in the given ranges.

    Defaults keep pink-to-purple hues (H in 90..180 of OpenCV's 0..180, i.e.
    the H&E hue arc that wraps through magenta), saturation >= 8 and value
    >= 103 (dark debris, pen ink and black borders excluded), as used for
    per-tile rejection in the Midnight recipe's HSV filter.

    Parameters
    ----------
    hue_range, sat_range, val_range : (int, int)
        Inclusive OpenCV HSV ranges (H 0..180, S and V 0..255).
    close_ksize, min_area_fraction
        Clean-up as in :class:`OtsuTissueDetector`.
    """

    hue_range: tuple[int, int] = (90, 180)
    sat_range: tuple[int, int] = (8, 255)
    val_range: tuple[int, int] = (103, 255)
    close_ksize: int = 5
    min_area_fraction: float = 0.0005

    def __post_init__(self) -> None:
        for name, (lo, hi), top in (
            ("hue_range", self.hue_range, 180),
            ("sat_range", self.sat_range, 255),
            ("val_range", self.val_range, 255),
        ):
            if not 0 <= lo <= hi <= top:
                raise ValueError(f"{name}={(lo, hi)!r} must satisfy 0 <= low <= high <= {top}")

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Threshold the overview's HSV channels."""
        hsv = cv2.cvtColor(overview, cv2.COLOR_RGB2HSV)
        lower = np.array([self.hue_range[0], self.sat_range[0], self.val_range[0]], np.uint8)
        upper = np.array([self.hue_range[1], self.sat_range[1], self.val_range[1]], np.uint8)
        mask = clean_mask(cv2.inRange(hsv, lower, upper) > 0, self.close_ksize, self.min_area_fraction)
        return TissueMask(mask, float(downsample[0]), float(downsample[1]))
