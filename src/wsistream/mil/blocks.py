"""Layers shared by the MIL aggregation models.

Written from the structure of ``rl_benchmarks/models/slide_models/utils/``
(``mlp.py``, ``tile_layers.py``, ``extreme_layer.py``, ``attention.py``) in
owkin/HistoSSLscaling. Attribute names follow the reference so that the
state-dict keys of every model match it, which lets reference checkpoints be
loaded and parameter counts be compared key by key.

Conventions (reference): a batch is ``(B, N, 3 + d)`` where the first three
columns are ``[tile_level, x, y]`` and are dropped inside ``forward``; the
padding mask is ``(B, N, 1)`` bool with ``True`` marking a padded tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Number of leading metadata columns ``[tile_level, x, y]`` in a tile array.
METADATA_COLS = 3

ActivationFactory = Callable[[], nn.Module]


def _check_dropout(hidden: Sequence[int] | None, dropout: Sequence[float] | None) -> None:
    if dropout is None:
        return
    if hidden is None or len(hidden) != len(dropout):
        raise ValueError(
            f"dropout {list(dropout)} needs one rate per hidden layer; got hidden={hidden}. "
            "Pass dropout=None or a list as long as hidden."
        )


class MLP(nn.Sequential):
    """Fully connected head: ``[Linear -> activation -> dropout] * len(hidden) -> Linear``.

    Reference: ``rl_benchmarks/models/slide_models/utils/mlp.py`` (``MLP``). Each
    hidden layer is its own ``nn.Sequential``; ``bias`` applies to the hidden
    layers only, the output layer always has a bias (as in the reference).

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    hidden : sequence of int, optional
        Hidden widths; ``None`` gives a single linear layer.
    dropout : sequence of float, optional
        One dropout rate per hidden layer.
    activation : callable returning a module, optional
        Activation factory (e.g. ``nn.Sigmoid``); ``None`` for no activation.
    bias : bool
        Bias on the hidden layers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] | None = None,
        dropout: Sequence[float] | None = None,
        activation: ActivationFactory | None = nn.Sigmoid,
        bias: bool = True,
    ) -> None:
        _check_dropout(hidden, dropout)
        layers: list[nn.Module] = []
        width = in_features
        for i, h in enumerate(hidden or ()):
            seq: list[nn.Module] = [nn.Linear(width, h, bias=bias)]
            if activation is not None:
                seq.append(activation())
            if dropout is not None:
                seq.append(nn.Dropout(dropout[i]))
            layers.append(nn.Sequential(*seq))
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)


