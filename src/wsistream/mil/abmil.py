"""Attention-based MIL (Ilse et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsistream.mil.blocks import METADATA_COLS, MLP, ActivationFactory, GatedAttention, TilesMLP


class ABMIL(nn.Module):
    """Tile embedding -> gated attention pooling -> MLP.

    Reference: ``rl_benchmarks/models/slide_models/abmil.py`` (``ABMIL``) with
    ``conf/slide_level_task/cross_validation/model/abmil.yaml``: embedding
    ``Linear(d, 128)`` (``tiles_mlp_hidden=None``), gated attention of width
    128, temperature 1, head MLP ``[128, 64]`` with **ReLU** (the yaml value;
    the reference code default is sigmoid).

    Padded tiles get ``-inf`` attention logits, hence zero weight: padding
    changes nothing.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        d_model_attention: int = 128,
        temperature: float = 1.0,
        tiles_mlp_hidden: Sequence[int] | None = None,
        mlp_hidden: Sequence[int] | None = (128, 64),
        mlp_dropout: Sequence[float] | None = None,
        mlp_activation: ActivationFactory | None = nn.ReLU,
        bias: bool = True,
        metadata_cols: int = METADATA_COLS,
    ) -> None:
        super().__init__()
        self.tiles_emb = TilesMLP(in_features, out_features=d_model_attention, hidden=tiles_mlp_hidden, bias=bias)
        self.attention_layer = GatedAttention(d_model=d_model_attention, temperature=temperature)
        self.mlp = MLP(
            d_model_attention, out_features, hidden=mlp_hidden, dropout=mlp_dropout, activation=mlp_activation
        )
        self.metadata_cols = metadata_cols

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, out_features) for ``x`` (B, N, 3 + d) and ``mask`` (B, N, 1)."""
        emb = self.tiles_emb(x[..., self.metadata_cols :], mask)
        pooled, _ = self.attention_layer(emb, mask)
        logits: torch.Tensor = self.mlp(pooled)
        return logits
