"""Batched torch kernels that replay planned view ops with the CPU path's numerics.

Every kernel takes a float32 ``N×3×H×W`` batch holding integer values 0..255
(one view copy per row, each with its own parameters) and returns the same,
re-quantised exactly where the CPU op re-quantises: OpenCV's resize, flip,
``LUT``/``addWeighted``/8-bit HSV colour ops (Pillow's uint8 semantics,
``wsistream.transforms.color``), ``sepFilter2D`` blur, solarize. Results agree
with the CPU path within one grey level except where 8-bit HSV rounding
cascades (tests pin the bounds).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F

from wsistream.transforms.stain import HED_FROM_RGB, RGB_FROM_HED

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "gaussian_blur",
    "grayscale",
    "hed_jitter",
    "resample",
    "resample_matrices",
    "rotate90",
    "solarize",
]


def _cubic(d: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution weight at distance ``d`` (OpenCV's ``INTER_CUBIC``, a = -0.75)."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def resample_matrices(
    start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int, mode: str, use_area: torch.Tensor
) -> torch.Tensor:
    """``N×out_size×in_size`` matrices that crop ``[start, start+length)`` and resize it as ``cv2.resize``.

    ``use_area`` (N bools) selects OpenCV's ``INTER_AREA`` (exact fractional
    overlaps, for shrinking); otherwise ``mode`` (bicubic, bilinear, nearest)
    with OpenCV's half-pixel source mapping and edge replication inside the
    box. A row of ``M @ X`` is one output pixel along this axis.
    """
    device = start.device
    n = start.shape[0]
    start = start.to(torch.float64).view(n, 1, 1)
    length = length.to(torch.float64).view(n, 1, 1)
    # OpenCV's ``1 / inv_scale`` with IEEE divisions (``scalar / tensor`` would multiply by a reciprocal),
    # so floors of ``i * scale`` land where OpenCV's do
    inv_scale = torch.full_like(length, float(out_size)) / length
    scale = torch.ones_like(length) / inv_scale
    i = torch.arange(out_size, device=device, dtype=torch.float64).view(1, out_size, 1)
    j = torch.arange(in_size, device=device, dtype=torch.float64).view(1, 1, in_size) - start
    if bool(use_area.all()):
        return _area_weights(i, j, scale, length).to(torch.float32)
    if mode == "nearest":
        src = torch.floor(i * scale).clamp(max=length - 1)
        taps, weights = src, torch.ones_like(src)
    else:
        src = (i + 0.5) * scale - 0.5
        x0 = torch.floor(src)
        t = src - x0
        if mode == "bilinear":
            offsets = torch.arange(0, 2, device=device, dtype=torch.float64).view(1, 1, 2)
            weights = torch.cat([1 - t, t], dim=2)
        else:
            offsets = torch.arange(-1, 3, device=device, dtype=torch.float64).view(1, 1, 4)
            weights = _cubic(t - offsets)
        taps = torch.minimum(torch.clamp(x0 + offsets, min=0), length - 1)
    index = (taps + start).to(torch.int64).clamp(0, in_size - 1).expand(n, out_size, -1)
    matrices = torch.zeros(n, out_size, in_size, dtype=torch.float32, device=device)
    matrices.scatter_add_(2, index, weights.expand(n, out_size, -1).to(torch.float32))
    if bool(use_area.any()):
        area = _area_weights(i, j, scale, length).to(torch.float32)
        matrices = torch.where(use_area.view(n, 1, 1), area, matrices)
    return matrices


def _area_weights(i: torch.Tensor, j: torch.Tensor, scale: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``INTER_AREA`` weights: overlap of output cell ``i`` with source pixel ``j``, over the cell size."""
    overlap = (torch.minimum((i + 1) * scale, j + 1) - torch.maximum(i * scale, j)).clamp(min=0)
    return torch.where((j >= 0) & (j < length), overlap / scale, torch.zeros((), dtype=overlap.dtype, device=j.device))


