"""Chowder (Courtiol et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsistream.mil.blocks import METADATA_COLS, MLP, ActivationFactory, ExtremeLayer, TilesMLP


def _xavier_zero_bias(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Chowder(nn.Module):
    """Tile scores -> top/bottom-k extreme scores -> MLP.

    Reference: ``rl_benchmarks/models/slide_models/chowder.py`` (``Chowder``)
    with ``conf/slide_level_task/cross_validation/model/chowder.yaml``:
    ``n_top = n_bottom = 10``, tile MLP hidden ``[128]`` (sigmoid, the
    ``TilesMLP`` default), head MLP ``[128, 64]`` with sigmoid, Xavier-uniform
    weights and zero biases on every linear layer.

    The head is shared across outputs: extreme scores (B, k, C) are transposed
    to (B, C, k) and mapped to (B, C, 1), as in the reference.

    Padding: padded tiles are excluded from the top/bottom selection and a
    slide with fewer real tiles than ``n_top`` / ``n_bottom`` gets 0 in the
    empty slots whether or not it is padded, so padding changes nothing
    (see :class:`~wsistream.mil.blocks.ExtremeLayer`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        n_top: int = 10,
        n_bottom: int = 10,
        tiles_mlp_hidden: Sequence[int] | None = (128,),
        mlp_hidden: Sequence[int] | None = (128, 64),
        mlp_dropout: Sequence[float] | None = None,
        mlp_activation: ActivationFactory | None = nn.Sigmoid,
        bias: bool = True,
        metadata_cols: int = METADATA_COLS,
    ) -> None:
        super().__init__()
        self.score_model = TilesMLP(in_features, out_features=out_features, hidden=tiles_mlp_hidden, bias=bias)
        self.score_model.apply(_xavier_zero_bias)
        self.extreme_layer = ExtremeLayer(n_top=n_top, n_bottom=n_bottom)
        self.mlp = MLP(n_top + n_bottom, 1, hidden=mlp_hidden, dropout=mlp_dropout, activation=mlp_activation)
        self.mlp.apply(_xavier_zero_bias)
        self.metadata_cols = metadata_cols

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, out_features) for ``x`` (B, N, 3 + d) and ``mask`` (B, N, 1)."""
        scores = self.score_model(x[..., self.metadata_cols :], mask)  # (B, N, C)
        extremes, _ = self.extreme_layer(scores, mask)  # (B, k, C)
        logits: torch.Tensor = self.mlp(extremes.transpose(1, 2)).squeeze(2)  # (B, C)
        return logits
