"""A synthetic pink/purple patch: these stages need no slide."""

from __future__ import annotations

import numpy as np
import pytest


def make_patch(size: int = 224, seed: int = 0, width: int | None = None) -> np.ndarray:
    """Pink stroma with purple discs and some pixel noise (uint8 H×W×3)."""
    rng = np.random.default_rng(seed)
    w = size if width is None else width
    img = np.empty((size, w, 3), np.float64)
    img[:] = (236, 170, 210)
    yy, xx = np.mgrid[:size, :w]
    for _ in range(size * w // 400):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, w), rng.uniform(3, 8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (110, 60, 160)
    img += rng.normal(0, 3, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def patch() -> np.ndarray:
    """224×224 pink/purple patch."""
    return make_patch()


@pytest.fixture(scope="session")
def patch_factory():
    return make_patch
