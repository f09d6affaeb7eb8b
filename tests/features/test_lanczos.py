"""The batched LANCZOS thumbnail equals Pillow's (and so get_tile's) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsistream.features.lanczos import device_resizable, lanczos_thumbnail, render_batch
from wsistream.sampling.deepzoom_grid import render_tile


@pytest.mark.parametrize(
    ("read", "z"),
    [((448, 448), (224, 224)), ((448, 97), (224, 49)), ((300, 300), (224, 224)), ((224, 224), (224, 224))],
)
def test_equals_pillow_thumbnail(read, z):
    rng = np.random.default_rng(sum(read))
    noise = rng.integers(0, 256, (2, read[1], read[0], 3), dtype=np.uint8)  # extreme values exercise clip8
    smooth = np.clip(noise.astype(int) // 8 + 100, 0, 255).astype(np.uint8)
    batch = np.concatenate([noise, smooth])
    assert device_resizable(*read, *z)
    got = render_batch(torch.from_numpy(batch), z, 224).numpy()
    for i in range(len(batch)):
        np.testing.assert_array_equal(got[i], render_tile(batch[i], z, 224, pad=True))


def test_shapes_pillow_treats_differently_are_refused():
    assert not device_resizable(447, 448, 224, 224)  # thumbnail keeps the aspect ratio: 223 x 224
    assert not device_resizable(896, 896, 224, 224)  # reducing_gap: Pillow box-reduces first
    assert not device_resizable(200, 224, 224, 224)  # never an upscale
    with pytest.raises(ValueError, match="uint8"):
        lanczos_thumbnail(torch.zeros(1, 8, 8, 3), (4, 4))
