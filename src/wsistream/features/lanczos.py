"""``DeepZoomGenerator.get_tile``'s LANCZOS thumbnail, batched in torch, bit-exact with Pillow.

``get_tile`` scales each read region with ``PIL.Image.thumbnail(z_size, LANCZOS)``
(openslide-python ``deepzoom.py``). On a 40x slide every 0.5 µm/px tile is a
448² read reduced to 224², ~4 ms per tile on one core in Pillow: more than
decoding the tile's JPEG data. This module runs the same arithmetic on a whole
batch on the model's device, so the readers only decode.

The arithmetic is Pillow's 8-bit resampler (``src/libImaging/Resample.c``):
per output pixel, the LANCZOS-3 window (support ``3 · scale``) centred at
``(i + 0.5) · scale``, coefficients normalised to sum 1 in double precision and
rounded to 22-bit fixed point (``normalize_coeffs_8bpc``), a horizontal pass
then a vertical one, each accumulated in int32 from ``1 << 21`` and clipped to
uint8 (``clip8``). Integer arithmetic makes the result identical on every
device (no float reassociation, no TF32); ``tests/features/test_lanczos.py``
checks equality with Pillow and with ``get_tile``.

Shapes where ``thumbnail`` first reduces by an integer factor (a read ≥ 4× the
tile: ``reducing_gap=2``) or changes the aspect ratio are not handled here
(:func:`device_resizable` is False); the reader resizes those with Pillow.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

#: Fixed-point precision of Pillow's 8-bit resampler (``PRECISION_BITS = 32 - 8 - 2``).
_PRECISION_BITS = 22
#: LANCZOS support in input pixels at scale 1 (Pillow's ``LANCZOS = {lanczos_filter, 3.0}``).
_LANCZOS_SUPPORT = 3.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


@lru_cache(maxsize=64)
def lanczos_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for LANCZOS, ``in_size → out_size``.

    Returns ``(index, weight)``, both (out_size, ksize): the input pixel of each tap
    (clamped into the image; its weight is 0 past the window) and the int32 22-bit weight.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    index = np.zeros((out_size, ksize), np.int64)
    weight = np.zeros((out_size, ksize), np.int32)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        taps = [_lanczos((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
        total = sum(taps)
        for x, w in enumerate(taps):
            k = w / total if total != 0.0 else w
            weight[xx, x] = int(k * (1 << _PRECISION_BITS) + (0.5 if k >= 0 else -0.5))
        index[xx, :xmax] = np.arange(xmin, xmin + xmax)
        index[xx, xmax:] = xmin + xmax - 1  # in range; weight 0
    return index, weight


@lru_cache(maxsize=64)
def thumbnail_size(read_w: int, read_h: int, z_w: int, z_h: int) -> tuple[int, int]:
    """The size ``PIL.Image.thumbnail((z_w, z_h))`` gives a ``read_w × read_h`` image (aspect kept)."""
    from PIL import Image

    img = Image.new("L", (read_w, read_h))
    img.thumbnail((z_w, z_h), getattr(Image, "Resampling", Image).LANCZOS)
    return img.size


def device_resizable(read_w: int, read_h: int, z_w: int, z_h: int) -> bool:
    """Whether :func:`lanczos_thumbnail` reproduces ``thumbnail`` for this shape exactly.

    ``thumbnail`` with ``reducing_gap=2`` first box-reduces by ``int(read / z / 2)`` when that is
    ≥ 2 (reads ≥ 4× the tile), and may shrink one side to keep the aspect ratio; both stay in Pillow.
    """
    if (read_w, read_h) == (z_w, z_h):
        return True
    if read_w < z_w or read_h < z_h or read_w >= 4 * z_w or read_h >= 4 * z_h:
        return False
    return thumbnail_size(read_w, read_h, z_w, z_h) == (z_w, z_h)


def _pass(x: torch.Tensor, dim: int, in_size: int, out_size: int) -> torch.Tensor:
    """One 8-bit resampling pass of int32 ``x`` along ``dim``; returns int32 values in [0, 255]."""
    index, weight = lanczos_coefficients(in_size, out_size)
    idx = torch.from_numpy(index).to(x.device)
    w = torch.from_numpy(weight).to(x.device)
    shape = [1] * x.ndim
    shape[dim] = out_size
    acc = torch.full((), 1 << (_PRECISION_BITS - 1), dtype=torch.int32, device=x.device)
    for k in range(index.shape[1]):
        acc = acc + x.index_select(dim, idx[:, k]) * w[:, k].view(shape)
    return (acc >> _PRECISION_BITS).clamp_(0, 255)


def lanczos_thumbnail(tiles: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, H, W, 3) → uint8 (B, out_h, out_w, 3), Pillow's LANCZOS resize bit for bit.

    ``out_size`` is (width, height). Horizontal pass first, as Pillow does; each pass
    rounds to uint8. Runs on the tensor's device, channels-first inside (the gathers
    then run along contiguous rows: 10x faster on CPU than channels-last); the result
    is a channels-last view of that.
    """
    if tiles.dtype != torch.uint8 or tiles.ndim != 4:
        raise ValueError(f"expected uint8 (B, H, W, C) tiles, got {tuple(tiles.shape)} {tiles.dtype}")
    out_w, out_h = int(out_size[0]), int(out_size[1])
    _, h, w, _ = tiles.shape
    if (w, h) == (out_w, out_h):
        return tiles
    x = tiles.permute(0, 3, 1, 2).to(torch.int32, memory_format=torch.contiguous_format)
    if w != out_w:
        x = _pass(x, 3, w, out_w)
    if h != out_h:
        x = _pass(x, 2, h, out_h)
    return x.to(torch.uint8).permute(0, 2, 3, 1)


def render_batch(tiles: torch.Tensor, z_size: tuple[int, int], tile_size: int) -> torch.Tensor:
    """``render_tile`` for a batch of same-shape reads: thumbnail to ``z_size``, zero-pad to ``tile_size``.

    Bottom/right zero padding of border tiles is ``rl_benchmarks``' ``TilesMap``.
    """
    x = lanczos_thumbnail(tiles, z_size)
    b, h, w, c = x.shape
    if (h, w) == (tile_size, tile_size):
        return x
    out = torch.zeros((b, tile_size, tile_size, c), dtype=torch.uint8, device=x.device)
    out[:, :h, :w] = x
    return out
