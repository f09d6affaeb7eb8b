"""HIPT-MIL aggregation head (Chen et al., 2022) as used by HistoSSLscaling."""

from __future__ import annotations

import torch
from torch import nn

from wsistream.mil.blocks import METADATA_COLS


class GatedAttentionNetwork(nn.Module):
    """CLAM-style gated attention: ``c(tanh(a(x)) * sigmoid(b(x)))`` with dropout.

    Reference: ``rl_benchmarks/models/slide_models/hiptmil.py``
    (``GatedAttentionNetwork``).
    """

    def __init__(self, in_features: int = 192, gat_hidden: int = 192, gat_dropout: float = 0.25) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(in_features, gat_hidden), nn.Tanh(), nn.Dropout(gat_dropout))
        self.attention_b = nn.Sequential(nn.Linear(in_features, gat_hidden), nn.Sigmoid(), nn.Dropout(gat_dropout))
        self.attention_c = nn.Linear(gat_hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention logits (..., N, 1) for ``x`` (..., N, in_features)."""
        scores: torch.Tensor = self.attention_c(self.attention_a(x) * self.attention_b(x))
        return scores


class HIPTMIL(nn.Module):
    """``Linear(d,192)+ReLU+Dropout`` -> 2-layer transformer -> gated attention -> rho -> classifier.

    Reference: ``rl_benchmarks/models/slide_models/hiptmil.py`` (``HIPTMIL`` /
    ``TransformerModule``, itself derived from mahmoodlab/HIPT
    ``model_hierarchical_mil.py``); ``hipt_mil.yaml`` has no overrides.
    Transformer: ``nn.TransformerEncoderLayer(d_model=192, nhead=3,
    dim_feedforward=192, dropout=0.25, activation='relu')`` (post-norm) x 2;
    gated attention 192 -> 192 -> 1 with dropout 0.25; ``rho`` is
    ``Linear(192,192)+ReLU+Dropout(0.25)``; every dropout is 0.25. Trained with
    batch size 1 in the reference.

    Reference flaw reproduced by default: the padding mask is ignored (the
    reference squeezes the batch dimension and runs one slide at a time), so
    padded tiles are attended to and pooled. Parity mode therefore only
    accepts batches of one slide and raises otherwise. ``corrected=True``
    accepts any batch size, uses the mask as a key-padding mask in the
    transformer and gives padded tiles zero pooling weight, so padding changes
    nothing (in eval mode).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        metadata_cols: int = METADATA_COLS,
        corrected: bool = False,
    ) -> None:
        super().__init__()
        width, dropout = 192, 0.25
        self.phi = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout))
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=3,
            dim_feedforward=width,
            dropout=dropout,
            activation="relu",
            batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.gat = GatedAttentionNetwork(in_features=width, gat_hidden=width, gat_dropout=dropout)
        self.rho = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(width, out_features)
        self.metadata_cols = metadata_cols
        self.corrected = corrected

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, out_features) for ``x`` (B, N, 3 + d) and ``mask`` (B, N, 1)."""
        feats = x[..., self.metadata_cols :]
        if not self.corrected:
            if feats.shape[0] != 1:
                raise ValueError(
                    f"HIPT-MIL in reference mode takes one slide per batch, got {feats.shape[0]}: "
                    "use batch_size=1 (the reference setting) or corrected=True"
                )
            mask = None
        key_pad = None if mask is None else mask[..., 0]
        h = self.transformer(self.phi(feats), src_key_padding_mask=key_pad)  # (B, N, 192)
        logits = self.gat(h)  # (B, N, 1)
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        pooled = (weights.transpose(1, 2) @ h)[:, 0]  # (B, 192)
        out: torch.Tensor = self.classifier(self.rho(pooled))
        return out
