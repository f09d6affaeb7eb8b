"""TransMIL (Shao et al., 2021) as built by HistoSSLscaling."""

from __future__ import annotations

import math

import torch
from torch import nn

from wsistream.mil.blocks import METADATA_COLS, SelfAttention
from wsistream.mil.nystrom import NystromAttention


def _init_weights(module: nn.Module) -> None:
    # Reference ``_weight_init`` applied through ``Module.apply``: the "head"
    # branch is keyed on a name that ``apply`` never passes, so the head gets
    # the same truncated-normal init as every other linear layer.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.zeros_(module.bias)
        nn.init.ones_(module.weight)


class TransMILBlock(nn.Module):
    """Pre-norm, attention-only transformer block: ``x + attn(norm1(x))`` (no MLP).

    Reference: ``rl_benchmarks/models/slide_models/transmil.py`` (``_Block``,
    ``attention_type='original'``, 8 heads, ``qkv_bias=False``, no dropout).
    """

    def __init__(
        self, in_features: int, num_heads: int = 8, attention: str = "original", num_landmarks: int = 256
    ) -> None:
        super().__init__()
        if attention == "original":
            self.attn: nn.Module = SelfAttention(in_features, num_heads=num_heads, qkv_bias=False)
        elif attention == "nystrom":
            self.attn = NystromAttention(in_features, num_heads=num_heads, num_landmarks=num_landmarks)
        else:
            raise ValueError(f"attention must be 'original' or 'nystrom', got {attention!r}")
        self.norm1 = nn.LayerNorm(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual self-attention over ``x`` (B, L, C)."""
        attended: torch.Tensor = self.attn(self.norm1(x))
        return x + attended


class PPEG(nn.Module):
    """Pyramid position encoding: tokens on a square grid + conv3 + conv5 + conv7.

    Reference: ``rl_benchmarks/models/slide_models/transmil.py`` (``_PPEG``).
    The reference comments call them depthwise, but builds **full**
    ``Conv2d(C, C, k)`` layers (no ``groups``), with bias; this is reproduced.
    The CLS token bypasses the convolutions.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.group_conv1 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1)
        self.group_conv2 = nn.Conv2d(in_features, in_features, kernel_size=5, padding=2)
        self.group_conv3 = nn.Conv2d(in_features, in_features, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 1 + s*s, C) -> same shape."""
        cls_tok, tiles = x[:, :1], x[:, 1:]
        b, n, c = tiles.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"PPEG needs a square number of tiles, got {n}")
        grid = tiles.transpose(1, 2).reshape(b, c, side, side)
        grid = grid + self.group_conv1(grid) + self.group_conv2(grid) + self.group_conv3(grid)
        return torch.cat([cls_tok, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    """Squaring -> CLS -> attention block -> PPEG -> attention block -> LayerNorm(CLS) -> linear head.

    Reference: ``rl_benchmarks/models/slide_models/transmil.py`` (``TransMIL``)
    with ``conf/slide_level_task/cross_validation/model/trans_mil.yaml`` (all
    defaults: no input projection, so the model width is d; two attention-only
    pre-norm blocks with 8 heads; PPEG with full 3/5/7 convolutions;
    truncated-normal (std 0.02) init of every linear layer, zero CLS token).

    The sequence is made square by repeating its first ``ceil(sqrt(N))^2 - N``
    tokens (reference ``_squaring``), which places tiles on a grid in input
    order; tile coordinates are not used.

    ``attention="nystrom"`` swaps both blocks' attention for the reference's
    optional Nyström approximation (:class:`~wsistream.mil.nystrom.NystromAttention`,
    ``num_landmarks`` 256), linear in the number of tiles; the reference
    benchmark uses full attention (the default).

    Reference flaw reproduced by default: the padding mask is ignored, so in a
    padded batch the zero-padded tiles take part in attention, squaring and
    the convolutions, and a slide's logits depend on the other slides in its
    batch. ``corrected=True`` runs each slide on its real tiles only (a loop
    over the batch), which makes padding change nothing.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        proj_dim: int | None = None,
        proj_dropout: float | None = None,
        num_heads: int = 8,
        metadata_cols: int = METADATA_COLS,
        corrected: bool = False,
        attention: str = "original",
        num_landmarks: int = 256,
    ) -> None:
        super().__init__()
        if proj_dim is not None:
            width = int(proj_dim)
            self.proj: nn.Module = nn.Sequential(nn.Linear(in_features, width), nn.Dropout(proj_dropout or 0.0))
        else:
            width = in_features
            self.proj = nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cor = TransMILBlock(width, num_heads, attention, num_landmarks)
        self.pos_enc = PPEG(width)
        self.agg = TransMILBlock(width, num_heads, attention, num_landmarks)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_features)
        self.metadata_cols = metadata_cols
        self.corrected = corrected
        self.apply(_init_weights)

    @staticmethod
    def _square(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        extra = math.ceil(math.sqrt(n)) ** 2 - n
        return torch.cat([x, x[:, :extra]], dim=1)

    def _forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        h = self._square(self.proj(feats))
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        h = self.agg(self.pos_enc(self.cor(h)))
        logits: torch.Tensor = self.head(self.norm(h[:, 0]))
        return logits

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, out_features) for ``x`` (B, N, 3 + d) and ``mask`` (B, N, 1)."""
        feats = x[..., self.metadata_cols :]
        if feats.ndim != 3:
            raise ValueError(f"TransMIL expects a (B, N, 3 + d) batch, got shape {tuple(x.shape)}")
        if not self.corrected or mask is None:
            return self._forward_features(feats)
        keep = ~mask[..., 0]
        return torch.cat([self._forward_features(feats[i : i + 1, keep[i]]) for i in range(feats.shape[0])])
