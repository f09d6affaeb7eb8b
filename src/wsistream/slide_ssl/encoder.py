"""LongNet slide encoder over tile-embedding sequences.

Input projection ``d -> D``, optional iBOT mask token, fixed 2-D sin-cos
position embedding of the tile grid indices, a CLS token (no position), a stack
of pre-LN transformer layers with dilated attention, and a final LayerNorm.

Reference: ``LongNetViT`` in JunboShen/slide-level-pretraining
``dinov2_with_new_settings/dinov2/models/slide_encoder/slide_encoder.py`` (and
prov-gigapath ``gigapath/slide_encoder.py``): ``PatchEmbed`` is a ``Linear``;
the mask token replaces the projected embedding before the position embedding
is added (``prepare_tokens_with_masks``); the position embedding is MAE's
``get_2d_sincos_pos_embed`` evaluated at ``floor(coords / tile_size)``; weights
are xavier-uniform, CLS ``normal(std=0.02)``, mask token zeros. The sin-cos
embedding is computed from the indices on the fly instead of being looked up
in a ``slide_ngrids**2`` table, so there is no grid-size cap. The layer
follows torchscale's ``EncoderLayer`` with ``subln=True``: pre-LN, a LayerNorm
inside attention before the output projection and inside the FFN before
``fc2``, GELU, dropout on both residual branches. The reference applies a
LayerNorm at the end of the torchscale encoder *and* in ``LongNetViT``; one
final LayerNorm is kept here.

``EncoderConfig(mode="reference")`` reproduces the reference's numerics instead
(what :func:`~wsistream.slide_ssl.gigapath.load_gigapath_slide_encoder` returns):

- position embedding as ``LongNetViT`` evaluates it (:func:`reference_sincos_2d`):
  the table row of the flat index ``x * slide_ngrids + y`` (``coords_to_pos``), whose
  first half encodes ``y`` and second half ``x`` (``get_2d_sincos_pos_embed``
  builds its grid with ``np.meshgrid(w, h)``: "here w goes first"), so a ``y`` of
  ``slide_ngrids`` or more runs into the next row; computed in float64 as numpy does;
- the torchscale encoder's final LayerNorm (``encoder.layer_norm``) and then
  ``LongNetViT.norm`` on the final output; per-layer CLS (``all_layer_embed``) only
  through ``LongNetViT.norm``, as ``encoder_states`` are taken before
  ``encoder.layer_norm``;
- every LayerNorm of the layers and ``encoder.layer_norm`` with eps 1e-5
  (torchscale ``layernorm_eps``), ``LongNetViT.norm`` with ``eps`` (1e-6);
- dropout ``cfg.dropout`` on the input tokens, CLS included
  (``Encoder.forward_embedding``), GELU evaluated in float32 (``FeedForwardNetwork``);
- dilated attention over the reference's zero-padded segments, padding attended
  (:func:`~wsistream.slide_ssl.attention.dilated_attention` ``reference_padding``);
  padded tokens of a batch are zeroed at the input (``x * (1 - encoder_padding_mask)``)
  and take part in attention, as the flash-attention path never reads the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from wsistream.slide_ssl.attention import DilatedSelfAttention
from wsistream.slide_ssl.config import EncoderConfig


def _sincos_halves(first: torch.Tensor, second: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``[sin(first * w), cos(first * w), sin(second * w), cos(second * w)]``, ``w_i = 10000 ** (-i / (dim / 4))``."""
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=dtype, device=first.device) / quarter))
    out = []
    for p in (first, second):
        angle = p.to(dtype).unsqueeze(-1) * omega
        out += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(out, dim=-1)


