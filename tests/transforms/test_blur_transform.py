from __future__ import annotations

import numpy as np
import pytest

from wsistream.transforms import GaussianBlur, gaussian_kernel1d


def reference_blur(img: np.ndarray, sigma: float, k: int = 9) -> np.ndarray:
    """torchvision semantics: separable kernel, reflect padding (no edge repeat), round."""
    x = np.arange(k) - (k - 1) / 2
    ker = np.exp(-0.5 * (x / sigma) ** 2)
    ker /= ker.sum()
    pad = k // 2
    f = np.pad(img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    rows = sum(ker[i] * f[:, i : i + img.shape[1]] for i in range(k))
    out = sum(ker[i] * rows[i : i + img.shape[0]] for i in range(k))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_kernel():
    k = gaussian_kernel1d(9, 1.3)
    assert k.shape == (9,) and k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k[::-1])
    assert np.argmax(k) == 4


@pytest.mark.parametrize("sigma", [0.1, 0.7, 2.0])
def test_matches_torchvision_semantics(he_patch, sigma):
    out = GaussianBlur(p=1.0).apply(he_patch, sigma)
    ref = reference_blur(he_patch, sigma)
    assert np.abs(out.astype(int) - ref).max() <= 1
    assert out.shape == he_patch.shape and out.dtype == np.uint8


def test_blur_smooths_and_keeps_constants(he_patch):
    out = GaussianBlur(p=1.0).apply(he_patch, 2.0)
    assert (
        np.abs(np.diff(out.astype(float), axis=1)).mean() < 0.7 * np.abs(np.diff(he_patch.astype(float), axis=1)).mean()
    )
    flat = np.full((20, 20, 3), 77, np.uint8)
    np.testing.assert_array_equal(GaussianBlur(p=1.0).apply(flat, 1.5), flat)


def test_sigma_range():
    t = GaussianBlur(p=1.0, radius_min=0.1, radius_max=2.0)
    rng = np.random.default_rng(0)
    s = np.array([t.sample(rng) for _ in range(2000)])
    assert s.min() >= 0.1 and s.max() <= 2.0
    assert abs(s.mean() - 1.05) < 0.05


def test_p_is_probability_of_blurring(he_patch):
    rng = np.random.default_rng(0)
    assert GaussianBlur(p=0.0)(he_patch, rng) is he_patch
    strong = GaussianBlur(p=1.0, radius_min=1.5, radius_max=2.0)
    assert not np.array_equal(strong(he_patch, rng), he_patch)
    # sigma near 0.1 leaves a 9-tap kernel ~ a delta, as in torchvision
    assert np.abs(GaussianBlur(p=1.0).apply(he_patch, 0.1).astype(int) - he_patch).max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius_min": 2.0, "radius_max": 1.0}, "radius_min <= radius_max"),
        ({"radius_min": 0.0}, "0 < radius_min"),
        ({"kernel_size": 8}, "positive odd int"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianBlur(**kwargs)
