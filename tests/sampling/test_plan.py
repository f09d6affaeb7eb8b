import pytest

from wsistream.errors import MissingMppError, ResolutionUnavailableError, SlideTooSmallError
from wsistream.sampling import RandomSampler, plan_read
from wsistream.types import SlideProperties


def props(mpp, dims=((40000, 30000), (10000, 7500), (2500, 1875)), ds=(1.0, 4.0, 16.0)):
    return SlideProperties("/s.svs", dims, ds, mpp, "slide" if mpp else "none", 40, "aperio", "openslide")


def test_40x_slide_at_0p5_reads_444_level0_pixels_not_224():
    plan = plan_read(props(0.252), 224, target_mpp=0.5)
    assert plan.level == 0 and plan.read_size == 444
    assert plan.mpp == pytest.approx(0.252 * 444 / 224)
    assert abs(plan.mpp - 0.5) / 0.5 < 0.002
    assert plan.footprint_level0 == 444


def test_level_within_tolerance_is_read_directly():
    plan = plan_read(props(0.499, ((8000, 8000), (2000, 2000)), (1.0, 4.0)), 224, target_mpp=0.5)
    assert plan.level == 0 and plan.read_size == 224 and not plan.needs_resize and plan.mpp == 0.499


def test_coarsest_level_not_coarser_than_target():
    # 0.25 µm/px, levels 1/4/16: target 2.0 µm/px -> level 1 (1.0 µm/px), read 448 -> 224
    plan = plan_read(props(0.25), 224, target_mpp=2.0)
    assert plan.level == 1 and plan.read_size == 448 and plan.mpp == pytest.approx(2.0)
    # target 4.0 -> level 2 (4.0) directly
    plan = plan_read(props(0.25), 224, target_mpp=4.0)
    assert plan.level == 2 and plan.read_size == 224


def test_fixed_level_records_native_mpp_or_none():
    assert plan_read(props(0.252), 512, level=0).mpp == 0.252
    assert plan_read(props(None), 512, level=0).mpp is None


def test_missing_mpp_is_an_error_naming_the_slide():
    with pytest.raises(MissingMppError, match=r"/s\.svs.*mpp_overrides"):
        plan_read(props(None), 224, target_mpp=0.5)


def test_upsampling_is_refused():
    with pytest.raises(ResolutionUnavailableError, match="finer than level 0"):
        plan_read(props(0.5), 224, target_mpp=0.25)
    assert plan_read(props(0.5), 224, target_mpp=0.25, allow_upsample=True).read_size == 112


def test_slide_smaller_than_patch():
    with pytest.raises(SlideTooSmallError, match="does not fit"):
        plan_read(props(0.5, ((100, 100),), (1.0,)), 224, level=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch_size=0), "patch_size"),
        (dict(level=0, target_mpp=0.5), "either"),
        (dict(target_mpp=-1), "target_mpp"),
        (dict(tissue_threshold=1.5), "tissue_threshold"),
        (dict(num_patches=0), "num_patches"),
        (dict(max_retries=0), "max_retries"),
    ],
)
def test_sampler_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomSampler(**kwargs)


def test_snap_moves_origins_onto_the_read_level_grid_and_inside_it():
    plan = plan_read(props(0.25), 224, target_mpp=2.0)  # level 1 (downsample 4), 448 px read
    assert plan.snap(1189, 3909, (10000, 7500)) == (1188, 3908)
    # a snapped origin never pushes the read past the level's edge
    x0, y0 = plan.snap(4 * (10000 - 448) + 3, 4 * (7500 - 448) + 3, (10000, 7500))
    assert x0 / 4 + 448 <= 10000 and y0 / 4 + 448 <= 7500
    assert plan_read(props(0.25), 224, target_mpp=0.25).snap(7.9, 3.2, (40000, 30000)) == (7, 3)
