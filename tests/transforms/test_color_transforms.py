from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from wsistream.transforms import LUMA_WEIGHTS, ColorJitter, ColorJitterParams, RandomGrayscale, RandomSolarize


def params(**kw):
    order = tuple(i for i, k in enumerate(("brightness", "contrast", "saturation", "hue")) if k in kw)
    return ColorJitterParams(order, kw.get("brightness"), kw.get("contrast"), kw.get("saturation"), kw.get("hue"))


def luma(img):
    return img.astype(np.float64) @ LUMA_WEIGHTS.astype(np.float64)


def test_zero_strength_jitter_is_identity(he_patch):
    cj = ColorJitter(0, 0, 0, 0)
    assert all(r is None for r in cj.ranges.values())
    for seed in range(5):
        np.testing.assert_array_equal(cj(he_patch, np.random.default_rng(seed)), he_patch)
    # unit factors are the identity too
    out = ColorJitter(0.4, 0.4, 0.2, 0.1).apply(he_patch, params(brightness=1.0, contrast=1.0, saturation=1.0))
    np.testing.assert_array_equal(out, he_patch)


def test_ranges_follow_torchvision():
    r = ColorJitter(0.4, 0.4, 0.2, 0.1).ranges
    assert r["brightness"] == pytest.approx((0.6, 1.4))
    assert r["saturation"] == pytest.approx((0.8, 1.2))
    assert r["hue"] == pytest.approx((-0.1, 0.1))
    assert ColorJitter(brightness=1.5).ranges["brightness"] == (0.0, 2.5)  # lower end clipped at 0
    assert ColorJitter(contrast=(0.5, 0.9)).ranges["contrast"] == (0.5, 0.9)


def test_sampled_factors_in_range_and_order_random():
    cj = ColorJitter(0.4, 0.4, 0.2, 0.1)
    rng = np.random.default_rng(0)
    firsts, orders = [], set()
    for _ in range(2400):
        p = cj.sample_params(rng)
        assert sorted(p.order) == [0, 1, 2, 3]
        assert 0.6 <= p.brightness <= 1.4 and 0.6 <= p.contrast <= 1.4
        assert 0.8 <= p.saturation <= 1.2 and -0.1 <= p.hue <= 0.1
        firsts.append(p.order[0])
        orders.add(p.order)
    assert orders == set(itertools.permutations(range(4)))
    counts = np.bincount(firsts, minlength=4)
    assert np.all(np.abs(counts - 600) < 4.5 * np.sqrt(2400 * 0.25 * 0.75))


def pil_reference(img, name, f):
    """What torchvision's ``F.adjust_*`` do to the PIL images DINOv2 feeds them (Pillow is the reference)."""
    im = Image.fromarray(img)
    if name == "brightness":
        return np.asarray(ImageEnhance.Brightness(im).enhance(f))
    if name == "contrast":
        return np.asarray(ImageEnhance.Contrast(im).enhance(f))
    if name == "saturation":
        return np.asarray(ImageEnhance.Color(im).enhance(f))
    h, s, v = im.convert("HSV").split()  # torchvision.transforms._functional_pil.adjust_hue
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.uint8(int(f * 255) % 256)
    return np.asarray(Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB"))


def exact_hue_rotation(img, f):
    """The unquantised rotation: float HSV, H shifted by f turns."""
    hsv = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360 * f) % 360
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255


@pytest.fixture(scope="module")
def real_he(cmu_svs):
    """A 224-px patch of the real Aperio H&E slide, read through OpenSlide."""
    import openslide

    with openslide.OpenSlide(cmu_svs) as slide:
        return np.ascontiguousarray(np.asarray(slide.read_region((600, 400), 0, (224, 224)))[..., :3])


@pytest.mark.parametrize(
    ("name", "factors", "max_diff", "max_frac"),
    [
        ("brightness", (0.6, 0.83, 1.0, 1.27, 1.4, 2.5), 0, 0.0),
        ("contrast", (0.0, 0.6, 0.91, 1.33, 1.4), 0, 0.0),
        ("saturation", (0.0, 0.8, 0.97, 1.15, 1.2), 1, 0.001),
        ("hue", (-0.1, -0.03, 0.07, 0.1), 8, 0.02),  # shift rounded to 1/256 turn vs Pillow's int(f*255)
    ],
)
def test_each_op_matches_pillow_on_he(real_he, he_patch, name, factors, max_diff, max_frac):
    """Per-op uint8 semantics of torchvision's PIL path, pinned against Pillow itself on real and synthetic H&E."""
    cj = ColorJitter(brightness=2.0, contrast=0.4, saturation=1.0, hue=0.5)
    images = (real_he,) if name == "hue" else (real_he, he_patch)  # vivid synthetic hues: see the next test
    for img, f in itertools.product(images, factors):
        out = cj.apply(img, params(**{name: f}))
        assert out.dtype == np.uint8 and out.shape == img.shape
        diff = np.abs(out.astype(int) - pil_reference(img, name, f))
        assert diff.max() <= max_diff, (name, f, diff.max())
        assert (diff > 0).mean() <= max_frac, (name, f, (diff > 0).mean())
        assert diff.mean() <= max_frac, (name, f, diff.mean())


