from __future__ import annotations

import numpy as np
import pytest

from wsistream.transforms import ColorJitter, GaussianBlur, RandomHorizontalFlip, RandomRotate90, TraceEvent
from wsistream.views import CenterCrop, CropBox, RandomResizedCrop, ViewConfig, render_views


def seed_views():
    return [
        ViewConfig(name="global", crop=RandomResizedCrop(size=224, scale=(0.32, 1.0)), count=2),
        ViewConfig(name="local", crop=RandomResizedCrop(size=96, scale=(0.05, 0.32)), count=8),
    ]


def test_keys_order_shapes_dtypes(patch):
    out = render_views(patch, seed_views(), np.random.default_rng(0))
    assert list(out) == ["global_0", "global_1"] + [f"local_{i}" for i in range(8)]
    for key, img in out.items():
        side = 224 if key.startswith("global") else 96
        assert img.shape == (side, side, 3) and img.dtype == np.uint8
        assert img.flags.c_contiguous and not np.may_share_memory(img, patch)


def test_deterministic_and_input_untouched(patch):
    views = [
        *seed_views(),
        ViewConfig("aug", CenterCrop(128), [RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.2, 0.1)]),
    ]
    before = patch.copy()
    a = render_views(patch, views, np.random.default_rng(42))
    b = render_views(patch, views, np.random.default_rng(42))
    c = render_views(patch, views, np.random.default_rng(43))
    np.testing.assert_array_equal(patch, before)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_copies_are_independent(patch):
    out = render_views(patch, seed_views(), np.random.default_rng(0))
    assert not np.array_equal(out["local_0"], out["local_1"])


def test_raw_view_is_a_copy_and_views_can_be_non_contiguous_internally(patch):
    out = render_views(
        patch,
        [ViewConfig("raw"), ViewConfig("rot", transforms=RandomRotate90(p=1.0))],
        np.random.default_rng(1),
    )
    np.testing.assert_array_equal(out["raw_0"], patch)
    assert not np.may_share_memory(out["raw_0"], patch)
    assert out["rot_0"].flags.c_contiguous


def test_mpp_override_reads_once_per_resolution(patch, patch_factory):
    calls = []
    low = patch_factory(seed=9)

    def read_at_mpp(mpp):
        calls.append(mpp)
        return low

    views = [
        ViewConfig("hi", CenterCrop(64)),
        ViewConfig("lo", CenterCrop(64), count=3, mpp_override=2.0),
        ViewConfig("lo2", CenterCrop(64), mpp_override=2.0),
    ]
    out = render_views(patch, views, np.random.default_rng(0), read_at_mpp)
    assert calls == [2.0]
    np.testing.assert_array_equal(out["hi_0"], patch[80:144, 80:144])
    np.testing.assert_array_equal(out["lo_2"], low[80:144, 80:144])
    with pytest.raises(ValueError, match="no read_at_mpp was given"):
        render_views(patch, views, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"read_at_mpp\(2.0\) result must be a uint8"):
        render_views(patch, views, np.random.default_rng(0), lambda m: low.astype(np.float32))


def test_trace_records_crop_box_and_ops(patch):
    views = [ViewConfig("v", RandomResizedCrop(64), [RandomHorizontalFlip(p=1.0), GaussianBlur(p=0.0)], count=2)]
    trace: dict[str, list[TraceEvent]] = {}
    traced = render_views(patch, views, np.random.default_rng(5), trace=trace)
    plain = render_views(patch, views, np.random.default_rng(5))
    for k in plain:
        np.testing.assert_array_equal(traced[k], plain[k])
    assert list(trace) == ["v_0", "v_1"]
    crop, flip, blur = trace["v_0"]
    assert crop.op == "RandomResizedCrop" and isinstance(crop.params, CropBox)
    assert (flip.op, flip.fired, blur.op, blur.fired) == ("RandomHorizontalFlip", True, "GaussianBlur", False)


def test_bad_inputs(patch):
    with pytest.raises(ValueError, match="views is empty"):
        render_views(patch, [], np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 H×W×3"):
        render_views(patch[..., :2], seed_views(), np.random.default_rng(0))
