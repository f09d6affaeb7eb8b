"""Dual-stream MIL (Li et al., 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsistream.mil.blocks import METADATA_COLS, MLP, ActivationFactory, ExtremeLayer, TilesMLP

_OUT_LOGITS = ("mean", "max", "bag")


class DSMIL(nn.Module):
    """Max-instance stream + instance-to-critical-instance attention stream.

    Reference: ``rl_benchmarks/models/slide_models/dsmil.py`` (``DSMIL``) with
    ``conf/slide_level_task/cross_validation/model/dsmil.yaml``: values and
    queries of width 32, ``passing_values=False``, tile score / query MLPs
    ``[200, 100]``, bag MLP ``[200, 100]`` (sigmoid, the code default), output
    ``0.5 * (max-instance logit + bag logit)``.

    Stream 1 scores every tile and keeps the highest score per class (the
    critical instance). Stream 2 computes a query per tile, attends from the
    critical tile's query to all queries (``softmax(Q q_crit)``), pools the
    values and maps the pooled vector to a bag logit. Padded tiles are
    excluded from both streams, so padding changes nothing.

    Reference flaw reproduced by default: with ``passing_values=False`` the
    values are the raw tile features, yet the reference still builds the value
    layer ``tiles_values`` (``Linear(d, 32)``), which is never used but counts
    in the parameter total (and in optimizer weight decay, which does not touch
    the output). ``corrected=True`` does not build it.

    Deviation: the reference returns (B, 1, C) for ``out_features > 1`` because
    of a ``squeeze``/``unsqueeze`` pair; this implementation returns (B, C)
    for every C (identical for C = 1). ``passing_values`` keeps the reference
    code's meaning (``True`` = values come from ``tiles_values``), which is the
    opposite of the reference docstring.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        d_tiles_values: int = 32,
        d_tiles_queries: int = 32,
        passing_values: bool = False,
        tiles_scores_mlp_hidden: Sequence[int] | None = (200, 100),
        tiles_values_mlp_hidden: Sequence[int] | None = None,
        tiles_queries_mlp_hidden: Sequence[int] | None = (200, 100),
        mlp_hidden: Sequence[int] | None = (200, 100),
        mlp_dropout: Sequence[float] | None = None,
        mlp_activation: ActivationFactory | None = nn.Sigmoid,
        bias: bool = True,
        metadata_cols: int = METADATA_COLS,
        out_logits: str = "mean",
        corrected: bool = False,
    ) -> None:
        super().__init__()
        if out_logits not in _OUT_LOGITS:
            raise ValueError(f"out_logits={out_logits!r}: pass one of {_OUT_LOGITS}")
        self.out_logits = out_logits
        self.passing_values = passing_values
        self.corrected = corrected
        self.tiles_scores = TilesMLP(in_features, out_features=out_features, hidden=tiles_scores_mlp_hidden, bias=bias)
        self.extreme_layer = ExtremeLayer(n_top=1, n_bottom=0)
        self.tiles_values: TilesMLP | None = None
        if passing_values or not corrected:
            self.tiles_values = TilesMLP(
                in_features, out_features=d_tiles_values, hidden=tiles_values_mlp_hidden, bias=bias
            )
        self.tiles_queries = TilesMLP(
            in_features, out_features=d_tiles_queries, hidden=tiles_queries_mlp_hidden, bias=bias
        )
        mlp_in = d_tiles_values if passing_values else in_features
        self.mlp = MLP(mlp_in, 1, hidden=mlp_hidden, dropout=mlp_dropout, activation=mlp_activation)
        self.metadata_cols = metadata_cols

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, out_features) for ``x`` (B, N, 3 + d) and ``mask`` (B, N, 1)."""
        feats = x[..., self.metadata_cols :]
        # Stream 1: max-instance score per class.
        scores = self.tiles_scores(feats, mask)  # (B, N, C)
        extremes, idx = self.extreme_layer(scores, mask)  # (B, 1, C) each
        max_logits: torch.Tensor = extremes[:, 0, :]  # (B, C)
        # Stream 2: attention from the critical instance's query.
        if self.passing_values:
            assert self.tiles_values is not None
            values = self.tiles_values(feats, mask)  # (B, N, Dv)
        else:
            values = feats
        queries = self.tiles_queries(feats, mask)  # (B, N, Dq)
        crit_idx = idx.transpose(1, 2).expand(-1, -1, queries.shape[2])  # (B, C, Dq)
        crit_queries = torch.gather(queries, 1, crit_idx).transpose(1, 2)  # (B, Dq, C)
        logits = torch.bmm(queries, crit_queries)  # (B, N, C)
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        weights = torch.softmax(logits.transpose(1, 2), dim=2)  # (B, C, N)
        pooled = torch.bmm(weights, values)  # (B, C, Dv)
        bag_logits: torch.Tensor = self.mlp(pooled)[..., 0]  # (B, C)
        if self.out_logits == "max":
            return max_logits
        if self.out_logits == "bag":
            return bag_logits
        return 0.5 * (max_logits + bag_logits)