def test_saturation_and_contrast_extremes(he_patch):
    cj = ColorJitter(0.4, 0.4, 0.4)
    out = cj.apply(he_patch, params(saturation=0.0))
    assert np.all(out.max(axis=2) == out.min(axis=2))
    np.testing.assert_allclose(out[..., 0], luma(he_patch), atol=1)
    flat = cj.apply(he_patch, params(contrast=0.0))
    assert np.ptp(flat) == 0  # contrast 0 = uniform mean gray
    assert abs(int(flat[0, 0, 0]) - luma(he_patch).mean()) <= 0.5 + 1e-6


def test_order_matters_with_clipping():
    img = np.full((2, 2, 3), (250, 100, 20), np.uint8)
    cj = ColorJitter(0.5, 0.5)
    a = cj.apply(img, ColorJitterParams((0, 1), 1.4, 0.5, None, None))
    b = cj.apply(img, ColorJitterParams((1, 0), 1.4, 0.5, None, None))
    assert not np.array_equal(a, b)
    # each op re-quantises: the chain equals Pillow applied op by op
    ref = pil_reference(pil_reference(img, "brightness", 1.4), "contrast", 0.5)
    np.testing.assert_array_equal(a, ref)


def test_hue_on_saturated_colours_is_as_close_to_the_exact_rotation_as_pillow():
    """8-bit HSV (Pillow's and OpenCV's alike) quantises H to ~1/256 turn: up to ~2 % error on vivid colours."""
    cj = ColorJitter(hue=0.5)
    img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    for f in (-0.1, 0.1, 0.33):
        ref = exact_hue_rotation(img, f)
        ours = np.abs(cj.apply(img, params(hue=f)) - ref)
        pil = np.abs(pil_reference(img, "hue", f) - ref)
        assert ours.mean() <= max(1.5 * pil.mean(), 0.6), (f, ours.mean(), pil.mean())
        assert ours.max() <= 16
    red = np.zeros((3, 3, 3), np.uint8)
    red[..., 0] = 255
    green = cj.apply(red, params(hue=1 / 3)).astype(int)
    assert green[0, 0, 1] == 255 and green[0, 0, 2] == 0 and green[0, 0, 0] <= 12
    gray = np.full((3, 3, 3), 128, np.uint8)
    np.testing.assert_array_equal(cj.apply(gray, params(hue=0.37)), gray)


def test_hue_round_trip(he_patch):
    cj = ColorJitter(hue=0.5)
    back = cj.apply(cj.apply(he_patch, params(hue=0.21)), params(hue=-0.21))
    diff = np.abs(back.astype(int) - he_patch)
    assert diff.mean() < 1.0 and diff.max() <= 8  # two 8-bit HSV round trips


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"brightness": -0.1}, "brightness strength must be >= 0"),
        ({"hue": 0.6}, "hue strength must be <= 0.5"),
        ({"hue": (-0.7, 0.1)}, "hue range"),
        ({"contrast": (1.2, 0.8)}, "contrast range"),
        ({"saturation": (0.1, 0.2, 0.3)}, "saturation must be a number or a"),
        ({"p": 2}, "probability"),
    ],
)
def test_colorjitter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ColorJitter(**kwargs)


def test_grayscale(he_patch):
    out = RandomGrayscale(p=1.0)(he_patch, np.random.default_rng(0))
    assert out.shape == he_patch.shape
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    np.testing.assert_allclose(out[..., 0], luma(he_patch), atol=1)


def test_solarize_threshold_semantics():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = RandomSolarize(threshold=128, p=1.0)(img, np.random.default_rng(0))
    v = np.arange(256)
    np.testing.assert_array_equal(out[..., 0].ravel(), np.where(v >= 128, 255 - v, v))
    with pytest.raises(ValueError, match="threshold must be in"):
        RandomSolarize(threshold=300)


@pytest.mark.parametrize(("cls", "p"), [(RandomGrayscale, 0.2), (RandomSolarize, 0.2), (ColorJitter, 0.8)])
def test_firing_rates(cls, p):
    t = cls(p=p)
    rng = np.random.default_rng(5)
    n = 4000
    rate = sum(t.sample(rng) is not None for _ in range(n)) / n
    assert abs(rate - p) < 4.5 * np.sqrt(p * (1 - p) / n)
