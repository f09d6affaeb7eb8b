"""Nyström self-attention (Xiong et al., 2021), TransMIL's linear-cost alternative to full attention.

HistoSSLscaling offers it as ``attention_type="nystrom"`` of TransMIL's blocks
(``rl_benchmarks/models/slide_models/utils/attention.py``, ``NystromAttention``,
adapted from mlpen/Nystromformer); its benchmark configuration keeps the default
full attention, and so does :class:`~wsistream.mil.TransMIL` unless
``attention="nystrom"`` is passed. The reference's behaviour is kept:

* the sequence is zero-padded **in front** to a multiple of ``num_landmarks``
  (padded rows take part, as in the reference) and the last ``N`` outputs kept;
* landmarks are means of ``ceil(N / m)`` consecutive queries / keys;
* ``softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V`` with the iterative
  Moore-Penrose pseudo-inverse (6 iterations, initial scaling by the largest
  absolute row and column sums over the whole batch);
* a depthwise ``(33, 1)`` convolution of V over the sequence, per head, added to
  the output (``residual=True``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NystromAttention", "iterative_pinv"]


def iterative_pinv(x: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Approximate Moore-Penrose pseudo-inverse of a batch of square matrices (Razavi et al., 2014 iteration).

    ``z0 = x^T / (max_col_sum * max_row_sum)`` (maxima over the whole batch), then
    ``z <- z (13 I - x z (15 I - x z (7 I - x z))) / 4``.
    """
    magnitude = x.abs()
    z = x.transpose(-1, -2) / (magnitude.sum(dim=-1).max() * magnitude.sum(dim=-2).max())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention approximated through ``num_landmarks`` landmarks.

    Parameters
    ----------
    in_features : int
        Token width (divisible by ``num_heads``).
    num_heads : int
        Attention heads (8 in TransMIL).
    qkv_bias : bool
        Bias of the joint q/k/v projection (off in TransMIL).
    num_landmarks : int
        Landmarks ``m`` (256 in the reference); cost is linear in the sequence length for fixed ``m``.
    pinv_iterations : int
        Iterations of :func:`iterative_pinv` (6 in the reference).
    residual : bool
        Add the depthwise convolution of V (reference default ``True``).
    residual_kernel_size : int
        Sequence extent of that convolution (33 in the reference).
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        num_landmarks: int = 256,
        pinv_iterations: int = 6,
        residual: bool = True,
        residual_kernel_size: int = 33,
    ) -> None:
        super().__init__()
        if in_features % num_heads:
            raise ValueError(
                f"in_features={in_features} is not divisible by num_heads={num_heads}; "
                "pass a feature dimension that is a multiple of the head count"
            )
        if num_landmarks < 1 or pinv_iterations < 1 or residual_kernel_size < 1:
            raise ValueError(
                "num_landmarks, pinv_iterations and residual_kernel_size must be >= 1 (reference: 256, 6, 33)"
            )
        self.num_heads = num_heads
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.scale = (in_features // num_heads) ** -0.5
        self.to_qkv = nn.Linear(in_features, 3 * in_features, bias=qkv_bias)
        self.to_out = nn.Linear(in_features, in_features)
        self.res_conv = (
            nn.Conv2d(
                num_heads,
                num_heads,
                kernel_size=(residual_kernel_size, 1),
                padding=(residual_kernel_size // 2, 0),
                groups=num_heads,
                bias=False,
            )
            if residual
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over ``x`` (B, N, C); returns (B, N, C)."""
        b, n, c = x.shape
        m = self.num_landmarks
        per_landmark = math.ceil(n / m)
        if n % m:
            x = F.pad(x, (0, 0, m - n % m, 0))  # zeros in front, as the reference
        length = x.shape[1]
        q, k, v = (
            t.reshape(b, length, self.num_heads, c // self.num_heads).transpose(1, 2)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        q = q * self.scale
        q_landmarks = q.reshape(b, self.num_heads, m, per_landmark, -1).mean(dim=3)
        k_landmarks = k.reshape(b, self.num_heads, m, per_landmark, -1).mean(dim=3)
        kernel_1 = (q @ k_landmarks.transpose(-1, -2)).softmax(dim=-1)
        kernel_2 = (q_landmarks @ k_landmarks.transpose(-1, -2)).softmax(dim=-1)
        kernel_3 = (q_landmarks @ k.transpose(-1, -2)).softmax(dim=-1)
        out = (kernel_1 @ iterative_pinv(kernel_2, self.pinv_iterations)) @ (kernel_3 @ v)
        if self.res_conv is not None:
            out = out + self.res_conv(v)
        projected: torch.Tensor = self.to_out(out.transpose(1, 2).reshape(b, length, c))
        return projected[:, -n:]
