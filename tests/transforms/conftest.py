"""Synthetic H&E-like patches built from known stain vectors (no slides needed)."""

from __future__ import annotations

import numpy as np
import pytest

H_RUIFROK = (0.65, 0.70, 0.29)
E_RUIFROK = (0.07, 0.99, 0.11)


def make_he_image(
    seed: int = 0,
    size: int = 128,
    h_vec=H_RUIFROK,
    e_vec=E_RUIFROK,
    h_max: float = 1.4,
    e_max: float = 0.7,
    noise: float = 2.0,
) -> np.ndarray:
    """Pink eosin stroma with purple nuclei (discs) and a white glass region.

    Pixels are ``255 * exp(-(cH * h_vec + cE * e_vec))`` with unit stain
    vectors, so the true stains and concentrations are known.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    e = e_max * (0.55 + 0.45 * np.sin(xx / 7.0) * np.cos(yy / 11.0))
    h = np.zeros((size, size))
    for _ in range(size * size // 300):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(3, 7)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        h = np.maximum(h, h_max * rng.uniform(0.6, 1.0) * (d2 < r * r))
    glass = (yy - size * 0.15) ** 2 + (xx - size * 0.15) ** 2 < (size * 0.12) ** 2
    h[glass] = 0
    e[glass] = 0
    hv = np.asarray(h_vec, float) / np.linalg.norm(h_vec)
    ev = np.asarray(e_vec, float) / np.linalg.norm(e_vec)
    od = h[..., None] * hv + e[..., None] * ev
    rgb = 255.0 * np.exp(-od) + rng.normal(0, noise, (size, size, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def he_patch() -> np.ndarray:
    """A 128×128 synthetic H&E patch (Ruifrok stain vectors)."""
    return make_he_image()


@pytest.fixture(scope="session")
def make_he():
    """Factory: ``make_he(seed=..., h_vec=..., e_vec=..., h_max=..., e_max=...)``."""
    return make_he_image
