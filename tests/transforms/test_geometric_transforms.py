from __future__ import annotations

import numpy as np
import pytest

from wsistream.transforms import RandomHorizontalFlip, RandomRotate90, RandomVerticalFlip


def grid(h=5, w=7):
    return (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)


def test_flips_exact_and_contiguous():
    img = grid()
    rng = np.random.default_rng(0)
    h = RandomHorizontalFlip(p=1.0)(img, rng)
    v = RandomVerticalFlip(p=1.0)(img, rng)
    np.testing.assert_array_equal(h, img[:, ::-1])
    np.testing.assert_array_equal(v, img[::-1])
    assert h.flags.c_contiguous and v.flags.c_contiguous
    assert RandomHorizontalFlip(p=0.0)(img, rng) is img


def test_rot90_is_quarter_turns_and_swaps_shape():
    img = grid(4, 9)
    t = RandomRotate90(p=1.0)
    for k in range(4):
        np.testing.assert_array_equal(t.apply(img, k), np.rot90(img, k))
    assert t.apply(img, 1).shape == (9, 4, 3)
    ks = [t.sample(np.random.default_rng(s)) for s in range(400)]
    counts = np.bincount(ks, minlength=4)
    assert set(ks) == {0, 1, 2, 3} and counts.min() > 60


@pytest.mark.parametrize("cls", [RandomHorizontalFlip, RandomVerticalFlip])
def test_flip_rate(cls):
    rng = np.random.default_rng(1)
    n = 4000
    fired = sum(cls(p=0.3).sample(rng) is not None for _ in range(n))
    assert abs(fired / n - 0.3) < 4.5 * np.sqrt(0.3 * 0.7 / n)
