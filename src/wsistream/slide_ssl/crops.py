"""Coordinate crops of tile-embedding sequences and iBOT block masks.

Two crop modes (see :class:`~wsistream.slide_ssl.config.CropConfig`):

``coords`` (SLP ``dino/datasets/slide_dataset.py`` ``get_crop``)
    Let ``ux``, ``uy`` be the slide's sorted distinct grid x / y values and
    ``c = max(1, int(scale * min(len(ux), len(uy))))``. A start ``a`` (``b``) is
    drawn uniformly from ``0 .. len(ux) - c`` and the box is
    ``[ux[a], ux[a + c - 1]] x [uy[b], uy[b + c - 1]]`` (inclusive, grid units).
    Every tile inside the box is kept with its own grid position, then a crop
    holding more than its cap keeps a uniform random subset of ``cap`` tiles in
    slide order (``reduce_images``). Caps: ``max_tiles`` (global),
    ``int(max_tiles * local_scale**2)`` (local).
``grid`` (SLP ``dinov2_with_new_settings/dinov2/data/slide_dataset.py``)
    ``side = isqrt(min(N, cap))``; when ``N > side**2`` a uniform random subset of
    ``side**2`` tiles is kept in slide order; tile ``k`` of that list sits at
    compact cell ``(k % side, k // side)``; the box is a ``c x c`` square,
    ``c = max(1, int(scale * side))``, at a uniform start. Each crop draws its own
    subset, as the reference does.

Empty crops and tiny slides (wsistream's rule; the reference's ``int(...)`` can
give a zero-size box and crashes, its ``get_sample_with_try`` then retries
another slide): ``c`` is at least 1; in ``coords`` mode an empty box is redrawn
up to ``max_tries`` times, then a box of the same size is placed uniformly
among those containing a uniformly drawn tile. A crop therefore always holds at
least one tile. Slides with fewer than ``min_tiles`` tiles never reach this
module (:mod:`.data` skips and records them).

Position shift (``CropConfig.position_shift``, off by default; not in the references): after cropping,
each crop's encoder positions are translated by its own ``(dx, dy)`` uniform in ``0 .. position_shift``,
drawn from the same generator after all crops, so the crops' tiles are those of an unshifted run.

Block masking: BEiT/DINOv2 ``MaskingGenerator`` adapted to a sparse token set:
rectangles of random area and aspect ratio (log-uniform in [0.3, 1/0.3]) are
placed in the crop's layout frame around a random unmasked token until exactly
the target number of tokens is masked. Per micro-batch,
``int(n_global_views * mask_probability)`` global crops are masked, with
ratios drawn from consecutive bins of ``linspace(lo, hi, n + 1)`` (DINOv2
``collate_data_and_cast``); with one slide that is one of its two global crops
(SLP ``collate_tile_embs_and_cast``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from wsistream.slide_ssl.config import CropConfig

_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))  # MaskingGenerator(min_aspect=0.3)
_MIN_BLOCK = 4  # MaskingGenerator(min_num_patches=4)


@dataclass(frozen=True)
class TileCropBox:
    """Inclusive box ``[x0, x1] x [y0, y1]`` in the ``frame`` the crop was drawn in."""

    x0: int
    x1: int
    y0: int
    y1: int
    frame: Literal["tile", "compact"]


@dataclass(frozen=True)
class TileCrop:
    """One crop of a slide.

    Attributes
    ----------
    indices : np.ndarray
        (n,) ascending indices of the kept tiles in the slide's arrays.
    positions : np.ndarray
        (n, 2) grid positions handed to the encoder.
    layout : np.ndarray
        (n, 2) coordinates in the box's frame (used for block masking).
    box : TileCropBox
        The box.
    n_in_box : int
        Tiles inside the box before the cap / equalisation.
    """

    indices: np.ndarray
    positions: np.ndarray
    layout: np.ndarray
    box: TileCropBox
    n_in_box: int

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def subset(self, keep: np.ndarray) -> TileCrop:
        """The crop restricted to ``keep`` (positions into this crop, ascending)."""
        return replace(self, indices=self.indices[keep], positions=self.positions[keep], layout=self.layout[keep])


def _cap(crop: TileCrop, cap: int, rng: np.random.Generator) -> TileCrop:
    if len(crop) <= cap:
        return crop
    return crop.subset(np.sort(rng.choice(len(crop), size=cap, replace=False)))


def coordinate_crop(
    grid: np.ndarray, scale: float, cap: int, rng: np.random.Generator, max_tries: int = 10
) -> TileCrop:
    """Square crop over the distinct grid x / y values (``coords`` mode, see the module docstring)."""
    ux, uy = np.unique(grid[:, 0]), np.unique(grid[:, 1])
    c = max(1, int(scale * min(len(ux), len(uy))))

    def box_at(a: int, b: int) -> tuple[TileCropBox, np.ndarray]:
        box = TileCropBox(int(ux[a]), int(ux[a + c - 1]), int(uy[b]), int(uy[b + c - 1]), "tile")
        inside = (grid[:, 0] >= box.x0) & (grid[:, 0] <= box.x1) & (grid[:, 1] >= box.y0) & (grid[:, 1] <= box.y1)
        return box, inside

    for _ in range(max_tries):
        box, inside = box_at(int(rng.integers(0, len(ux) - c + 1)), int(rng.integers(0, len(uy) - c + 1)))
        if inside.any():
            break
    else:
        t = int(rng.integers(0, len(grid)))
        ia, ib = int(np.searchsorted(ux, grid[t, 0])), int(np.searchsorted(uy, grid[t, 1]))
        a = int(rng.integers(max(0, ia - c + 1), min(ia, len(ux) - c) + 1))
        b = int(rng.integers(max(0, ib - c + 1), min(ib, len(uy) - c) + 1))
        box, inside = box_at(a, b)
    idx = np.flatnonzero(inside)
    crop = TileCrop(idx, grid[idx], grid[idx], box, int(idx.size))
    return _cap(crop, cap, rng)


def square_grid_crop(
    grid: np.ndarray,
    scale: float,
    cap: int,
    rng: np.random.Generator,
    positions: Literal["original", "compact"] = "original",
) -> TileCrop:
    """Crop of the compact square re-arrangement (``grid`` mode, see the module docstring)."""
    n = len(grid)
    side = math.isqrt(min(n, cap))
    keep = side * side
    order = np.arange(n) if n == keep else np.sort(rng.choice(n, size=keep, replace=False))
    k = np.arange(keep)
    compact = np.stack([k % side, k // side], axis=1).astype(np.int64)
    c = max(1, int(scale * side))
    x0, y0 = int(rng.integers(0, side - c + 1)), int(rng.integers(0, side - c + 1))
    inside = (compact[:, 0] >= x0) & (compact[:, 0] < x0 + c) & (compact[:, 1] >= y0) & (compact[:, 1] < y0 + c)
    idx, lay = order[inside], compact[inside]
    pos = grid[idx] if positions == "original" else lay
    return TileCrop(idx, pos, lay, TileCropBox(x0, x0 + c - 1, y0, y0 + c - 1, "compact"), int(idx.size))


def _equalize(crops: list[TileCrop], rng: np.random.Generator) -> list[TileCrop]:
    if not crops:
        return crops
    m = min(len(c) for c in crops)
    return [_cap(c, m, rng) for c in crops]


def multi_crop(grid: np.ndarray, cfg: CropConfig, rng: np.random.Generator) -> tuple[list[TileCrop], list[TileCrop]]:
    """Two global and ``cfg.n_local`` local crops of one slide's grid (N, 2)."""

    def one(scale: float, cap: int) -> TileCrop:
        if cfg.mode == "grid":
            return square_grid_crop(grid, scale, cap, rng, cfg.grid_positions)
        return coordinate_crop(grid, scale, cap, rng, cfg.max_tries)

    globals_ = [one(cfg.global_scale, cfg.max_tiles) for _ in range(2)]
    locals_ = [one(cfg.local_scale, cfg.local_cap) for _ in range(cfg.n_local)]
    if cfg.equalize:
        globals_, locals_ = _equalize(globals_, rng), _equalize(locals_, rng)
    if cfg.position_shift:
        globals_, locals_ = ([_shifted(c, cfg.position_shift, rng) for c in g] for g in (globals_, locals_))
    return globals_, locals_


