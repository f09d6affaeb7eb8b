"""CLAM's per-contour grid equals the coordinates CLAM's and GPFM's own code write, on every shared slide."""

import json
from pathlib import Path

import numpy as np
import openslide
import pytest

from wsistream.backends import OpenSlideBackend
from wsistream.recipes import build_pipeline
from wsistream.sampling import CLAMGridSampler
from wsistream.tissue import CLAM_PRESET_PADDING, CLAMTissueDetector, best_level_for_downsample

FIXTURE = json.loads((Path(__file__).parents[1] / "recipes" / "fixtures" / "clam_grid.json").read_text())
SHARED = ["CMU-1-Small-Region.svs", "synthetic-40x.svs", "test3-DAPI-2.ndpi", "boxes.tiff"]

#: fixture run -> (our preset, detector overrides); "small" is the fixture's own preset (a_t=0.05, a_h=0.01)
RUNS = {
    "gpfm/tcga": ("tcga", {}),
    "gpfm/bcnb": ("bcnb", {}),
    "clam/tcga": ("tcga-clam", {}),
    "gpfm/small": ("tcga", {"use_otsu": False, "a_t": 0.05, "a_h": 0.01}),
    "clam/small": ("tcga-clam", {"a_t": 0.05, "a_h": 0.01}),
}


def _ours(run: str, slide: str, shared_slide) -> list[list[int]]:
    preset, overrides = RUNS[run]
    detector = CLAMTissueDetector.preset(preset, **overrides)
    sampler = CLAMGridSampler(
        patch_size=FIXTURE["runs"][run]["patch_size"],
        use_padding=CLAM_PRESET_PADDING[preset],
        min_patches_per_contour=2 if run.startswith("gpfm") else 1,
    )
    with OpenSlideBackend().open(shared_slide(slide)) as handle:
        mask = detector.detect_slide(handle, handle.properties, 2048)
        return [[p.x0, p.y0] for p in sampler.grid(mask, handle.properties)]


def test_fixture_has_provenance_and_covers_every_shared_slide():
    prov = FIXTURE["provenance"]
    assert prov["gpfm"]["repo"] == "birkhoffkiki/GPFM" and len(prov["gpfm"]["commit"]) == 40
    assert prov["clam"]["repo"] == "mahmoodlab/CLAM" and len(prov["clam"]["commit"]) == 40
    for run in FIXTURE["runs"].values():
        assert sorted(run["slides"]) == sorted(SHARED) and run["commands"]


@pytest.mark.parametrize("run", sorted(RUNS))
def test_clam_grid_equals_clam_coordinates(run, shared_slide):
    """Same origins, same count, same order as the .h5 files CLAM/GPFM wrote (tests/recipes/fixtures)."""
    for slide in SHARED:
        reference = FIXTURE["runs"][run]["slides"][slide]["coords"]
        assert _ours(run, slide, shared_slide) == reference, f"{run} on {slide}"


def test_fixture_exercises_edges_drops_and_many_contours():
    runs = FIXTURE["runs"]
    # the one-patch contour of boxes.tiff: GPFM drops it (len > 1), CLAM keeps it (len > 0)
    assert runs["gpfm/small"]["slides"]["boxes.tiff"]["extracted_per_contour"] == [1]
    assert runs["gpfm/small"]["slides"]["boxes.tiff"]["coords"] == []
    assert len(runs["clam/small"]["slides"]["boxes.tiff"]["coords"]) == 1
    assert len(runs["clam/small"]["slides"]["CMU-1-Small-Region.svs"]["extracted_per_contour"]) > 50
    # padded (tcga) grids run past the slide; BCNB's does not
    w, h = openslide.OpenSlide(str(Path(__file__).parents[2].parent / "shared" / "data" / SHARED[1])).dimensions
    tcga = np.array(runs["gpfm/tcga"]["slides"][SHARED[1]]["coords"])
    bcnb = np.array(runs["gpfm/bcnb"]["slides"][SHARED[1]]["coords"])
    assert ((tcga[:, 0] + 512 > w) | (tcga[:, 1] + 512 > h)).any()
    assert ((bcnb[:, 0] + 512 <= w) & (bcnb[:, 1] + 512 <= h)).all()


def test_padded_edge_patches_are_what_clam_reads(synthetic_40x_svs):
    """Out-of-slide pixels: openslide read_region(...).convert('RGB'), as CLAM/GPFM read patches (black)."""
    pipe = build_pipeline("gpfm", [synthetic_40x_svs], coverage=True)
    ref = openslide.OpenSlide(synthetic_40x_svs)
    w, h = ref.dimensions
    edge = [r for r in pipe if r.coordinate.x0 + 512 > w or r.coordinate.y0 + 512 > h]
    assert len(edge) == 3  # of GPFM's 118 on this slide
    for r in edge:
        x0, y0 = r.coordinate.x0, r.coordinate.y0
        expected = np.asarray(ref.read_region((x0, y0), 0, (512, 512)).convert("RGB"))
        np.testing.assert_array_equal(r.image, expected)
        outside = (np.arange(512)[None, :] + x0 >= w) | (np.arange(512)[:, None] + y0 >= h)
        assert outside.any() and (r.image[outside] == 0).all()


@pytest.mark.parametrize("slide", SHARED)
def test_segmentation_level_is_openslides_best_level(slide, shared_slide):
    osr = openslide.OpenSlide(shared_slide(slide))
    downsamples = tuple(float(d) for d in osr.level_downsamples)
    for d in (0.5, 1, 1.9, 2, 3.99, 4, 7, 16, 63.9, 64, 64.1, 1000):
        assert best_level_for_downsample(downsamples, d) == osr.get_best_level_for_downsample(d), (slide, d)


def test_detector_segments_clams_level_not_the_overview(synthetic_40x_svs):
    det = CLAMTissueDetector.preset("tcga")
    with OpenSlideBackend().open(synthetic_40x_svs) as handle:
        image, downsample = det.segmentation_image(handle, handle.properties)
        assert image.shape[:2] == (375, 500) and downsample == (16.0, 16.0)  # level 2 (÷16), best for 64
        mask = det.detect_slide(handle, handle.properties, 1024)
        assert mask.mask.shape == (375, 500)
        overview = CLAMTissueDetector.preset("tcga", seg_downsample=None).detect_slide(handle, handle.properties, 2048)
        assert overview.mask.shape != mask.mask.shape


def test_clam_grid_rejects_bad_configuration():
    with pytest.raises(ValueError, match="four_pt"):
        CLAMGridSampler(contour_fn="basic")
    with pytest.raises(ValueError, match="GPFM: 2"):
        CLAMGridSampler(min_patches_per_contour=0)
    with pytest.raises(ValueError, match="grey level"):
        CLAMGridSampler(pad_value=300)
    with pytest.raises(ValueError, match="seg_downsample"):
        CLAMTissueDetector(seg_downsample=0.5)
