from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from wsistream.transforms import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomSolarize,
)
from wsistream.views import dinov2_multicrop, render_views, validate_views

#: The chain DINOv2's own DataAugmentationDINO builds (recorded from its code, with provenance)
DINOV2 = json.loads((Path(__file__).parent / "fixtures" / "dinov2_chain.json").read_text())


def reference_chain(kind: str) -> list[tuple[str, float, dict]]:
    """(op, probability torchvision applies it with, its arguments) in DINOv2's order, normalisation left out."""

    def flat(node: dict) -> list[tuple[str, float, dict]]:
        kind, kw = node["type"], node["kwargs"]
        if kind == "Compose":
            return [op for child in node["args"][0] for op in flat(child)]
        if kind == "RandomApply":
            return [(child["type"], kw["p"], child["kwargs"]) for child in node["args"][0]]
        if kind == "GaussianBlur" and "transforms" in kw:  # DINOv2's RandomApply subclass
            return [("GaussianBlur", kw["p"], kw["transforms"][0]["kwargs"])]
        if kind in ("ToTensor", "Normalize"):
            return []
        if kind == "RandomResizedCrop":
            return [(kind, 1.0, {**kw, "size": node["args"][0]})]
        return [(kind, kw.get("p", 1.0), kw)]

    geometric = DINOV2["geometric_local" if kind == "local" else "geometric_global"]
    return flat(geometric) + flat(DINOV2[kind])


#: What the released code applies (from the fixture), per view kind
RELEASED = {k: {op: p for op, p, _ in reference_chain(k)[1:]} for k in ("global_0", "global_1", "local")}
#: The probabilities the paper states (Oquab et al. 2023; DINOv2's ``GaussianBlur(p=...)`` arguments)
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


def _ours(view) -> list[tuple[str, float, dict]]:
    crop = view.crop
    ops = [("RandomResizedCrop", 1.0, {"size": crop.size, "scale": list(crop.scale), "interpolation": "BICUBIC"})]
    for t in view.transforms.transforms:
        kw = {
            RandomHorizontalFlip: lambda t: {"p": t.p},
            ColorJitter: lambda t: {
                "brightness": t.brightness,
                "contrast": t.contrast,
                "saturation": t.saturation,
                "hue": t.hue,
            },
            RandomGrayscale: lambda t: {"p": t.p},
            GaussianBlur: lambda t: {"kernel_size": t.kernel_size, "sigma": [t.radius_min, t.radius_max]},
            RandomSolarize: lambda t: {"threshold": t.threshold, "p": t.p},
        }[type(t)](t)
        ops.append((type(t).__name__, t.p, kw))
    return ops


def test_chain_equals_the_chain_dinov2s_code_builds():
    """Ops, order, arguments and application probabilities equal DataAugmentationDINO's (fixture)."""
    g0, g1, loc = dinov2_multicrop()
    for view, key in ((g0, "global_0"), (g1, "global_1"), (loc, "local")):
        assert _ours(view) == reference_chain(key), key
        assert view.crop.ratio == (3 / 4, 4 / 3)  # torchvision's default, which DINOv2 keeps
    assert [p for op, p, _ in reference_chain("global_0") if op == "GaussianBlur"] == [0.0]


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


def test_firing_rates_match_the_released_code():
    """Measured: each op fires as often as torchvision applies it in DINOv2's chain (0.0 / 0.9 / 0.5 blur)."""
    # small output sizes: probabilities do not depend on them, and 2000 renders stay fast
    views = dinov2_multicrop(global_size=24, local_size=12)
    rates, total = measured_rates(views, 2000)
    assert total == {"global_0": 2000, "global_1": 2000, "local": 16000}
    assert_rates(rates, total, RELEASED)
    assert rates["global_0"]["GaussianBlur"] == 0.0
    assert "RandomSolarize" not in rates["global_0"] and "RandomSolarize" not in rates["local"]


def test_paper_blur_option_fires_at_the_stated_probabilities():
    views = dinov2_multicrop(global_size=24, local_size=12, n_local=2, released_blur=False)
    rates, total = measured_rates(views, 1000, seed=1)
    assert_rates(rates, total, STATED)
    assert rates["global_0"]["GaussianBlur"] == 1.0


def test_blur_actually_changes_pixels_when_traced_as_fired(patch):
    views = dinov2_multicrop(n_local=0, released_blur=False)
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


@pytest.mark.parametrize("blur", ["released", "paper"])
def test_phikon_v2_recipe_views_fire_as_dinov2(blur, cmu_svs):
    """The Phikon-v2 recipe's views: DINOv2's chain, measured firing rates = the released code's (or the paper's)."""
    from wsistream.recipes import build_pipeline

    views = build_pipeline("phikon-v2", [cmu_svs], views=True, blur=blur).views
    for view, key in zip(views, ("global_0", "global_1", "local"), strict=True):
        expected = [(op, p if op != "GaussianBlur" or blur == "released" else STATED[key][op], kw)
                    for op, p, kw in reference_chain(key)]  # fmt: skip
        assert _ours(view) == expected, key
    small = [dataclasses.replace(v, crop=dataclasses.replace(v.crop, size=16)) for v in views]  # fast renders
    rates, total = measured_rates(small, 600, seed=2)
    assert_rates(rates, total, RELEASED if blur == "released" else STATED)