def resample(x: torch.Tensor, matrices: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply per-row resampling ``matrices`` (N×S×I) along ``axis`` (2 = rows, 3 = columns) of ``x``.

    Each output pixel gathers only its nonzero taps (<= 4 for bicubic, ``ceil(scale) + 1`` for area) and
    sums them in exact float32 elementwise arithmetic: a dense ``matmul`` would cost ``I / 4`` times more
    and may run in TF32 (``torch.set_float32_matmul_precision("high")``), flipping rounded values.
    """
    n, c = x.shape[:2]
    out_size = matrices.shape[1]
    k = max(1, int((matrices != 0).sum(dim=-1).max()))
    _, index = (matrices != 0).to(torch.float32).topk(k, dim=-1)
    weight = matrices.gather(-1, index)
    out = None
    for tap in range(k):  # one tap at a time: peak memory of one output, not k of them
        if axis == 3:
            taps = x.gather(3, index[:, :, tap].view(n, 1, 1, out_size).expand(n, c, x.shape[2], -1))
            term = taps * weight[:, :, tap].view(n, 1, 1, out_size)
        else:
            taps = x.gather(2, index[:, :, tap].view(n, 1, out_size, 1).expand(n, c, -1, x.shape[3]))
            term = taps * weight[:, :, tap].view(n, 1, out_size, 1)
        out = term if out is None else out + term
    assert out is not None  # k >= 1 taps
    return out


def _luma(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's uint8 ``RGB2GRAY``: ``(9798 R + 19235 G + 3735 B + 2^14) >> 15``, exact in float32."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 9798 + g * 19235 + b * 3735 + 16384) / 32768)


def _blend(base: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.blend(base, x, factor)``: saturate, truncate (``factor`` is N×1×1×1)."""
    return torch.floor((base + factor * (x - base)).clamp(0, 255))


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black (``ImageEnhance.Brightness``)."""
    return _blend(torch.zeros((), dtype=x.dtype, device=x.device), x, factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the rounded mean luma (``ImageEnhance.Contrast``)."""
    means = x.sum(dim=(2, 3), dtype=torch.float64) / (x.shape[2] * x.shape[3])
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=x.device)
    mean = torch.floor(means @ weights + 0.5).to(x.dtype).view(-1, 1, 1, 1)
    return _blend(mean, x, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-pixel luma (``ImageEnhance.Color``; CPU: ``addWeighted`` shifted to truncate)."""
    gray = _luma(x)
    return torch.floor((x * factor + gray * (1 - factor) + 0.0005).clamp(0, 255))


def _rgb_to_hsv8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's integer ``RGB2HSV_FULL`` (H in 1/256 turns, S and V in 0..255).

    int32 suffices (largest product 1020 * 174763 < 2**31) and halves the traffic of int64 on a GPU.
    """
    xi = x.to(torch.int32)
    r, g, b = xi[:, 0], xi[:, 1], xi[:, 2]
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    sdiv = torch.where(v > 0, torch.round(255 * 4096 / v.clamp(min=1).double()).int(), torch.zeros_like(v))
    s = (diff * sdiv + 2048) >> 12
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    hdiv = torch.where(diff > 0, torch.round(256 * 4096 / (6 * diff.clamp(min=1)).double()).int(), torch.zeros_like(v))
    h = (h * hdiv + 2048) >> 12
    h = torch.where(h < 0, h + 256, h).clamp(0, 255)
    return h, s, v


def _hsv8_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``HSV2RGB_FULL`` for uint8: float sectors, then round to uint8.

    OpenCV reads 8-bit H back with a range of 255 (forward it writes 256), so
    ``6 / 255`` here is deliberate: the CPU op has the same asymmetry.
    """
    hf = h.to(torch.float32) * (6.0 / 255.0)
    sf = s.to(torch.float32) / 255.0
    vf = v.to(torch.float32) / 255.0
    sector = torch.floor(hf)
    frac = hf - sector
    sector = sector.to(torch.int64) % 6
    tab = torch.stack([vf, vf * (1 - sf), vf * (1 - sf * frac), vf * (1 - sf * (1 - frac))], dim=1)
    # OpenCV's sector_data gives (b, g, r) indices into tab per sector
    sector_data = torch.tensor([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]], device=h.device)
    idx = sector_data[sector]  # N×H×W×3 as (b, g, r)
    rgb_idx = idx.flip(-1).permute(0, 3, 1, 2)
    out = torch.gather(tab, 1, rgb_idx)
    out = torch.where((s == 0).unsqueeze(1), vf.unsqueeze(1).expand_as(out), out)
    return torch.round(out * 255).clamp(0, 255)


def adjust_hue(x: torch.Tensor, shift_turns: torch.Tensor) -> torch.Tensor:
    """Rotate H of OpenCV's 8-bit full-range HSV by ``round(shift * 256)`` units, wrapping."""
    h, s, v = _rgb_to_hsv8(x)
    units = torch.round(shift_turns.view(-1, 1, 1).to(torch.float64) * 256).to(torch.int32)
    h = torch.remainder(h + units, 256)
    return _hsv8_to_rgb(h, s, v).to(x.dtype)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Every channel = uint8 luma."""
    return _luma(x).expand_as(x).contiguous()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-row separable Gaussian (sigma N), reflect-101 borders, rounded (``cv2.sepFilter2D``).

    The taps are :func:`wsistream.transforms.gaussian_kernel1d`'s, computed on the device. Shifted
    multiply-adds rather than a convolution: cuDNN convolutions may run in TF32 (its default on
    Ampere and later), which would move values across rounding boundaries.
    """
    half_width = (kernel_size - 1) / 2.0  # the taps of gaussian_kernel1d, in float64 then float32 as there
    taps = torch.linspace(-half_width, half_width, kernel_size, dtype=torch.float64, device=x.device)
    pdf = torch.exp(-0.5 * (taps.view(1, -1) / sigma.to(torch.float64).view(-1, 1)) ** 2)
    kernels = (pdf / pdf.sum(dim=1, keepdim=True)).to(torch.float32)
    half = kernel_size // 2
    width, height = x.shape[3], x.shape[2]
    padded = F.pad(x, (half, half, 0, 0), mode="reflect")  # reflect = OpenCV's BORDER_REFLECT_101
    # Python's sum, left to right from 0, fixes the order of the float32 additions (the CPU path's order)
    y = cast(
        torch.Tensor, sum(kernels[:, k].view(-1, 1, 1, 1) * padded[..., k : k + width] for k in range(kernel_size))
    )
    padded = F.pad(y, (0, 0, half, half), mode="reflect")
    y = cast(
        torch.Tensor, sum(kernels[:, k].view(-1, 1, 1, 1) * padded[:, :, k : k + height] for k in range(kernel_size))
    )
    return torch.round(y).clamp(0, 255)


def rotate90(x: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise quarter turns per row (``np.rot90(image, k, axes=(0, 1))``); square images."""
    out = x.clone()
    for k in (1, 2, 3):
        rows = (quarter_turns.round() == k).nonzero().squeeze(1)
        if rows.numel():
            out[rows] = torch.rot90(x[rows], k, dims=(2, 3))
    return out


def hed_jitter(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, beta_in_od: bool) -> torch.Tensor:
    """Per-row affine stain perturbation in optical density (``HEDJitter.apply``; alpha, beta N×3)."""
    device = x.device
    log_floor = math.log(1e-6)  # stain.py's OD scale: log(max(v / 255, 1e-6)) / log(1e-6), 0 white .. 1 black
    values = torch.arange(256, dtype=torch.float64, device=device) / 255.0
    od_lut = (torch.log(values.clamp(min=1e-6)) / log_floor).to(torch.float32)
    od = od_lut[x.to(torch.int64)]  # N×3×H×W
    rgb_from_hed = torch.from_numpy(RGB_FROM_HED).to(device)
    hed_from_rgb = torch.from_numpy(HED_FROM_RGB).to(device)
    alpha, beta = alpha.to(torch.float64), beta.to(torch.float64)
    if beta_in_od:
        beta = beta / -log_floor
    matrix = ((hed_from_rgb.unsqueeze(0) * alpha.unsqueeze(1)) @ rgb_from_hed).to(torch.float32)  # N×3×3
    offset = (beta @ rgb_from_hed).to(torch.float32)  # N×3
    # out[c] = sum_i od[i] * matrix[i, c] + offset[c]: elementwise, exact float32 (no TF32 matmul)
    out = sum(od[:, i : i + 1] * matrix[:, i, :].view(-1, 3, 1, 1) for i in range(3)) + offset.view(-1, 3, 1, 1)
    rgb = torch.exp(out.clamp(min=0) * log_floor) * 255
    return torch.round(rgb).clamp(0, 255)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert values at or above ``threshold``."""
    return torch.where(x >= threshold, 255 - x, x)
