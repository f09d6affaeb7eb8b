"""CLAM's contour containment agrees with an independent point-in-polygon computation."""

import cv2
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from wsistream.sampling import GridSampler, plan_read
from wsistream.tissue import CLAMTissueDetector, TissueMask
from wsistream.tissue.containment import clam_keeps, level0_contours
from wsistream.types import SlideProperties


def _mask_with_holes(downsample=(4.0, 4.0)):
    img = np.full((300, 400, 3), 240, np.uint8)
    cv2.ellipse(img, (200, 150), (170, 110), 15, 0, 360, (190, 110, 170), -1)
    cv2.circle(img, (150, 140), 35, (240, 240, 240), -1)
    cv2.rectangle(img, (240, 120), (300, 190), (240, 240, 240), -1)
    mask = CLAMTissueDetector(a_t=0.01, a_h=0.001, ref_patch_size=64, close=0).detect(img, downsample)
    assert len(mask.contours) == 1 and len(mask.contours[0][1]) == 2
    return mask


def _independent(contours, x0, y0, ps, criterion):
    # matplotlib paths; boundary points are measure-zero for random float positions
    cx, cy = x0 + ps // 2, y0 + ps // 2
    shift = int(ps // 2 * 0.5)
    pts = (
        [(cx, cy)]
        if criterion == "center"
        else [(cx - shift, cy - shift), (cx + shift, cy + shift), (cx + shift, cy - shift), (cx - shift, cy + shift)]
    )
    for contour, holes in contours:
        inside = MplPath(contour).contains_points(pts)
        ok = inside.all() if criterion == "four_pt_hard" else inside.any()
        if ok and not any(MplPath(h).contains_point((x0 + ps / 2, y0 + ps / 2)) for h in holes):
            return True
    return False


@pytest.mark.parametrize("criterion", ["four_pt", "four_pt_hard", "center"])
def test_clam_containment_matches_point_in_polygon(criterion):
    mask = _mask_with_holes()
    rng = np.random.default_rng(0)
    agree, kept = 0, 0
    for _ in range(600):
        x0, y0 = rng.uniform(0, 1500), rng.uniform(0, 1100)
        ours = clam_keeps(mask.contours, x0, y0, 128, criterion)
        agree += ours == _independent(mask.contours, x0, y0, 128, criterion)
        kept += ours
    assert agree == 600
    assert 50 < kept < 550  # the test exercises both outcomes


def test_patch_centred_in_a_hole_is_rejected():
    mask = _mask_with_holes()
    # hole 1: circle at overview (150, 140) r 35 -> level-0 centre (600, 560)
    assert not clam_keeps(mask.contours, 600 - 32, 560 - 32, 64, "four_pt")
    assert clam_keeps(mask.contours, 800 - 32, 400 - 32, 64, "four_pt")


def test_contours_are_derived_from_plain_masks():
    grid = np.zeros((50, 50), bool)
    grid[10:40, 10:40] = True
    grid[20:30, 20:30] = False
    mask = TissueMask(grid, 10.0, 10.0)
    ((_outer, holes),) = level0_contours(mask)
    assert len(holes) == 1
    assert clam_keeps(level0_contours(mask), 120, 120, 40, "four_pt")
    assert not clam_keeps(level0_contours(mask), 230, 230, 40, "four_pt")


def test_grid_sampler_with_containment_keeps_exactly_the_clam_tiles():
    # non-integer downsamples keep contour edges off the integer grid points (where
    # cv2's boundary-inclusive test and matplotlib's would legitimately differ)
    mask = _mask_with_holes((4.01, 3.97))
    props = SlideProperties("/t.svs", ((1600, 1200),), (1.0,), 0.5, "slide", None, "x", "x")
    sampler = GridSampler(patch_size=128, level=0, tissue_criterion="four_pt")
    tiles = sampler.grid(mask, plan_read(props, 128, level=0), props)
    expected = [
        (x, y)
        for y in range(0, 1200 - 127, 128)
        for x in range(0, 1600 - 127, 128)
        if _independent(mask.contours, x, y, 128, "four_pt")
    ]
    assert [(t.x0, t.y0) for t in tiles] == expected
