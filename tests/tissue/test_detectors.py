import cv2
import numpy as np
import pytest

from wsistream.backends import OpenSlideBackend
from wsistream.tissue import (
    CLAMTissueDetector,
    CombinedTissueDetector,
    HSVTissueDetector,
    OtsuTissueDetector,
    TissueMask,
)


def _overview(path, size=1024):
    with OpenSlideBackend().open(path) as h:
        return h.read_overview(size)


def _pink_blob_image(h=400, w=600):
    img = np.full((h, w, 3), 242, np.uint8)
    cv2.ellipse(img, (300, 200), (200, 120), 0, 0, 360, (200, 120, 170), -1)
    cv2.circle(img, (300, 200), 40, (242, 242, 242), -1)  # a hole of glass inside the tissue
    return img


def test_otsu_finds_the_blob_and_not_the_hole():
    img = _pink_blob_image()
    mask = OtsuTissueDetector(close_ksize=0).detect(img, (4.0, 4.0))
    assert mask.mask[200, 150] and mask.mask[120, 300]
    assert not mask.mask[200, 300]  # centre of the hole
    assert not mask.mask[10, 10]
    truth = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(truth, (300, 200), (200, 120), 0, 0, 360, 1, -1)
    cv2.circle(truth, (300, 200), 40, 0, -1)
    iou = (mask.mask & truth.astype(bool)).sum() / (mask.mask | truth.astype(bool)).sum()
    assert iou > 0.95


@pytest.mark.parametrize(
    "detector",
    [OtsuTissueDetector(), HSVTissueDetector(), CLAMTissueDetector(), CLAMTissueDetector.preset("tcga")],
)
def test_blank_background_is_not_tissue(detector):
    rng = np.random.default_rng(0)
    blank = np.clip(240 + rng.normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
    assert detector.detect(blank, (16.0, 16.0)).is_empty


def test_real_aperio_tissue_fraction(cmu_svs):
    overview, ds = _overview(cmu_svs)
    fraction = OtsuTissueDetector().detect(overview, ds).tissue_fraction
    assert 0.15 < fraction < 0.6  # CMU-1-Small-Region: a tissue band on white glass


def test_fluorescence_dark_background_is_not_tissue(shared_slide):
    overview, ds = _overview(shared_slide("test3-DAPI-2.ndpi"))
    dark = overview.max(axis=2) < 30
    raw = OtsuTissueDetector(close_ksize=0).detect(overview, ds)
    assert raw.mask.any() and not (raw.mask & dark).any()
    # the closing merges neighbouring nuclei into tissue regions, nothing more
    assert OtsuTissueDetector().detect(overview, ds).tissue_fraction < 0.5


def test_clam_area_filter_scales_with_reference_patch(cmu_svs, synthetic_40x_svs):
    # NOTES.md: a_t=16 with a 512-px reference needs >= 16*512^2 level-0 px per contour;
    # CMU-1-Small-Region has no such contour, synthetic-40x has one.
    for path, expect_empty in ((cmu_svs, True), (synthetic_40x_svs, False)):
        overview, ds = _overview(path)
        mask = CLAMTissueDetector.preset("tcga").detect(overview, ds)
        assert mask.is_empty is expect_empty
    overview, ds = _overview(synthetic_40x_svs)
    mask = CLAMTissueDetector.preset("tcga").detect(overview, ds)
    for contour, holes in mask.contours:  # contours are returned in level-0 pixels
        area0 = cv2.contourArea(contour.astype(np.float32)) - sum(cv2.contourArea(h.astype(np.float32)) for h in holes)
        assert area0 > 16 * 512**2


def test_clam_holes_are_cleared():
    img = _pink_blob_image()
    mask = CLAMTissueDetector(a_t=0.01, a_h=0.001, ref_patch_size=64).detect(img, (1.0, 1.0))
    assert mask.mask[200, 150] and not mask.mask[200, 300]
    assert len(mask.contours) == 1 and len(mask.contours[0][1]) == 1


def test_clam_presets_and_bad_names():
    tcga = CLAMTissueDetector.preset("TCGA")
    assert (tcga.use_otsu, tcga.sthresh, tcga.mthresh, tcga.close, tcga.a_t, tcga.a_h, tcga.max_n_holes) == (
        True,
        8,
        7,
        4,
        16,
        4,
        8,
    )
    assert CLAMTissueDetector.preset("dhmc").mthresh == 6
    with pytest.raises(ValueError, match="unknown CLAM preset"):
        CLAMTissueDetector.preset("nope")


def test_combined_and_or():
    img = _pink_blob_image()
    a, b = OtsuTissueDetector(), HSVTissueDetector()
    ma, mb = a.detect(img, (1, 1)).mask, b.detect(img, (1, 1)).mask
    np.testing.assert_array_equal(CombinedTissueDetector([a, b], "and").detect(img, (1, 1)).mask, ma & mb)
    np.testing.assert_array_equal(CombinedTissueDetector([a, b], "or").detect(img, (1, 1)).mask, ma | mb)
    with pytest.raises(ValueError):
        CombinedTissueDetector([])


def test_mask_fraction_in_level0_box():
    grid = np.zeros((10, 10), bool)
    grid[:, :5] = True
    mask = TissueMask(grid, 8.0, 8.0)
    assert mask.fraction_in(0, 0, 40, 80) == 1.0
    assert mask.fraction_in(40, 0, 40, 80) == 0.0
    assert mask.fraction_in(0, 0, 80, 80) == 0.5
    windows = mask.window_fractions(2, 2)
    assert windows.shape == (9, 9) and windows[0, 3] == 1.0 and windows[0, 4] == 0.5


@pytest.mark.parametrize("bad", [dict(blur_ksize=4), dict(min_threshold=300), dict(channel="red")])
def test_otsu_rejects_bad_config(bad):
    with pytest.raises(ValueError):
        OtsuTissueDetector(**bad)