def sincos_2d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding of integer grid positions (the default mode's layout).

    Parameters
    ----------
    pos : torch.Tensor
        (..., 2) grid indices ``(x, y)`` = tile column, row.
    dim : int
        Embedding size, a multiple of 4: the first half encodes ``x``, the second ``y``,
        each as ``[sin(p * w_i), cos(p * w_i)]`` with ``w_i = 10000 ** (-i / (dim / 4))`` (MAE
        ``get_1d_sincos_pos_embed_from_grid``), in float32.
    """
    return _sincos_halves(pos[..., 0], pos[..., 1], dim, torch.float32)


def reference_sincos_2d(pos: torch.Tensor, dim: int, slide_ngrids: int = 1000) -> torch.Tensor:
    """The position embedding as prov-gigapath ``LongNetViT`` looks it up (``EncoderConfig(mode="reference")``).

    ``coords_to_pos`` gives the flat index ``p = x * slide_ngrids + y`` into the table of
    ``get_2d_sincos_pos_embed(dim, slide_ngrids)``, whose row ``p`` encodes ``(p % slide_ngrids,
    p // slide_ngrids)`` with the first component in the first half — ``y`` first, ``x`` second while
    ``y < slide_ngrids``; a larger ``y`` runs into the next row, as in the reference. Float64 (numpy
    builds the table in float64), float32 on MPS, which has no float64.

    Raises
    ------
    ValueError
        When a flat index falls outside the ``slide_ngrids ** 2`` table (the reference's lookup fails there).
    """
    g = int(slide_ngrids)
    flat = pos[..., 0].long() * g + pos[..., 1].long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= g * g):
        raise ValueError(
            f"grid index x * {g} + y outside 0..{g * g - 1} (x up to {int(pos[..., 0].max())}, y up to "
            f"{int(pos[..., 1].max())}); pass a larger slide_ngrids"
        )
    dtype = torch.float32 if pos.device.type == "mps" else torch.float64
    return _sincos_halves(flat % g, flat // g, dim, dtype)


class GridStem(nn.Module):
    """``h + conv(h)`` with the tokens laid on their tile grid (``EncoderConfig.grid_stem``, off by default).

    Tokens are scattered onto a zero canvas spanning each sample's own grid extent (padding left out), a
    ``k x k`` convolution mixes every tile with its neighbours, and the result is read back at the tokens'
    cells: a view of the local layout that does not depend on where the slide lies on the glass (two tokens
    on one cell: one of them is kept).
    """

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2)

    def forward(self, h: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) tokens at (B, L, 2) grid positions, ``pad`` (B, L) True at padding -> mixed tokens."""
        b, n, d = h.shape
        valid = torch.ones(b, n, dtype=torch.bool, device=h.device) if pad is None else ~pad
        p = pos.long()
        lo = torch.where(valid.unsqueeze(-1), p, torch.iinfo(torch.long).max).amin(dim=1, keepdim=True)
        rel = torch.where(valid.unsqueeze(-1), p - lo, 0)
        width, height = (int(rel[..., k].max()) + 1 if n else 1 for k in (0, 1))
        canvas = h.new_zeros(b, height, width, d)
        row = torch.arange(b, device=h.device).unsqueeze(1).expand(b, n)
        canvas[row[valid], rel[..., 1][valid], rel[..., 0][valid]] = h[valid]
        mixed = self.conv(canvas.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)[row, rel[..., 1], rel[..., 0]]
        return h + torch.where(valid.unsqueeze(-1), mixed, 0.0)


class _DropPath(nn.Module):
    """Per-sample stochastic depth."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.empty(x.shape[0], *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class LongNetLayer(nn.Module):
    """Pre-LN transformer layer with dilated self-attention and a sub-LN FFN."""

    def __init__(self, cfg: EncoderConfig, drop_path: float) -> None:
        super().__init__()
        eps = cfg.inner_eps
        self.attn_norm = nn.LayerNorm(cfg.dim, eps=eps)
        self.attn = DilatedSelfAttention(
            cfg.dim,
            cfg.heads,
            cfg.segment_lengths,
            cfg.dilations,
            cfg.attn_dropout,
            cfg.subln,
            eps,
            reference_padding=cfg.reference,
        )
        self.ffn_norm = nn.LayerNorm(cfg.dim, eps=eps)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.ffn_inner_norm: nn.Module = nn.LayerNorm(cfg.ffn_dim, eps=eps) if cfg.subln else nn.Identity()
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.drop_path = _DropPath(drop_path)
        self.gelu_fp32 = cfg.reference

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        x = x + self.drop_path(self.dropout(self.attn(self.attn_norm(x), pad)))
        h = self.fc1(self.ffn_norm(x))
        h = F.gelu(h.float()).type_as(h) if self.gelu_fp32 else F.gelu(h)
        h = self.fc2(self.ffn_inner_norm(h))
        out: torch.Tensor = x + self.drop_path(self.dropout(h))
        return out


@dataclass(frozen=True)
class EncoderOutput:
    """Normalised encoder outputs.

    Attributes
    ----------
    cls : torch.Tensor
        (B, D) final-layer CLS token after the final LayerNorm (reference mode: ``encoder_norm``, then ``norm``).
    patch : torch.Tensor
        (B, L, D) final-layer tile tokens after the same normalisation as ``cls``.
    layer_cls : torch.Tensor or None
        (B, len(layers), D) CLS of the requested layers, each through ``norm`` only
        (the reference's ``all_layer_embed=True`` path, which skips the torchscale encoder's LayerNorm).
    """

    cls: torch.Tensor
    patch: torch.Tensor
    layer_cls: torch.Tensor | None = None


class SlideEncoder(nn.Module):
    """LongNet slide encoder.

    Examples
    --------
    >>> enc = SlideEncoder(EncoderConfig(in_dim=16, dim=32, depth=2, heads=4, ffn_dim=64))
    >>> out = enc(torch.randn(1, 10, 16), torch.randint(0, 5, (1, 10, 2)))
    >>> tuple(out.cls.shape), tuple(out.patch.shape)
    ((1, 32), (1, 10, 32))
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.dim
        self.input_proj = nn.Linear(cfg.in_dim, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.dim))
        self.grid_stem = GridStem(cfg.dim, cfg.grid_stem) if cfg.grid_stem else None
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist() if cfg.depth > 1 else [cfg.drop_path]
        self.layers = nn.ModuleList(LongNetLayer(cfg, r) for r in rates)
        # reference mode: torchscale Encoder's input dropout and final LayerNorm (module docstring)
        self.input_dropout: nn.Module = nn.Dropout(cfg.dropout) if cfg.reference else nn.Identity()
        self.encoder_norm: nn.Module | None = nn.LayerNorm(cfg.dim, eps=cfg.inner_eps) if cfg.reference else None
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.apply(self._init_weights)
        nn.init.normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def layer_numbers(self, layers: Sequence[int]) -> list[int]:
        """1-based layer numbers of ``layers`` (negative counts from the end); ``ValueError`` for a missing one."""
        depth = self.cfg.depth
        out = []
        for i in layers:
            n = depth + 1 + i if i < 0 else i
            if not 1 <= n <= depth:
                raise ValueError(f"layer {i} is outside 1..{depth} (or -{depth}..-1); pass an existing layer number")
            out.append(n)
        return out

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        pad: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        layers: Sequence[int] | None = None,
    ) -> EncoderOutput:
        """Encode a batch of tile sequences.

        Parameters
        ----------
        x : torch.Tensor
            (B, L, d) tile embeddings.
        pos : torch.Tensor
            (B, L, 2) integer tile grid indices ``(x, y)``.
        pad : torch.Tensor, optional
            (B, L) bool, ``True`` at padding tokens: masked out of attention by default; in reference
            mode zeroed at the input and attended, as the reference does.
        mask : torch.Tensor, optional
            (B, L) bool, ``True`` where the embedding is replaced by the mask token (iBOT).
        layers : sequence of int, optional
            1-based layer numbers (negative counts from the end) whose CLS to return in
            ``layer_cls``, e.g. ``(-4, -3, -2, -1)`` for the reference's ``feat_layer="9-10-11-12"``.
        """
        cfg = self.cfg
        b = x.shape[0]
        h = self.input_proj(x)
        if mask is not None:
            h = torch.where(mask.unsqueeze(-1), self.mask_token.to(h.dtype), h)
        if self.grid_stem is not None:
            h = self.grid_stem(h, pos, pad)
        if cfg.absolute_positions:
            ref = cfg.reference
            position = reference_sincos_2d(pos, cfg.dim, cfg.slide_ngrids) if ref else sincos_2d(pos, cfg.dim)
            h = h + position.to(h.dtype)
        h = self.input_dropout(torch.cat([self.cls_token.to(h.dtype).expand(b, -1, -1), h], dim=1))
        full_pad = None
        if pad is not None and bool(pad.any()):
            full_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
            if cfg.reference:  # torchscale Encoder.forward; its flash attention never reads the mask
                h = h * (~full_pad).unsqueeze(-1).to(h.dtype)
                full_pad = None
        wanted = self.layer_numbers(layers) if layers else []
        collected: dict[int, torch.Tensor] = {}
        recompute = cfg.checkpoint_layers and self.training and torch.is_grad_enabled()
        for n, layer in enumerate(self.layers, start=1):
            h = checkpoint(layer, h, full_pad, use_reentrant=False) if recompute else layer(h, full_pad)
            if n in wanted:
                collected[n] = self.norm(h[:, 0])
        out = self.norm(h if self.encoder_norm is None else self.encoder_norm(h))
        layer_cls = torch.stack([collected[n] for n in wanted], dim=1) if wanted else None
        return EncoderOutput(cls=out[:, 0], patch=out[:, 1:], layer_cls=layer_cls)
