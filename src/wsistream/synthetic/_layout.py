"""Where the tissue is: a low-resolution map of blobs, holes and tissue types.

The map is computed once on a grid at 1/16 of level 0 (2500 × 1875 cells for a 40000 × 30000 slide) and
sampled row-band by row-band while level 0 is rendered (:meth:`TissueLayout.sample_rows`). Keeping the
layout coarse is what makes writing a gigapixel slide cheap; bilinear sampling of a smoothed map gives
level-0 tissue borders that are smooth curves rather than 16-px staircases.

All shapes are drawn in units relative to the slide (fractions of its short side), so the same seed
gives the same picture at any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Level-0 pixels per layout cell. 16 matches the coarsest default pyramid level (1, 4, 16).
LAYOUT_CELL = 16


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Return zero-mean, unit-variance Gaussian-filtered white noise of ``shape``.

    Wide kernels are never run at full resolution: the noise is drawn on a grid ``sigma / 3`` times
    coarser, blurred with sigma 3 there and resized up (cubic), which costs O(pixels) whatever ``sigma``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the white noise.
    shape : tuple of int
        ``(rows, cols)`` of the result.
    sigma : float
        Correlation length in cells of the result.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``.
    """
    factor = max(1.0, sigma / 3.0)
    coarse = (max(2, math.ceil(shape[0] / factor) + 2), max(2, math.ceil(shape[1] / factor) + 2))
    noise: np.ndarray = rng.standard_normal(coarse).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma / factor, borderType=cv2.BORDER_REFLECT)
    if coarse != shape:
        noise = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    noise -= noise.mean()
    std = float(noise.std())
    return noise / std if std > 0 else noise


@dataclass(frozen=True)
class TissueLayout:
    """Low-resolution tissue map of one slide.

    Attributes
    ----------
    level0_size : tuple of int
        ``(width, height)`` of level 0 in pixels.
    grid : numpy.ndarray
        ``(rows, cols, 2)`` uint8 on the layout grid. Channel 0 is the smoothed tissue indicator
        (≥ 128 means tissue), channel 1 the tissue type (≥ 128 means dense, nucleus-rich tissue,
        otherwise stroma). Both are steep around 128 (tens of levels per cell) so that the 128 contour
        of the bilinear interpolation is a smooth curve, not a staircase of cells.
    gain : numpy.ndarray
        ``(rows, cols, 3)`` uint8 per-channel intensity gain, 128 meaning ×1: slow, slide-wide variation
        of staining strength and hue inside tissue (exactly 128 on glass). It is what keeps the periodic
        texture atlas from showing as a repeating pattern at thumbnail scale.
    """

    level0_size: tuple[int, int]
    grid: np.ndarray
    gain: np.ndarray

    @property
    def has_tissue(self) -> bool:
        """Whether any cell is tissue (False for ``background_only`` slides)."""
        return bool((self.grid[..., 0] >= 128).any())

    def tissue_fraction(self) -> float:
        """Fraction of layout cells that are tissue (holes excluded)."""
        return float((self.grid[..., 0] >= 128).mean())

    def sample_rows(self, y0: int, nrows: int) -> np.ndarray:
        """Bilinearly sample :attr:`grid` at level-0 rows ``y0 .. y0 + nrows - 1``, all columns."""
        return self._sample(self.grid, y0, nrows)

    def sample_gain(self, y0: int, nrows: int) -> np.ndarray:
        """Bilinearly sample :attr:`gain` like :meth:`sample_rows`; ``(nrows, width, 3)`` uint8."""
        return self._sample(self.gain, y0, nrows)

    def _sample(self, grid: np.ndarray, y0: int, nrows: int) -> np.ndarray:
        """Bilinearly sample ``grid`` at level-0 rows ``y0 .. y0 + nrows - 1``, all columns.

        Sampling a band gives exactly the rows a whole-image bilinear resize would give (same pixel-centre
        convention as OpenCV), so bands rendered independently join without seams.

        Parameters
        ----------
        y0 : int
            First level-0 row. Rows past the bottom edge are clamped to it.
        nrows : int
            Number of rows.

        Returns
        -------
        numpy.ndarray
            ``(nrows, width, channels)`` uint8, same channels as ``grid``.
        """
        width, height = self.level0_size
        rows = grid.shape[0]
        ys = (np.arange(y0, y0 + nrows, dtype=np.float64) + 0.5) * (rows / height) - 0.5
        ys = np.clip(ys, 0.0, rows - 1)
        i0 = np.floor(ys).astype(np.intp)
        i1 = np.minimum(i0 + 1, rows - 1)
        frac = (ys - i0).astype(np.float32)[:, None, None]
        band = grid[i0].astype(np.float32) * (1.0 - frac) + grid[i1].astype(np.float32) * frac
        band = np.round(band).astype(np.uint8)
        # Equal height in and out: cv2 interpolates along x only, with the same x mapping as a full resize.
        return np.asarray(cv2.resize(band, (width, nrows), interpolation=cv2.INTER_LINEAR))


