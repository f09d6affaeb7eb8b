from __future__ import annotations

import math

import numpy as np
import pytest

from wsistream.views import CenterCrop, CropBox, RandomResizedCrop, Resize


def draw_boxes(crop, h, w, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return [crop.sample_box(rng, h, w) for _ in range(n)]


@pytest.mark.parametrize(
    ("scale", "shape"), [((0.32, 1.0), (224, 224)), ((0.05, 0.32), (224, 224)), ((0.2, 0.6), (160, 256))]
)
def test_rrc_boxes_respect_scale_ratio_and_bounds(scale, shape):
    h_img, w_img = shape
    crop = RandomResizedCrop(96, scale=scale)
    area = h_img * w_img
    for b in draw_boxes(crop, h_img, w_img):
        assert b.top >= 0 and b.left >= 0
        assert b.top + b.height <= h_img and b.left + b.width <= w_img
        slack = (0.5 * (b.width + b.height) + 0.25) / area  # from rounding w and h
        assert scale[0] - slack <= b.area / area <= scale[1] + slack
        rel = 0.5 / b.width + 0.5 / b.height + 1e-9
        assert 3 / 4 * (1 - rel) <= b.width / b.height <= 4 / 3 * (1 + rel)


def test_rrc_distribution_when_nothing_is_rejected():
    # small scales on a square image: the first attempt always fits, so the draws are the raw ones
    boxes = draw_boxes(RandomResizedCrop(96, scale=(0.05, 0.32)), 224, 224, n=3000)
    frac = np.array([b.area for b in boxes]) / 224**2
    log_ar = np.log([b.width / b.height for b in boxes])
    assert abs(frac.mean() - 0.185) < 0.01  # uniform area fraction
    assert abs(log_ar.mean()) < 0.01 and abs(log_ar.std() - 2 * math.log(4 / 3) / math.sqrt(12)) < 0.01
    lefts = np.array([b.left for b in boxes])
    assert lefts.min() == 0 and max(b.left + b.width for b in boxes) == 224  # placed anywhere


def test_rrc_fallback_centre_crop_clamped_to_ratio():
    crop = RandomResizedCrop(64, scale=(1.0, 1.0))  # full area never fits a 1:3 image at ratio <= 4/3
    wide = draw_boxes(crop, 100, 300, n=20)
    assert set(wide) == {CropBox(0, (300 - 133) // 2, 100, 133)}
    tall = draw_boxes(crop, 300, 100, n=20)
    assert set(tall) == {CropBox((300 - 133) // 2, 0, 133, 100)}
    square = draw_boxes(RandomResizedCrop(64, scale=(1.0, 1.0), ratio=(0.9, 1.1)), 50, 50, n=20)
    assert CropBox(0, 0, 50, 50) in square  # whole image allowed when its ratio is in range
    rng = np.random.default_rng(0)
    assert crop(np.zeros((100, 300, 3), np.uint8), rng).shape == (64, 64, 3)


def test_rrc_output_and_determinism(patch):
    crop = RandomResizedCrop(size=96, scale=(0.05, 0.32))
    a = crop(patch, np.random.default_rng(3))
    b = crop(patch, np.random.default_rng(3))
    c = crop(patch, np.random.default_rng(4))
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("interp", ["bicubic", "bilinear", "area", "nearest"])
@pytest.mark.parametrize("size", [16, 224, 400])
def test_resizing_keeps_flat_colour(interp, size):
    flat = np.full((150, 150, 3), (200, 120, 180), np.uint8)
    out = RandomResizedCrop(size, scale=(0.3, 1.0), interpolation=interp)(flat, np.random.default_rng(0))
    assert out.shape == (size, size, 3)
    assert np.abs(out.astype(int) - (200, 120, 180)).max() <= 1


def test_antialias_area_averages_when_shrinking():
    checker = ((np.indices((128, 128)).sum(axis=0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    smooth = Resize(32)(checker, np.random.default_rng(0))
    assert np.abs(smooth.astype(int) - 128).max() <= 1  # no aliasing
    aliased = Resize(32, antialias=False, interpolation="nearest")(checker, np.random.default_rng(0))
    assert np.abs(aliased.astype(int) - 128).min() > 100  # nearest picks one parity: all black


def test_default_interpolation_is_bicubic_as_dinov2():
    assert RandomResizedCrop(224).interpolation == "bicubic"
    assert RandomResizedCrop(224).ratio == pytest.approx((3 / 4, 4 / 3))


def test_center_crop_and_resize(patch):
    out = CenterCrop(100)(patch, np.random.default_rng(0))
    np.testing.assert_array_equal(out, patch[62:162, 62:162])
    assert CenterCrop(5).sample_box(None, 10, 11) == CropBox(2, 3, 5, 5)  # torchvision rounding
    with pytest.raises(ValueError, match="at least that large"):
        CenterCrop(300)(patch, np.random.default_rng(0))
    assert Resize(64)(patch, np.random.default_rng(0)).shape == (64, 64, 3)
    np.testing.assert_array_equal(Resize(224)(patch, np.random.default_rng(0)), patch)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, r"size must be an int >= 1"),
        ({"size": 2.5}, r"size must be an int >= 1"),
        ({"size": 96, "scale": (0.0, 0.3)}, r"0 < min <= max <= 1"),
        ({"size": 96, "scale": (0.3, 1.5)}, r"0 < min <= max <= 1"),
        ({"size": 96, "scale": (0.5, 0.2)}, r"min <= max.*pass \(0.2, 0.5\)"),
        ({"size": 96, "scale": 0.5}, r"scale must be a \(min, max\) pair"),
        ({"size": 96, "ratio": (-1.0, 2.0)}, r"ratio \(w/h\) must be positive"),
        ({"size": 96, "ratio": (2.0, 1.0)}, r"ratio must be \(min, max\)"),
        ({"size": 96, "interpolation": "lanczos"}, r"unknown interpolation 'lanczos'"),
    ],
)
def test_rrc_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomResizedCrop(**kwargs)


def test_crop_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        RandomResizedCrop(32)(np.zeros((40, 40, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        RandomResizedCrop(32)(np.zeros((40, 40), np.uint8), np.random.default_rng(0))


def test_pil_resize_is_torchvisions_resized_crop_on_pil_images(patch):
    """torchvision F.resized_crop on a PIL image = Image.crop((left, top, right, bottom)).resize(size, BICUBIC)."""
    from PIL import Image

    for size, scale in ((224, (0.32, 1.0)), (96, (0.05, 0.32))):
        crop = RandomResizedCrop(size, scale=scale, interpolation="bicubic", resize="pil")
        for seed in range(6):
            box = crop.sample_box(np.random.default_rng(seed), *patch.shape[:2])
            ours = crop.apply(patch, box)
            ref = Image.fromarray(patch).crop((box.left, box.top, box.left + box.width, box.top + box.height))
            np.testing.assert_array_equal(ours, np.asarray(ref.resize((size, size), Image.Resampling.BICUBIC)))
    with pytest.raises(ValueError, match="resize='bogus'"):
        RandomResizedCrop(16, resize="bogus")