def _shifted(crop: TileCrop, shift: int, rng: np.random.Generator) -> TileCrop:
    """The crop with its encoder positions translated by one ``(dx, dy)`` uniform in ``0 .. shift``."""
    return replace(crop, positions=crop.positions + rng.integers(0, shift + 1, size=2))


def block_mask(layout: np.ndarray, n_masked: int, rng: np.random.Generator) -> np.ndarray:
    """Mask exactly ``min(n_masked, n)`` of the ``n`` tokens at ``layout`` (n, 2) in rectangular blocks."""
    n = len(layout)
    mask = np.zeros(n, dtype=bool)
    target = min(max(int(n_masked), 0), n)
    count = 0
    while count < target:
        remaining = target - count
        area = rng.uniform(min(_MIN_BLOCK, remaining), remaining)
        aspect = math.exp(rng.uniform(*_LOG_ASPECT))
        h = max(1, round(math.sqrt(area * aspect)))
        w = max(1, round(math.sqrt(area / aspect)))
        free = np.flatnonzero(~mask)
        ax, ay = layout[free[int(rng.integers(0, free.size))]]
        x0, y0 = ax - int(rng.integers(0, w)), ay - int(rng.integers(0, h))
        sel = free[
            (layout[free, 0] >= x0) & (layout[free, 0] < x0 + w) & (layout[free, 1] >= y0) & (layout[free, 1] < y0 + h)
        ]
        if sel.size > remaining:
            sel = rng.choice(sel, size=remaining, replace=False)
        mask[sel] = True
        count += int(sel.size)
    return mask


def sample_view_masks(
    layouts: list[np.ndarray],
    probability: float,
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Block masks for a micro-batch's global crops (see the module docstring); unmasked crops get all-False."""
    n_views = len(layouts)
    n_masked_views = int(n_views * probability)
    bins = np.linspace(ratio[0], ratio[1], n_masked_views + 1)
    ratios = [float(rng.uniform(bins[i], bins[i + 1])) for i in range(n_masked_views)]
    ratios += [0.0] * (n_views - n_masked_views)
    ratios = [ratios[i] for i in rng.permutation(n_views)]
    return [block_mask(lay, int(len(lay) * r), rng) for lay, r in zip(layouts, ratios, strict=True)]