class MaskedLinear(nn.Linear):
    """Linear layer whose outputs at padded tiles are replaced by ``mask_value``.

    Reference: ``rl_benchmarks/models/slide_models/utils/tile_layers.py``
    (``MaskedLinear``). With ``mask_value=-inf`` a following sigmoid / softmax
    gives padded tiles exactly zero weight.
    """

    def __init__(self, in_features: int, out_features: int, mask_value: float, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.mask_value = float(mask_value)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layer, then fill padded positions (``mask`` (B, N, 1) True) with ``mask_value``."""
        out = super().forward(x)
        if mask is not None:
            out = out.masked_fill(mask, self.mask_value)
        return out

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, mask_value={self.mask_value}"


class TilesMLP(nn.Module):
    """Tile-wise MLP: ``[MaskedLinear(-inf) -> activation] * len(hidden) -> Linear``.

    Reference: ``rl_benchmarks/models/slide_models/utils/tile_layers.py``
    (``TilesMLP``). Hidden layers set padded tiles to ``-inf`` before the
    activation (sigmoid/ReLU then give 0); the output layer is a plain linear
    layer, so padded tiles come out as the output bias and must be masked by
    the caller (as every reference model does).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        hidden: Sequence[int] | None = None,
        bias: bool = True,
        activation: ActivationFactory = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.hidden_layers = nn.ModuleList()
        width = in_features
        for h in hidden or ():
            self.hidden_layers.append(MaskedLinear(width, h, mask_value=float("-inf"), bias=bias))
            self.hidden_layers.append(activation())
            width = h
        self.hidden_layers.append(nn.Linear(width, out_features, bias=bias))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map (B, N, in) to (B, N, out)."""
        for layer in self.hidden_layers:
            x = layer(x, mask) if isinstance(layer, MaskedLinear) else layer(x)
        return x


class ExtremeLayer(nn.Module):
    """Concatenate the ``n_top`` highest and ``n_bottom`` lowest tile scores.

    Reference: ``rl_benchmarks/models/slide_models/utils/extreme_layer.py``.
    Padded tiles are excluded by filling them with ``-inf`` / ``+inf`` before
    ``topk``; if a slide has fewer real tiles than ``n_top`` (or ``n_bottom``)
    the missing slots are set to 0, as the reference does in a padded batch
    (it warns). Deviation: an unpadded slide with fewer tiles than slots gets
    the same zero-filled slots here, where the reference's ``topk`` raises.

    Returns ``(values, indices)``, each (B, n_top + n_bottom, C).
    """

    def __init__(self, n_top: int = 0, n_bottom: int = 0) -> None:
        super().__init__()
        if n_top < 0 or n_bottom < 0 or n_top + n_bottom == 0:
            raise ValueError(f"n_top={n_top}, n_bottom={n_bottom}: pass non-negative counts, at least one > 0")
        self.n_top = n_top
        self.n_bottom = n_bottom

    def _pick(
        self, x: torch.Tensor, mask: torch.Tensor | None, k: int, largest: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        if n < k:  # fewer tiles than slots: pad with masked tiles so the empty slots become 0
            if mask is None:
                mask = torch.zeros(b, n, 1, dtype=torch.bool, device=x.device)
            x = torch.cat([x, x.new_zeros(b, k - n, x.shape[2])], dim=1)
            mask = torch.cat([mask, torch.ones(b, k - n, 1, dtype=torch.bool, device=x.device)], dim=1)
        fill = float("-inf") if largest else float("inf")
        scores = x if mask is None else x.masked_fill(mask, fill)
        values, idx = scores.topk(k=k, dim=1, largest=largest, sorted=True)
        values = values.masked_fill(torch.isinf(values), 0.0)
        return values, idx

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Select extremes along the tile dimension of ``x`` (B, N, C)."""
        parts = []
        if self.n_top:
            parts.append(self._pick(x, mask, self.n_top, largest=True))
        if self.n_bottom:
            parts.append(self._pick(x, mask, self.n_bottom, largest=False))
        values = torch.cat([p[0] for p in parts], dim=1)
        indices = torch.cat([p[1] for p in parts], dim=1)
        return values, indices

    def extra_repr(self) -> str:  # noqa: D102
        return f"n_top={self.n_top}, n_bottom={self.n_bottom}"


class GatedAttention(nn.Module):
    """Gated attention pooling (Ilse et al., 2018).

    Reference: ``rl_benchmarks/models/slide_models/utils/attention.py``
    (``GatedAttention``): ``logits = w(tanh(att(v)) * sigmoid(gate(v))) / T``,
    with ``w`` a masked linear layer so padded tiles get zero weight.
    """

    def __init__(self, d_model: int = 128, temperature: float = 1.0) -> None:
        super().__init__()
        self.att = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_model, d_model)
        self.w = MaskedLinear(d_model, 1, mask_value=float("-inf"))
        self.temperature = temperature

    def attention(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention logits (B, N, 1)."""
        h = torch.tanh(self.att(v)) * torch.sigmoid(self.gate(v))
        scores: torch.Tensor = self.w(h, mask)
        return scores / self.temperature

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the pooled vector (B, D) and the attention weights (B, N, 1)."""
        weights = torch.softmax(self.attention(v, mask), dim=1)
        pooled = torch.matmul(weights.transpose(1, 2), v).squeeze(1)
        return pooled, weights


class SelfAttention(nn.Module):
    """Multi-head self-attention without masking (timm ``Attention`` layout).

    Reference: ``rl_benchmarks/models/slide_models/utils/attention.py``
    (``SelfAttention``): one ``qkv`` projection (bias off by default), scaled
    dot-product softmax attention, output projection ``proj``.
    """

    def __init__(self, in_features: int, num_heads: int = 8, qkv_bias: bool = False) -> None:
        super().__init__()
        if in_features % num_heads:
            raise ValueError(
                f"in_features={in_features} is not divisible by num_heads={num_heads}; "
                "pass a feature dimension that is a multiple of the head count"
            )
        self.num_heads = num_heads
        self.scale = (in_features // num_heads) ** -0.5
        self.qkv = nn.Linear(in_features, 3 * in_features, bias=qkv_bias)
        self.proj = nn.Linear(in_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the whole sequence of ``x`` (B, L, C)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out: torch.Tensor = self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return out


def count_parameters(model: nn.Module) -> int:
    """Count the trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
