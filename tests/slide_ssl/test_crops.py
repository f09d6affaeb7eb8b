"""Coordinate crops, the square-grid variant, the empty-crop rule and block masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsistream.slide_ssl.config import CropConfig
from wsistream.slide_ssl.crops import (
    block_mask,
    coordinate_crop,
    multi_crop,
    sample_view_masks,
    square_grid_crop,
)


def _irregular_grid(seed: int = 0, w: int = 30, h: int = 24, keep: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    sel = rng.random(xx.size) < keep
    grid = np.stack([xx.ravel()[sel], yy.ravel()[sel]], 1).astype(np.int64)
    return grid[np.lexsort((grid[:, 0], grid[:, 1]))]


def _inside(grid: np.ndarray, box) -> np.ndarray:
    return np.flatnonzero(
        (grid[:, 0] >= box.x0) & (grid[:, 0] <= box.x1) & (grid[:, 1] >= box.y0) & (grid[:, 1] <= box.y1)
    )


@pytest.mark.parametrize("scale", [0.95, 0.5, 0.2])
def test_coordinate_crop_holds_exactly_the_tiles_in_its_box(scale):
    grid = _irregular_grid()
    rng = np.random.default_rng(1)
    for _ in range(20):
        crop = coordinate_crop(grid, scale, cap=10_000, rng=rng)
        np.testing.assert_array_equal(crop.indices, _inside(grid, crop.box))
        np.testing.assert_array_equal(crop.positions, grid[crop.indices])
        ux, uy = np.unique(grid[:, 0]), np.unique(grid[:, 1])
        c = max(1, int(scale * min(len(ux), len(uy))))
        assert np.searchsorted(ux, crop.box.x1) - np.searchsorted(ux, crop.box.x0) == c - 1
        assert np.searchsorted(uy, crop.box.y1) - np.searchsorted(uy, crop.box.y0) == c - 1


def test_coordinate_crop_cap_keeps_a_subset_of_the_box_in_slide_order():
    grid = _irregular_grid()
    crop = coordinate_crop(grid, 0.95, cap=50, rng=np.random.default_rng(2))
    inside = _inside(grid, crop.box)
    assert len(crop) == 50 and crop.n_in_box == len(inside) > 50
    assert set(crop.indices) <= set(inside)
    assert np.all(np.diff(crop.indices) > 0)


def test_empty_boxes_are_redrawn_then_anchored_on_a_tile():
    # two far-apart tissue pieces on the diagonal: most boxes of half the distinct values are empty
    a = np.stack(np.meshgrid(np.arange(3), np.arange(3)), -1).reshape(-1, 2)
    grid = np.concatenate([a, a + 40]).astype(np.int64)
    rng = np.random.default_rng(0)
    for tries in (1, 10):
        for _ in range(50):
            crop = coordinate_crop(grid, 0.5, cap=100, rng=rng, max_tries=tries)
            assert len(crop) >= 1
            np.testing.assert_array_equal(crop.indices, _inside(grid, crop.box))


def test_tiny_slide_gives_one_tile_boxes_not_errors():
    grid = np.array([[0, 0], [5, 7]], dtype=np.int64)
    crop = coordinate_crop(grid, 0.1, cap=10, rng=np.random.default_rng(0))
    assert len(crop) == 1 and crop.box.x0 == crop.box.x1


@pytest.mark.parametrize(("n", "cap", "scale"), [(500, 8192, 0.875), (500, 100, 0.375), (10, 8192, 0.5)])
def test_square_grid_crop(n, cap, scale):
    grid = _irregular_grid(w=40, h=40)[:n]
    rng = np.random.default_rng(3)
    side = math.isqrt(min(n, cap))
    c = max(1, int(scale * side))
    for positions in ("original", "compact"):
        crop = square_grid_crop(grid, scale, cap, rng, positions)
        assert crop.box.frame == "compact" and crop.box.x1 - crop.box.x0 + 1 == c
        assert len(crop) == c * c  # the compact square is full: no empty cells
        lay = crop.layout
        assert lay[:, 0].min() >= crop.box.x0 and lay[:, 0].max() <= crop.box.x1
        assert lay[:, 1].min() >= crop.box.y0 and lay[:, 1].max() <= crop.box.y1
        expected = grid[crop.indices] if positions == "original" else lay
        np.testing.assert_array_equal(crop.positions, expected)
        assert np.all(np.diff(crop.indices) > 0)


def test_multi_crop_counts_caps_and_equalisation():
    grid = _irregular_grid(w=60, h=60, keep=0.9)
    cfg = CropConfig(global_scale=0.95, local_scale=0.5, n_local=5, max_tiles=400, equalize=True)
    assert cfg.local_cap == 100  # int(max_tiles * local_scale**2), SLP slide_dataset.py
    g, loc = multi_crop(grid, cfg, np.random.default_rng(0))
    assert len(g) == 2 and len(loc) == 5
    assert len({len(c) for c in g}) == 1 and len(g[0]) <= 400
    assert len({len(c) for c in loc}) == 1 and len(loc[0]) <= 100


def test_position_shift_translates_each_crop_as_a_whole_and_keeps_its_tiles():
    grid = _irregular_grid(w=40, h=40, keep=0.9)
    plain, shifted = CropConfig(n_local=4), CropConfig(n_local=4, position_shift=7)
    for seed in range(5):
        g0, l0 = multi_crop(grid, plain, np.random.default_rng(seed))
        g1, l1 = multi_crop(grid, shifted, np.random.default_rng(seed))
        offsets = set()
        for a, b in zip(g0 + l0, g1 + l1, strict=True):
            np.testing.assert_array_equal(a.indices, b.indices)  # same tiles: the shift is drawn after cropping
            np.testing.assert_array_equal(a.positions, grid[a.indices])
            d = b.positions - a.positions
            assert (d == d[0]).all() and d.min() >= 0 and d.max() <= 7  # one translation per crop
            np.testing.assert_array_equal(b.layout, a.layout)  # masking frame unchanged
            offsets.add(tuple(d[0].tolist()))
        assert len(offsets) > 1  # crops of one slide get their own shifts
    with pytest.raises(ValueError, match="position_shift must be >= 0"):
        CropConfig(position_shift=-1)


@pytest.mark.parametrize("n_masked", [0, 1, 7, 40, 99, 100])
def test_block_mask_masks_exactly_the_target(n_masked):
    grid = _irregular_grid()[:100]
    mask = block_mask(grid, n_masked, np.random.default_rng(n_masked))
    assert mask.sum() == n_masked


def test_block_mask_is_spatially_compact():
    yy, xx = np.mgrid[0:30, 0:30]
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    rng = np.random.default_rng(0)
    neighbours = []
    for _ in range(20):
        m = block_mask(grid, 90, rng)
        occ = np.zeros((30, 30), bool)
        occ[grid[m, 1], grid[m, 0]] = True
        right = (occ[:, :-1] & occ[:, 1:]).sum() + (occ[:-1] & occ[1:]).sum()
        neighbours.append(right / m.sum())
    assert np.mean(neighbours) > 1.0  # random masks of 10 % would give about 0.2


def test_view_masks_ratios_within_bounds():
    rng = np.random.default_rng(0)
    lo, hi = 0.1, 0.5
    for n_views in (2, 4, 8):
        layouts = [_irregular_grid(seed=s)[: 50 + 13 * s] for s in range(n_views)]
        masks = sample_view_masks(layouts, 0.5, (lo, hi), rng)
        masked = [m for m in masks if m.any()]
        assert len(masked) == int(n_views * 0.5)  # DINOv2 collate: int(B * mask_probability) masked crops
        for lay, m in zip(layouts, masks, strict=True):
            r = m.sum() / len(lay)
            assert r == 0 or (math.floor(len(lay) * lo) <= m.sum() and r <= hi)
