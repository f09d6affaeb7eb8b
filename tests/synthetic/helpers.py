"""Small readers shared by the synthetic-slide tests."""

from __future__ import annotations

import numpy as np
import openslide

# 2048 x 1536 is divisible by 16, so the default levels (1, 4, 16) have exact downsamples; all shared
# slides use seed 0 at the default MPP so they share one cached texture atlas (the slow part of a write).
WIDTH, HEIGHT = 2048, 1536


def read_rgb(slide: openslide.OpenSlide, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    """``read_region`` as an (h, w, 3) uint8 array (the synthetic slides have no transparent pixels)."""
    return np.asarray(slide.read_region(location, level, size).convert("RGB"))


def read_level(slide: openslide.OpenSlide, level: int) -> np.ndarray:
    return read_rgb(slide, (0, 0), level, slide.level_dimensions[level])


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in 0..1 (what most tissue detectors threshold)."""
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1), 0.0)
