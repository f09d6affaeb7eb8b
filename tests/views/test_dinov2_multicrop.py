from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from wsistream.transforms import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomSolarize,
)
from wsistream.views import RandomResizedCrop, dinov2_multicrop, render_views, validate_views

# DataAugmentationDINO (dinov2/data/augmentations.py): probability that each op fires, per view kind
STATED = {
    "global_0": {
        "RandomHorizontalFlip": 0.5,
        "ColorJitter": 0.8,
        "RandomGrayscale": 0.2,
        "GaussianBlur": 1.0,
    },
    "global_1": {
        "RandomHorizontalFlip": 0.5,
        "ColorJitter": 0.8,
        "RandomGrayscale": 0.2,
        "GaussianBlur": 0.1,
        "RandomSolarize": 0.2,
    },
    "local": {"RandomHorizontalFlip": 0.5, "ColorJitter": 0.8, "RandomGrayscale": 0.2, "GaussianBlur": 0.5},
}


def kind(key: str) -> str:
    return "local" if key.startswith("local") else key


def test_names_sizes_and_dtypes(patch):
    views = dinov2_multicrop()
    validate_views(views)
    out = render_views(patch, views, np.random.default_rng(0))
    assert list(out) == ["global_0", "global_1"] + [f"local_{i}" for i in range(8)]
    assert all(out[k].shape == ((224, 224, 3) if k.startswith("global") else (96, 96, 3)) for k in out)
    assert all(v.dtype == np.uint8 and v.flags.c_contiguous for v in out.values())
    assert [n for v in dinov2_multicrop(n_local=0) for n in v.view_names()] == ["global_0", "global_1"]
    assert len(dinov2_multicrop(n_local=2)[2].view_names()) == 2


def test_chain_matches_dinov2_source():
    g0, g1, loc = dinov2_multicrop()
    for v, size, scale in ((g0, 224, (0.32, 1.0)), (g1, 224, (0.32, 1.0)), (loc, 96, (0.05, 0.32))):
        assert v.crop == RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), interpolation="bicubic")
        flip, jitter, gray, *extra = v.transforms.transforms
        assert flip == RandomHorizontalFlip(p=0.5)
        assert jitter == ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)
        assert gray == RandomGrayscale(p=0.2)
        assert extra[0] == GaussianBlur(p={"global": 1.0 if v is g0 else 0.1, "local": 0.5}[v.name])
        assert extra[0].kernel_size == 9 and (extra[0].radius_min, extra[0].radius_max) == (0.1, 2.0)
    assert g1.transforms.transforms[-1] == RandomSolarize(threshold=128, p=0.2)
    assert len(g0.transforms) == 4 and len(loc.transforms) == 4


def measured_rates(views, n, seed=0):
    """Fraction of renders in which each op fired, per view kind, from render_views traces."""
    img = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    fired: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[str, int] = defaultdict(int)
    for _ in range(n):
        trace = {}
        render_views(img, views, rng, trace=trace)
        for key, events in trace.items():
            total[kind(key)] += 1
            for e in events[1:]:  # events[0] is the crop
                fired[kind(key)][e.op] += bool(e.fired)
    return {k: {op: fired[k][op] / total[k] for op in STATED[k]} for k in total}, total


def assert_rates(rates, total, expected):
    for k, ops in expected.items():
        for op, p in ops.items():
            tol = 4.5 * np.sqrt(p * (1 - p) / total[k]) + 1e-12
            assert abs(rates[k][op] - p) <= tol, (k, op, rates[k][op], p)


def test_firing_rates_match_dinov2_probabilities():
    # small output sizes: probabilities do not depend on them, and 2000 renders stay fast
    views = dinov2_multicrop(global_size=24, local_size=12)
    rates, total = measured_rates(views, 2000)
    assert total == {"global_0": 2000, "global_1": 2000, "local": 16000}
    assert_rates(rates, total, STATED)
    assert "RandomSolarize" not in rates["global_0"] and "RandomSolarize" not in rates["local"]


def test_released_blur_reproduces_inverted_probabilities():
    views = dinov2_multicrop(global_size=24, local_size=12, n_local=2, released_blur=True)
    rates, total = measured_rates(views, 1000, seed=1)
    assert_rates(
        rates,
        total,
        {
            "global_0": {"GaussianBlur": 0.0},
            "global_1": {"GaussianBlur": 0.9},
            "local": {"GaussianBlur": 0.5},
        },
    )


def test_blur_actually_changes_pixels_when_traced_as_fired(patch):
    views = dinov2_multicrop(n_local=0)
    for seed in range(3):
        trace = {}
        out = render_views(patch, views, np.random.default_rng(seed), trace=trace)
        blur = next(e for e in trace["global_0"] if e.op == "GaussianBlur")
        assert blur.fired and 0.1 <= blur.params <= 2.0
        assert out["global_0"].shape == (224, 224, 3)


def test_bad_n_local():
    with pytest.raises(ValueError, match="n_local must be an int >= 0"):
        dinov2_multicrop(n_local=-1)
    with pytest.raises(ValueError, match="0 < min <= max <= 1"):
        dinov2_multicrop(local_scale=(0.0, 0.3))
