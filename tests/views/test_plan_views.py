"""plan_views draws exactly render_views' random choices, without pixels."""

from __future__ import annotations

import numpy as np
import pytest

from wsistream.transforms import ColorJitter, GaussianBlur, MacenkoNormalizer, PatchTransform, RandomHorizontalFlip
from wsistream.views import (
    OP_FIELDS,
    Crop,
    RandomResizedCrop,
    ViewConfig,
    dinov2_multicrop,
    plan_layout,
    plan_views,
    render_plan,
    render_views,
)


def test_plan_consumes_the_rng_exactly_as_render(patch):
    views = dinov2_multicrop()
    for seed in range(5):
        rng_render, rng_plan = np.random.default_rng(seed), np.random.default_rng(seed)
        trace: dict = {}
        render_views(patch, views, rng_render, trace=trace)
        plans = plan_views(views, *patch.shape[:2], rng_plan)
        assert rng_render.random() == rng_plan.random()  # same number of draws
        assert list(plans) == list(trace)
        for key, events in trace.items():
            layout = plan_layout(next(v for v in views if key in v.view_names()))
            vector = plans[key]
            assert vector.dtype == np.float64 and vector.shape == (sum(len(p.fields) for p in layout),)
            box = events[0].params
            crop = layout[0]
            assert [vector[crop.column(f)] for f in ("top", "left", "height", "width")] == [
                box.top,
                box.left,
                box.height,
                box.width,
            ]
            for planned, event in zip(layout[1:], events[1:], strict=True):
                assert vector[planned.column("fired")] == float(event.fired)
                if isinstance(planned.op, GaussianBlur) and event.fired:
                    assert vector[planned.column("sigma")] == pytest.approx(event.params, rel=1e-6)
                if isinstance(planned.op, ColorJitter) and event.fired:
                    order = [vector[planned.column(f"order{i}")] for i in range(4)]
                    assert order == list(event.params.order)
                    assert vector[planned.column("hue")] == pytest.approx(event.params.hue, rel=1e-6)


def test_disabled_jitter_factors_are_nan():
    view = ViewConfig("v", RandomResizedCrop(32), [ColorJitter(brightness=0.4, p=1.0)])
    vector = plan_views([view], 64, 64, np.random.default_rng(0))["v_0"]
    (crop, jitter) = plan_layout(view)
    assert not np.isnan(vector[jitter.column("brightness")])
    assert all(np.isnan(vector[jitter.column(f)]) for f in ("contrast", "saturation", "hue"))
    assert crop.fields == OP_FIELDS[Crop]


class _Invert(PatchTransform):
    """A user transform: the device has no kernel for it."""

    def __call__(self, image, rng):
        return 255 - image


@pytest.mark.parametrize(
    ("view", "match"),
    [
        (ViewConfig("v", RandomResizedCrop(32), [MacenkoNormalizer()]), "MacenkoNormalizer cannot be replayed on the"),
        (ViewConfig("v", RandomResizedCrop(32), [_Invert()]), "_Invert cannot be replayed"),
        (ViewConfig("v", RandomResizedCrop(32), mpp_override=1.0), "mpp_override=1.0"),
        (ViewConfig("v", None, [RandomHorizontalFlip(), RandomResizedCrop(32)]), "make it the view's crop="),
    ],
)
def test_ops_the_device_cannot_replay_are_named(view, match):
    with pytest.raises(ValueError, match=match):
        plan_views([view], 64, 64, np.random.default_rng(0))


def test_a_plan_holds_everything_render_views_draws(patch):
    """render_plan(plan_views(rng)) is render_views(rng), pixel for pixel: plans lose nothing."""
    from wsistream.transforms import HEDJitter, RandomRotate90, RandomVerticalFlip

    views = [
        *dinov2_multicrop(n_local=3),
        ViewConfig("stain", RandomResizedCrop(64), [RandomRotate90(), RandomVerticalFlip(), HEDJitter(sigma=0.1)]),
        ViewConfig("whole", None, [ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.5), GaussianBlur(p=0.5)], count=3),
    ]
    for seed in range(6):
        rendered = render_views(patch, views, np.random.default_rng(seed))
        replayed = render_plan(patch, views, plan_views(views, *patch.shape[:2], np.random.default_rng(seed)))
        assert list(replayed) == list(rendered)
        for key, view in rendered.items():
            np.testing.assert_array_equal(replayed[key], view, err_msg=key)
            assert replayed[key].flags.c_contiguous and not np.may_share_memory(replayed[key], patch)
