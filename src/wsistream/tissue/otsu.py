"""Otsu threshold on saturation (or inverted grey): the common heuristic tissue finder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from wsistream.tissue.base import TissueDetector, TissueMask


@dataclass(frozen=True)
class OtsuTissueDetector(TissueDetector):
    """Otsu's threshold on a blurred saturation (default) or inverted-grey channel.

    Saturation separates stained tissue from the white, unsaturated glass
    background (CLAM ``segmentTissue`` thresholds the median-blurred HSV
    saturation the same way).  Otsu always finds *some* threshold, even on a
    blank slide where it splits scanner noise; ``min_threshold`` is the floor
    that stops a blank slide from producing "tissue" (saturation of glass is
    below ~10/255; the palest eosin stays above ~20/255).

    Parameters
    ----------
    channel : {"saturation", "grey"}
        Channel to threshold. ``"grey"`` uses 255 - grey (tissue is darker).
    blur_ksize : int
        Median blur kernel (odd) applied before thresholding. Default 7 (CLAM ``mthresh``).
    min_threshold : int
        Lower bound on the threshold in 0..255. Default 20.
    close_ksize : int
        Elliptical morphological closing kernel; 0 disables. Default 5.
    min_area_fraction : float
        Connected components smaller than this fraction of the overview are dropped. Default 0.0005.
    min_brightness : int
        Pixels whose HSV value (max of R, G, B) is below this are never tissue:
        black scanner borders and the dark background of fluorescence scans
        have high saturation (noise over a near-zero value) and would
        otherwise be taken for tissue wholesale. Default 30.
    """

    channel: Literal["saturation", "grey"] = "saturation"
    blur_ksize: int = 7
    min_threshold: int = 20
    close_ksize: int = 5
    min_area_fraction: float = 0.0005
    min_brightness: int = 30

    def __post_init__(self) -> None:
        if self.channel not in ("saturation", "grey"):
            raise ValueError(f"channel={self.channel!r} is not supported; pass 'saturation' or 'grey'")
        if self.blur_ksize < 1 or self.blur_ksize % 2 == 0:
            raise ValueError(f"blur_ksize must be a positive odd integer, got {self.blur_ksize}")
        if not 0 <= self.min_threshold <= 255:
            raise ValueError(f"min_threshold must be in 0..255, got {self.min_threshold}")
        if not 0 <= self.min_brightness <= 255:
            raise ValueError(f"min_brightness must be in 0..255, got {self.min_brightness}")
        if self.close_ksize < 0:
            raise ValueError(f"close_ksize must be >= 0, got {self.close_ksize}")
        if not 0 <= self.min_area_fraction < 1:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}")

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Threshold the overview; see the class docstring."""
        hsv = cv2.cvtColor(overview, cv2.COLOR_RGB2HSV)
        if self.channel == "saturation":
            channel = hsv[:, :, 1].copy()
        else:
            channel = 255 - cv2.cvtColor(overview, cv2.COLOR_RGB2GRAY)
        channel = cv2.medianBlur(channel, self.blur_ksize)
        otsu, _ = cv2.threshold(channel, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        mask = channel > max(float(otsu), float(self.min_threshold))
        if self.min_brightness > 0:
            mask &= hsv[:, :, 2] >= self.min_brightness  # HSV value = max(R, G, B)
        mask = clean_mask(mask, self.close_ksize, self.min_area_fraction)
        return TissueMask(mask, float(downsample[0]), float(downsample[1]))


def clean_mask(mask: np.ndarray, close_ksize: int, min_area_fraction: float) -> np.ndarray:
    """Morphological closing then removal of small connected components."""
    out: np.ndarray = mask.astype(np.uint8)
    if close_ksize > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_ksize, close_ksize))
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel)
    if min_area_fraction > 0 and out.any():
        _, labels, stats, _ = cv2.connectedComponentsWithStats(out, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area_fraction * out.size
        keep[0] = False
        out = keep[labels].astype(np.uint8)
    return out.astype(bool)
