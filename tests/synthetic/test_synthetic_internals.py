"""Building blocks: abbreviated JPEG streams and band-wise area downsampling."""

from __future__ import annotations

import cv2
import imagecodecs
import numpy as np
import pytest

from wsistream.synthetic._jpeg import AbbreviatedJpegEncoder
from wsistream.synthetic._pyramid import AreaDownsampler


def _tile(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(60, 250, (8, 8, 3), dtype=np.uint8), (240, 240), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("photometric", "subsampling", "sampling_byte"),
    [("rgb", (1, 1), 0x11), ("ycbcr", (1, 1), 0x11), ("ycbcr", (2, 2), 0x22)],
)
def test_abbreviated_tiles_decode_like_complete_streams(
    photometric: str, subsampling: tuple[int, int], sampling_byte: int
) -> None:
    encoder = AbbreviatedJpegEncoder(quality=80, photometric=photometric, subsampling=subsampling)  # type: ignore[arg-type]
    tile = _tile()
    stream = encoder.encode(tile)
    assert stream[:4] == b"\xff\xd8\xff\xc0" and stream[-2:] == b"\xff\xd9"
    assert stream[2 + 4 + 7] == sampling_byte  # luma sampling factors in SOF0
    assert encoder.encode(_tile(1))[:4] == stream[:4]
    colorspace = "RGB" if photometric == "rgb" else None
    decoded = imagecodecs.jpeg8_decode(stream, tables=encoder.tables, colorspace=colorspace, outcolorspace="RGB")
    assert np.abs(decoded.astype(int) - tile).mean() < 4


@pytest.mark.parametrize("downsample", [1, 3, 4, 32])
def test_band_accumulation_equals_whole_image_block_mean(downsample: int) -> None:
    rng = np.random.default_rng(downsample)
    image = rng.integers(0, 256, (250, 203, 3), dtype=np.uint8)
    acc = AreaDownsampler((203, 250), downsample)
    for y in range(0, 250, 48):  # bands that do not align with the block size
        acc.push(image[y : y + 48])
    assert acc.complete
    h, w = 250 // downsample, 203 // downsample
    blocks = image[: h * downsample, : w * downsample].astype(np.float64)
    expected = blocks.reshape(h, downsample, w, downsample, 3).mean(axis=(1, 3))
    assert acc.image.shape == (h, w, 3)
    assert np.abs(acc.image - expected).max() <= 0.5 + 1e-9
