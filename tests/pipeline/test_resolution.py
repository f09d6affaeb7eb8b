"""Exact physical resolution: the delivered µm/px is what was asked, and the pixels prove it."""

import itertools

import cv2
import numpy as np
import pytest

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import RandomSampler
from wsistream.tissue import OtsuTissueDetector


def _take(pipeline, n):
    return list(itertools.islice(iter(pipeline), n))


def _corr(a, b):
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("backend", [OpenSlideBackend(), TiffSlideBackend()], ids=lambda b: b.name)
def test_40x_slide_at_0p5_mpp_gives_444_level0_pixels_per_224_patch(backend, synthetic_40x_svs):
    pipe = PatchPipeline(
        slide_paths=[synthetic_40x_svs],
        backend=backend,
        tissue_detector=OtsuTissueDetector(),
        sampler=RandomSampler(patch_size=224, target_mpp=0.5, tissue_threshold=0.6),
        seed=1,
    )
    results = _take(pipe, 8)
    for r in results:
        c = r.coordinate
        assert r.image.shape == (224, 224, 3) and r.image.dtype == np.uint8
        assert (c.level, c.read_size, c.patch_size) == (0, 444, 224)
        assert abs(c.mpp - 0.5) / 0.5 < 0.02
        assert c.footprint_level0 == 444
        assert r.slide_metadata.properties.mpp_level0 == pytest.approx(0.252)
        assert r.slide_metadata.mpp_source == "slide"
    # the coordinate is enough to re-read exactly the same pixels
    with backend.open(synthetic_40x_svs) as h:
        c = results[0].coordinate
        region = h.read_region(c.x0, c.y0, c.level, (c.read_size, c.read_size))
        np.testing.assert_array_equal(
            cv2.resize(region, (c.patch_size, c.patch_size), interpolation=cv2.INTER_AREA), results[0].image
        )


def test_patch_equals_finer_level_downsampled(synthetic_40x_svs):
    # 2.0 µm/px on a 0.252 µm/px slide with levels 1/4/16 reads level 1 (1.008 µm/px);
    # the same footprint read from level 0 and area-downsampled must show the same tissue
    pipe = PatchPipeline(
        slide_paths=[synthetic_40x_svs],
        sampler=RandomSampler(patch_size=128, target_mpp=2.0, tissue_threshold=0.8),
        seed=3,
    )
    with OpenSlideBackend().open(synthetic_40x_svs) as h:
        for r in _take(pipe, 4):
            c = r.coordinate
            assert c.level == 1 and abs(c.mpp - 2.0) / 2.0 < 0.02
            fine = h.read_region(c.x0, c.y0, 0, (round(c.footprint_level0),) * 2)
            fine = cv2.resize(fine, (128, 128), interpolation=cv2.INTER_AREA)
            assert _corr(fine, r.image) > 0.9
            assert np.abs(fine.astype(int) - r.image.astype(int)).mean() < 8


def test_native_level0_records_real_mpp(cmu_svs, synthetic_40x_svs):
    pipe = PatchPipeline(
        slide_paths=[cmu_svs, synthetic_40x_svs],
        sampler=RandomSampler(patch_size=256, level=0),
        seed=0,
        patches_per_slide=3,
    )
    mpps = {r.coordinate.slide_path: r.coordinate.mpp for r in _take(pipe, 6)}
    assert mpps == {cmu_svs: pytest.approx(0.499), synthetic_40x_svs: pytest.approx(0.252)}


def test_tissue_threshold_is_met(cmu_svs):
    pipe = PatchPipeline(
        slide_paths=[cmu_svs],
        sampler=RandomSampler(patch_size=224, target_mpp=0.5, tissue_threshold=0.6),
        seed=0,
    )
    fractions = []
    for r in _take(pipe, 20):
        assert r.tissue_fraction >= 0.6
        # independent check on the pixels themselves: glass has HSV saturation < 10/255
        fractions.append((cv2.cvtColor(r.image, cv2.COLOR_RGB2HSV)[:, :, 1] > 20).mean())
    assert np.mean(fractions) > 0.6 and min(fractions) > 0.3


