from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsistream.transforms import HED_FROM_RGB, RGB_FROM_HED, HEDJitter, hed_to_rgb, rgb_to_hed


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def test_matrix_is_ruifrok_johnston_as_skimage():
    np.testing.assert_allclose(HED_FROM_RGB @ RGB_FROM_HED, np.eye(3), atol=1e-12)
    # first row of skimage.color.hed_from_rgb
    np.testing.assert_allclose(HED_FROM_RGB[0], [1.87798274, -1.00767869, -0.55611582], atol=1e-7)


def test_rgb_to_hed_convention_and_round_trip(he_patch):
    white = np.full((1, 1, 3), 255, np.uint8)
    np.testing.assert_allclose(rgb_to_hed(white), 0.0, atol=1e-7)
    px = np.array([[[200, 100, 150]]], np.uint8)
    expected = (np.log(px[0, 0] / 255.0) / np.log(1e-6)) @ HED_FROM_RGB
    np.testing.assert_allclose(rgb_to_hed(px)[0, 0], expected, atol=1e-5)
    back = hed_to_rgb(rgb_to_hed(he_patch))
    assert np.abs(back.astype(int) - he_patch).max() <= 1


def test_hed_separates_nuclei_from_stroma(he_patch):
    hed = rgb_to_hed(he_patch)
    nuclei = he_patch.sum(axis=2) < np.percentile(he_patch.sum(axis=2), 10)
    stroma = (~nuclei) & (he_patch.sum(axis=2) < 700)
    assert hed[nuclei, 0].mean() > 2 * hed[stroma, 0].mean()
    assert hed[stroma, 1].mean() > hed[stroma, 0].mean()


def test_zero_sigma_and_neutral_params_are_identity(he_patch):
    out = HEDJitter(sigma=0.0)(he_patch, np.random.default_rng(0))
    assert np.abs(out.astype(int) - he_patch).max() <= 1
    out = HEDJitter().apply(he_patch, ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    assert np.abs(out.astype(int) - he_patch).max() <= 1


def test_params_in_range():
    t = HEDJitter(sigma=0.05)
    rng = np.random.default_rng(0)
    for _ in range(200):
        alpha, beta = t.sample(rng)
        assert all(0.95 <= a <= 1.05 for a in alpha) and all(-0.05 <= b <= 0.05 for b in beta)


def test_changes_colour_not_geometry(he_patch):
    g0 = gradient_magnitude(he_patch).ravel()
    t = HEDJitter(sigma=0.05)
    for seed in range(8):
        out = t(he_patch, np.random.default_rng(seed))
        assert out.shape == he_patch.shape
        assert np.abs(out.astype(float) - he_patch).mean() > 1.5  # colour moved
        corr = np.corrcoef(g0, gradient_magnitude(out).ravel())[0, 1]
        assert corr > 0.9, corr  # edges stay where they were


def test_haematoxylin_gain_darkens_nuclei(he_patch):
    out = HEDJitter().apply(he_patch, ((1.3, 1.0, 1.0), (0.0, 0.0, 0.0)))
    s = he_patch.sum(axis=2)
    nuclei = s < np.percentile(s, 10)
    assert out[nuclei].astype(float).mean() < he_patch[nuclei].astype(float).mean() - 5
    assert np.abs(rgb_to_hed(out)[nuclei, 1] - rgb_to_hed(he_patch)[nuclei, 1]).mean() < 0.01


def test_beta_units(he_patch):
    params = ((1.0, 1.0, 1.0), (0.05, 0.0, 0.0))
    od = HEDJitter(units="od").apply(he_patch, params)
    sk = HEDJitter(units="skimage").apply(he_patch, params)
    white = np.full((1, 1, 3), 255, np.uint8)
    # +0.05 OD of haematoxylin on glass: 255 * exp(-0.05 * h_vec)
    expected = 255 * np.exp(-0.05 * np.array([0.65, 0.70, 0.29]))
    np.testing.assert_allclose(HEDJitter().apply(white, params)[0, 0], expected, atol=1)
    d_od = np.abs(od.astype(float) - he_patch).mean()
    d_sk = np.abs(sk.astype(float) - he_patch).mean()
    assert 1 < d_od < 0.3 * d_sk
    with pytest.raises(ValueError, match="units must be"):
        HEDJitter(units="log10")


@pytest.mark.parametrize("sigma", [-0.1, 1.0, float("inf")])
def test_validation(sigma):
    with pytest.raises(ValueError, match="sigma"):
        HEDJitter(sigma=sigma)
