from collections import Counter

import pytest

from wsistream.errors import NoUsableSlidesError, ResolutionUnavailableError
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import ContinuousMagnificationSampler, MultiMagnificationSampler


def test_multi_magnification_reads_each_resolution_exactly(synthetic_40x_svs):
    sampler = MultiMagnificationSampler(patch_size=64, target_mpps=(0.5, 1.0, 4.0), tissue_threshold=0.5)
    pipe = PatchPipeline(slide_paths=[synthetic_40x_svs], sampler=sampler, patches_per_slide=60, seed=2)
    results = list(pipe)
    by_mpp = Counter(round(r.coordinate.mpp, 1) for r in results)
    assert set(by_mpp) == {0.5, 1.0, 4.0} and sum(by_mpp.values()) == 60
    for r in results:
        c = r.coordinate
        assert r.image.shape == (64, 64, 3)
        target = min((0.5, 1.0, 4.0), key=lambda m: abs(m - c.mpp))
        assert abs(c.mpp - target) / target < 0.02
        # the coarsest level not coarser than the target: 0.252 x (1, 4, 16) = 0.252 / 1.008 / 4.03 µm/px,
        # the last two within 2 % of 1.0 and 4.0 (read directly)
        assert c.level == {0.5: 0, 1.0: 1, 4.0: 2}[target]


def test_multi_magnification_weights_and_unavailable_resolution(cmu_svs):
    sampler = MultiMagnificationSampler(patch_size=32, target_mpps=(0.5, 2.0), weights=(0.0, 1.0))
    pipe = PatchPipeline(slide_paths=[cmu_svs], sampler=sampler, patches_per_slide=10)
    assert {round(r.coordinate.mpp, 2) for r in pipe} == {2.0}
    # 0.25 µm/px is finer than this 20x slide: the slide fails, named, instead of dropping 40x silently
    pipe = PatchPipeline(slide_paths=[cmu_svs], sampler=MultiMagnificationSampler(target_mpps=(0.25, 0.5)))
    with pytest.raises(NoUsableSlidesError):
        list(pipe)
    [failure] = pipe.failures
    assert failure.error_type == ResolutionUnavailableError.__name__ and failure.slide_path == cmu_svs
    assert "0.25" in failure.message


def test_continuous_magnification_range(synthetic_40x_svs):
    sampler = ContinuousMagnificationSampler(patch_size=48, mpp_range=(0.5, 2.0), tissue_threshold=0.3)
    pipe = PatchPipeline(slide_paths=[synthetic_40x_svs], sampler=sampler, patches_per_slide=40, seed=1)
    mpps = [r.coordinate.mpp for r in pipe]
    assert len(mpps) == 40 and min(mpps) >= 0.5 * 0.98 and max(mpps) <= 2.0 * 1.02
    assert len({round(m, 3) for m in mpps}) > 20  # really continuous
    assert sum(m < 1.0 for m in mpps) > 8 and sum(m > 1.0 for m in mpps) > 8  # log-uniform: half below 1.0


@pytest.mark.parametrize("bad", [dict(target_mpps=()), dict(weights=(1.0,)), dict(target_mpps=(0.5, -1))])
def test_multi_bad_config(bad):
    with pytest.raises(ValueError):
        MultiMagnificationSampler(**bad)


def test_magnification_samplers_refuse_without_replacement(cmu_svs):
    with pytest.raises(ValueError, match="without_replacement"):
        PatchPipeline(
            slide_paths=[cmu_svs], sampler=ContinuousMagnificationSampler(), replacement="without_replacement"
        )