def test_mpp_override_and_fallback_are_recorded(shared_slide):
    boxes = shared_slide("boxes.tiff")  # no plausible µm/px in the file
    sampler = RandomSampler(patch_size=32, target_mpp=1.0, tissue_threshold=0.0)
    pipe = PatchPipeline(slide_paths=[boxes], sampler=sampler, mpp_overrides={"boxes.tiff": 0.5}, seed=0)
    r = _take(pipe, 1)[0]
    assert r.slide_metadata.mpp_source == "override" and r.coordinate.mpp == pytest.approx(1.0)
    assert (r.coordinate.level, r.coordinate.read_size) == (1, 32)  # level 1 = 2x = 1.0 µm/px, read directly
    pipe = PatchPipeline(slide_paths=[boxes], sampler=sampler, mpp_fallback=0.25, seed=0)
    r = _take(pipe, 1)[0]
    assert r.slide_metadata.mpp_source == "fallback"
    assert (r.coordinate.level, r.coordinate.read_size) == (2, 32)  # 0.25 x 4.02 = 1.005 µm/px, within 2 %


def test_mpp_override_csv(tmp_path, shared_slide):
    boxes = shared_slide("boxes.tiff")
    csv = tmp_path / "mpp.csv"
    csv.write_text("slide,mpp\nboxes,0.5\n")
    pipe = PatchPipeline(
        slide_paths=[boxes],
        sampler=RandomSampler(patch_size=32, target_mpp=1.0, tissue_threshold=0.0),
        mpp_overrides=str(csv),
        seed=0,
    )
    assert _take(pipe, 1)[0].slide_metadata.mpp_source == "override"
    with pytest.raises(ValueError, match="µm/px"):
        PatchPipeline(slide_paths=[boxes], sampler=RandomSampler(), mpp_overrides={"boxes": float("nan")})


def test_level0_footprint_is_a_deprecated_name_of_footprint_level0():
    from wsistream.types import PatchCoordinate

    c = PatchCoordinate(
        x0=0, y0=0, level=1, read_size=111, patch_size=224, mpp=0.5, slide_path="s.svs", level_downsample=4.0
    )
    assert c.footprint_level0 == 444.0
    with pytest.warns(DeprecationWarning, match="renamed footprint_level0"):
        assert c.level0_footprint == 444.0


def test_slide_properties_mpp_is_a_deprecated_name_of_mpp_level0(written_20x):
    with OpenSlideBackend().open(written_20x) as handle:
        props = handle.properties
    assert props.mpp_level0 == pytest.approx(0.5) and props.to_dict()["mpp_level0"] == props.mpp_level0
    with pytest.warns(DeprecationWarning, match="renamed mpp_level0"):
        assert props.mpp == props.mpp_level0


def test_overview_side_is_one_default_and_thumbnail_size_its_deprecated_name(written_20x):
    from wsistream.features import DeepZoomTiling, GridTiling
    from wsistream.tissue import DEFAULT_OVERVIEW_SIDE

    pipe = PatchPipeline(slide_paths=[written_20x], sampler=RandomSampler())
    assert DEFAULT_OVERVIEW_SIDE == 1024
    assert pipe.overview_side == DeepZoomTiling().overview_side == GridTiling().overview_side == DEFAULT_OVERVIEW_SIDE
    with pytest.warns(DeprecationWarning, match="renamed overview_side"):
        old = PatchPipeline(slide_paths=[written_20x], sampler=RandomSampler(), thumbnail_size=(512, 300))
    assert old.overview_side == 512 and old.thumbnail_size is None
    assert _take(old, 1)[0].coordinate.slide_path == written_20x
    with pytest.warns(DeprecationWarning, match="max_overview_side is renamed overview_side"):
        assert old.max_overview_side == 512
    with pytest.raises(ValueError, match="pass overview_side only"):
        PatchPipeline(slide_paths=[written_20x], sampler=RandomSampler(), thumbnail_size=512, overview_side=256)
    with pytest.raises(ValueError, match="overview_side must be >= 16"):
        PatchPipeline(slide_paths=[written_20x], sampler=RandomSampler(), overview_side=8)
