"""Mean pooling baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsistream.mil.blocks import METADATA_COLS, MLP, ActivationFactory


class MeanPool(nn.Module):
    """Masked mean of the tile features followed by an MLP (a linear layer by default).

    Reference: ``rl_benchmarks/models/slide_models/meanpool.py`` (``MeanPool``)
    with ``conf/slide_level_task/cross_validation/model/mean_pool.yaml`` (no
    overrides: ``hidden=None`` so the head is ``Linear(d, out)``).

    Padded tiles (``mask`` True) are excluded from the mean, so padding changes
    nothing.

    Parameters
    ----------
    in_features : int
        Tile feature dimension d (without the 3 metadata columns).
    out_features : int
        Number of logits.
    hidden, dropout, activation, bias
        Head MLP options (see :class:`~wsistream.mil.blocks.MLP`).
    metadata_cols : int
        Leading metadata columns dropped in ``forward`` (3: level, x, y).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        hidden: Sequence[int] | None = None,
        dropout: Sequence[float] | None = None,
        activation: ActivationFactory | None = nn.Sigmoid,
        bias: bool = True,
        metadata_cols: int = METADATA_COLS,
    ) -> None:
        super().__init__()
        self.mlp = MLP(in_features, out_features, hidden=hidden, dropout=dropout, activation=activation, bias=bias)
        self.metadata_cols = metadata_cols

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, out_features) for ``x`` (B, N, 3 + d) and ``mask`` (B, N, 1)."""
        feats = x[..., self.metadata_cols :]
        if mask is None:
            pooled = feats.mean(dim=1)
        else:
            pooled = feats.masked_fill(mask, 0.0).sum(dim=1) / (~mask).float().sum(dim=1)
        logits: torch.Tensor = self.mlp(pooled)
        return logits