def _blob_field(rng: np.random.Generator, shape: tuple[int, int], blobs: int) -> np.ndarray:
    """Sum of randomly placed, rotated, elongated Gaussian bumps, warped by low-frequency noise."""
    rows, cols = shape
    short = min(rows, cols)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    field = np.zeros(shape, np.float32)
    for _ in range(blobs):
        cy = rng.uniform(0.18, 0.82) * rows
        cx = rng.uniform(0.15, 0.85) * cols
        sigma = rng.uniform(0.07, 0.13) * short
        aspect = rng.uniform(1.0, 2.2)
        theta = rng.uniform(0.0, math.pi)
        c, s = math.cos(theta), math.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * s) / (sigma * aspect)
        v = (-(xx - cx) * s + (yy - cy) * c) / sigma
        field += np.exp(-0.5 * (u * u + v * v))
    field += 0.22 * smooth_noise(rng, shape, 0.06 * short)
    field += 0.08 * smooth_noise(rng, shape, 0.015 * short)
    # Fade to nothing near the slide border: real tissue rarely touches the scan edge.
    # A wide, quadratic ramp so blobs curve away from the edge instead of being cut along a line.
    edge = max(1.0, 0.15 * short)
    ramp_y = np.clip(np.minimum(yy[:, :1], rows - 1 - yy[:, :1]) / edge, 0.0, 1.0)
    ramp_x = np.clip(np.minimum(xx[:1], cols - 1 - xx[:1]) / edge, 0.0, 1.0)
    field -= 1.5 * (1.0 - ramp_y * ramp_x) ** 2
    return field


def _drop_small_islands(mask: np.ndarray, min_cells: int) -> np.ndarray:
    """Remove connected tissue components smaller than ``min_cells`` (speckle from the noise)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_cells
    return np.asarray(keep[labels])


def _punch_holes(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    """Cut ``count`` closed, irregular holes (lumina, fat) strictly inside the tissue.

    A hole is placed only where the distance to the tissue border exceeds its radius by a margin, so each
    one stays enclosed — a contour with a child contour, the case hole-aware detectors exist for.
    """
    rows, cols = mask.shape
    short = min(rows, cols)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    warp = smooth_noise(rng, mask.shape, max(1.0, 0.01 * short))
    out = mask.copy()
    for _ in range(count):
        radius = rng.uniform(0.012, 0.035) * short
        aspect = rng.uniform(1.0, 1.6)
        theta = rng.uniform(0.0, math.pi)
        candidates = np.flatnonzero(dist.ravel() > 1.2 * radius * aspect + 3.0)
        if candidates.size == 0:
            continue
        cy, cx = divmod(int(candidates[rng.integers(candidates.size)]), cols)
        # Work in a window around the centre: the hole never reaches past 1.6 × its long radius.
        reach = math.ceil(1.6 * radius * aspect) + 2
        y_lo, y_hi = max(0, cy - reach), min(rows, cy + reach + 1)
        x_lo, x_hi = max(0, cx - reach), min(cols, cx + reach + 1)
        yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32)
        c, s = math.cos(theta), math.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * s) / (radius * aspect)
        v = (-(xx - cx) * s + (yy - cy) * c) / radius
        hole = (u * u + v * v) < 1.0 + 0.35 * warp[y_lo:y_hi, x_lo:x_hi]
        window = out[y_lo:y_hi, x_lo:x_hi]
        window[hole & (dist[y_lo:y_hi, x_lo:x_hi] > 2.0)] = 0
    return out


def make_layout(
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    blobs: int,
    background_only: bool,
) -> TissueLayout:
    """Draw the tissue map of a ``width`` × ``height`` slide.

    The blob field is thresholded at the quantile that gives a tissue fraction drawn uniformly from
    0.32–0.46 (before holes), which keeps the default slide inside the 30–50 % the benchmarks assume.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness of the layout.
    width, height : int
        Level-0 size in pixels.
    blobs : int
        Number of tissue bumps; nearby bumps may merge into one blob.
    background_only : bool
        Return an all-background layout (no tissue anywhere).

    Returns
    -------
    TissueLayout
    """
    shape = (math.ceil(height / LAYOUT_CELL), math.ceil(width / LAYOUT_CELL))
    if background_only or blobs <= 0:
        return TissueLayout((width, height), np.zeros((*shape, 2), np.uint8), np.full((*shape, 3), 128, np.uint8))
    short = min(shape)
    target = rng.uniform(0.32, 0.46)
    field = _blob_field(rng, shape, blobs)
    threshold = float(np.quantile(field, 1.0 - target))
    mask = (field > threshold).astype(np.uint8)
    mask = _drop_small_islands(mask, max(4, int(0.002 * mask.size)))
    mask = _punch_holes(rng, mask, count=2 * blobs)
    # Smooth the 0/1 map so that bilinear sampling at level 0 yields curved, not stair-stepped, borders.
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=1.0)
    tissue = np.clip(np.round(soft * 255.0), 0, 255).astype(np.uint8)
    kind = smooth_noise(rng, shape, max(1.0, 0.05 * short))
    dense_threshold = float(np.quantile(kind, 0.6))
    # The noise changes by ~1/(0.05 short) per cell; ×(2 short) makes that ~40 grey levels per cell.
    kind = np.clip(np.round(128.0 + 2.0 * short * (kind - dense_threshold)), 0, 255).astype(np.uint8)
    grid = np.ascontiguousarray(np.stack([tissue, kind], axis=-1))
    return TissueLayout((width, height), grid, _stain_gain(rng, mask))


def _stain_gain(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Per-channel gain: ±~8 % staining strength and ±~3 % hue drift inside tissue, exactly ×1 on glass.

    The variation is confined to cells at least two cells inside the tissue: bilinear sampling mixes the
    four cells around a pixel, and a gain leaking onto glass would tint the background next to tissue.
    """
    short = min(mask.shape)
    inner = cv2.erode(mask, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    weight: np.ndarray = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), sigmaX=1.5)
    weight *= cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    strength = 0.08 * smooth_noise(rng, mask.shape, max(1.0, 0.08 * short))
    gains = []
    for _ in range(3):
        hue = 0.03 * smooth_noise(rng, mask.shape, max(1.0, 0.1 * short))
        gains.append(128.0 * (1.0 + weight * (strength + hue)))
    return np.clip(np.round(np.stack(gains, axis=-1)), 0, 255).astype(np.uint8)
