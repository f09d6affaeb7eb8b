"""LongNet dilated self-attention on ``torch.nn.functional.scaled_dot_product_attention``.

The sequence is cut into segments of length ``w`` (one per branch); inside a
segment only every ``r``-th token takes part (dilation ``r``), and head group
``j`` uses the tokens at offset ``j`` so the heads of one branch together cover
the whole segment. Each branch is one dense SDPA call over (segments × heads)
short sequences of ``w / r`` tokens, so time and memory grow linearly in the
sequence length for fixed ``w / r``. The branch outputs are mixed with weights
``softmax_b(lse_b)`` (the log-sum-exp of each branch's attention scores), which
is what a single softmax over the union of the branches' keys would give if the
branches were disjoint.

Reference: torchscale ``component/dilated_attention.py`` as vendored in
JunboShen/slide-level-pretraining ``dino/slide_encoder/torchscale/component/dilated_attention.py``
(same file in prov-gigapath ``gigapath/torchscale``): ``gathering`` (segment
length clipped to the sequence, zero padding to a multiple of the segment and of
the dilation), ``dense_to_sparse`` (head ``h`` of ``H`` padded to a multiple of
``r`` takes offset ``h // ceil(H / r)``) and ``scattering`` (branch weights from
the lse, computed under ``torch.no_grad()``, so they are constants for the
backward pass — kept here). Two differences, both deliberate: padded keys are
masked out (the reference attends to its zero padding), and the lse is computed
with a chunked score pass since SDPA does not return it (the reference uses
flash-attn, which does).

``reference_padding=True`` reproduces the reference's segmentation instead: each
branch cuts the sequence into segments of ``min(w, L)`` tokens, zero-pads the
last one to that length and every segment to a multiple of ``r``, and attends
over the zero tokens unmasked (a zero key scores 0 and carries a zero value, so
it only adds to the softmax denominator and to the lse) — what ``gathering`` +
``flash_attn_func`` compute, since the flash path never reads a padding mask —
and lays the outputs back as ``scattering`` does (see
``_attend_branch_reference`` for its shift when ``w`` is not a multiple of ``r``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_NEG = -1.0e30  # lse of a (token, head) a branch does not cover: weight exp(-1e30 - x) = 0
_LSE_CHUNK_ELEMS = 1 << 22  # scores materialised per chunk in the lse fallback pass (16 MiB in float32)


def _branch_offsets(heads: int, dilation: int, device: torch.device) -> torch.Tensor:
    """Offset inside each group of ``dilation`` tokens that head ``h`` attends to (torchscale layout)."""
    per_group = math.ceil(heads / dilation)
    return torch.arange(heads, device=device) // per_group


@torch.no_grad()
def _logsumexp_scores(q: torch.Tensor, k: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``logsumexp_j(q_i · k_j / sqrt(d))`` for (N, H, m, d) inputs, chunked over N·H; returns (N, H, m)."""
    n, h, m, d = q.shape
    qf, kf = q.reshape(n * h, m, d).float(), k.reshape(n * h, m, d).float()
    kp = None if keep is None else keep.expand(n, h, 1, m).reshape(n * h, 1, m)
    out = torch.empty(n * h, m, dtype=torch.float32, device=q.device)
    step = max(1, _LSE_CHUNK_ELEMS // (m * m))
    scale = 1.0 / math.sqrt(d)
    for s in range(0, n * h, step):
        scores = torch.bmm(qf[s : s + step], kf[s : s + step].transpose(1, 2)).mul_(scale)
        if kp is not None:
            scores = scores.masked_fill(~kp[s : s + step], float("-inf"))
        out[s : s + step] = torch.logsumexp(scores, dim=-1)
    return out.view(n, h, m)


def _fused_attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Output and log-sum-exp from PyTorch's fused CPU flash kernel, or None where it is not usable.

    ``aten._scaled_dot_product_flash_attention_for_cpu`` is the kernel behind SDPA on CPU; it returns the
    lse that public SDPA drops. Anything unexpected (other device, dtype, a PyTorch without the op) falls
    back to public SDPA plus a separate lse pass.
    """
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        return None
    bias = None
    if keep is not None:
        bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill_(~keep, float("-inf"))
    try:
        out, lse = op(q, k, v, 0.0, False, attn_mask=bias)
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return out, lse.detach().float()


def _attend_part(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pad: torch.Tensor | None,
    seg: int,
    dilation: int,
    dropout_p: float,
    need_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Consecutive segments of length ``seg`` (a multiple of ``dilation``) covering ``q`` after padding < seg."""
    b, length, h, d = q.shape
    padded = math.ceil(length / seg) * seg
    extra = padded - length
    if extra:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, extra)) for t in (q, k, v))
        tail = torch.ones(b, extra, dtype=torch.bool, device=q.device)
        base = pad if pad is not None else torch.zeros(b, length, dtype=torch.bool, device=q.device)
        pad = torch.cat([base, tail], 1)
    n, m = padded // seg, seg // dilation
    offs = _branch_offsets(h, dilation, q.device)
    heads = torch.arange(h, device=q.device)

    def sparse(t: torch.Tensor) -> torch.Tensor:  # (B, Lp, H, d) -> (B*n, H, m, d)
        t = t.reshape(b, n, m, dilation, h, d)[:, :, :, offs, heads, :]  # (B, n, m, H, d)
        return t.permute(0, 1, 3, 2, 4).reshape(b * n, h, m, d)

    qs, ks, vs = sparse(q), sparse(k), sparse(v)
    keep = None
    if pad is not None and bool(pad.any()):
        keep = ~pad.reshape(b, n, m, dilation)[:, :, :, offs]  # (B, n, m, H)
        keep = keep.permute(0, 1, 3, 2).reshape(b * n, h, 1, m)
        empty = ~keep.any(dim=-1, keepdim=True)  # rows whose keys are all padding: their queries are padding too
        keep = keep | empty
    fused = _fused_attention_lse(qs, ks, vs, keep) if (need_lse and dropout_p == 0.0) else None
    lse: torch.Tensor | None
    if fused is not None:
        out, lse = fused
    else:
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=keep, dropout_p=dropout_p)
        lse = _logsumexp_scores(qs, ks, keep) if need_lse else None
    dense = q.new_zeros(b, n, m, dilation, h, d)
    dense[:, :, :, offs, heads, :] = out.reshape(b, n, h, m, d).permute(0, 1, 3, 2, 4)
    dense = dense.reshape(b, padded, h, d)[:, :length]
    if lse is None:
        return dense, None
    full = torch.full((b, n, m, dilation, h), _NEG, dtype=torch.float32, device=q.device)
    full[:, :, :, offs, heads] = lse.reshape(b, n, h, m).permute(0, 1, 3, 2)
    return dense, full.reshape(b, padded, h)[:, :length]


def _attend_branch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pad: torch.Tensor | None,
    segment: int,
    dilation: int,
    dropout_p: float,
    need_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (segment, dilation) branch; (B, L, H, d) in, dense (B, L, H, d) out plus (B, L, H) lse.

    The full segments and the shorter last one are attended separately, so padding (and a mask) is only
    ever needed for fewer than ``dilation`` tokens of the last segment; the segments themselves are the
    reference's (a last segment of ``t`` tokens is padded to ``segment`` there, and the padding masked here).
    """
    length = q.shape[1]
    seg = math.ceil(min(segment, length) / dilation) * dilation
    n_full = length // seg
    cut = n_full * seg
    parts = []
    if n_full:
        sl = slice(0, cut)
        parts.append(
            _attend_part(
                q[:, sl], k[:, sl], v[:, sl], None if pad is None else pad[:, sl], seg, dilation, dropout_p, need_lse
            )
        )
    if cut < length:
        sl = slice(cut, length)
        tail = math.ceil((length - cut) / dilation) * dilation
        parts.append(
            _attend_part(
                q[:, sl], k[:, sl], v[:, sl], None if pad is None else pad[:, sl], tail, dilation, dropout_p, need_lse
            )
        )
    if len(parts) == 1:
        return parts[0]
    out = torch.cat([p[0] for p in parts], 1)
    part_lses = [p[1] for p in parts if p[1] is not None]
    return out, torch.cat(part_lses, 1) if need_lse else None


def _attend_branch_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: int, dilation: int, dropout_p: float, need_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One branch segmented as torchscale ``gathering`` / ``scattering`` do, zero padding attended.

    Segments of ``seg = min(segment, L)`` tokens (the sequence zero-padded to a multiple of ``seg``), each
    zero-padded to ``seg_r``, a multiple of ``dilation``. ``scattering`` lays the outputs back as
    ``n * seg_r`` positions and keeps the first ``L``: when ``seg`` is not a multiple of ``dilation`` the
    outputs of the second segment on are shifted by ``seg_r - seg`` per segment. Kept, as it is the
    reference's output (with prov-gigapath's segments only the 185363-token branch, ``r = 8``, does this,
    on sequences longer than 185363 tokens).
    """
    b, length, h, d = q.shape
    seg = min(segment, length)
    n = math.ceil(length / seg)
    seg_r = math.ceil(seg / dilation) * dilation
    if n * seg > length:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, n * seg - length)) for t in (q, k, v))
    qs, ks, vs = (F.pad(t.reshape(b * n, seg, h, d), (0, 0, 0, 0, 0, seg_r - seg)) for t in (q, k, v))
    out, lse = _attend_part(qs, ks, vs, None, seg_r, dilation, dropout_p, need_lse)
    out = out.reshape(b, n * seg_r, h, d)[:, :length]
    return out, None if lse is None else lse.reshape(b, n * seg_r, h)[:, :length]


def dilated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_lengths: Sequence[int],
    dilations: Sequence[int],
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    reference_padding: bool = False,
) -> torch.Tensor:
    """Multi-branch dilated attention.

    Parameters
    ----------
    q, k, v : torch.Tensor
        (B, L, H, d) projected queries, keys, values.
    segment_lengths, dilations : sequence of int
        One (segment length, dilation) pair per branch; a segment longer than
        ``L`` is clipped to ``L`` (torchscale ``gathering``).
    key_padding_mask : torch.Tensor, optional
        (B, L) bool, ``True`` at padding tokens; they receive no attention.
    dropout_p : float
        Attention dropout (torchscale ``attention_dropout``, 0 in LongNet configs).
    reference_padding : bool
        Segment and zero-pad as the reference does and attend to the zero padding
        (see the module docstring); no ``key_padding_mask`` then, as the reference has none.

    Returns
    -------
    torch.Tensor
        (B, L, H, d). With a single branch ``(segment >= L, dilation 1)`` this is
        exactly dense softmax attention.
    """
    if len(segment_lengths) != len(dilations) or not segment_lengths:
        raise ValueError(
            f"segment_lengths={segment_lengths!r} and dilations={dilations!r} must be non-empty and equal-length"
        )
    if reference_padding and key_padding_mask is not None:
        raise ValueError(
            "reference_padding=True attends to every token as the reference does; pass no key_padding_mask"
        )
    multi = len(segment_lengths) > 1
    outs: list[torch.Tensor] = []
    lses: list[torch.Tensor] = []
    for seg, dil in zip(segment_lengths, dilations, strict=True):
        if reference_padding:
            o, lse = _attend_branch_reference(q, k, v, int(seg), int(dil), dropout_p, need_lse=multi)
        else:
            o, lse = _attend_branch(q, k, v, key_padding_mask, int(seg), int(dil), dropout_p, need_lse=multi)
        outs.append(o)
        if lse is not None:
            lses.append(lse)
    if not multi:
        return outs[0]
    weights = torch.softmax(torch.stack(lses, 0), dim=0)  # (branches, B, L, H), constants (no grad)
    out = outs[0] * weights[0].unsqueeze(-1).to(outs[0].dtype)
    for o, w in zip(outs[1:], weights[1:], strict=True):
        out = out + o * w.unsqueeze(-1).to(o.dtype)
    return out


class DilatedSelfAttention(nn.Module):
    """LongNet self-attention: q/k/v projections, dilated attention, optional sub-LN, output projection.

    ``subln=True`` adds a LayerNorm before the output projection (torchscale
    ``EncoderConfig.subln`` default, ``inner_attn_ln`` in ``multihead_attention.py``).
    ``reference_padding=True``: see :func:`dilated_attention`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        segment_lengths: Sequence[int],
        dilations: Sequence[int],
        attn_dropout: float = 0.0,
        subln: bool = True,
        eps: float = 1e-6,
        reference_padding: bool = False,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.reference_padding = reference_padding
        self.segment_lengths = tuple(int(s) for s in segment_lengths)
        self.dilations = tuple(int(r) for r in dilations)
        self.attn_dropout = attn_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.inner_norm = nn.LayerNorm(dim, eps=eps) if subln else nn.Identity()
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); ``key_padding_mask`` (B, L) ``True`` at padding."""
        b, length, dim = x.shape
        shape = (b, length, self.heads, dim // self.heads)
        q, k, v = (proj(x).view(shape) for proj in (self.q_proj, self.k_proj, self.v_proj))
        p = self.attn_dropout if self.training else 0.0
        out = dilated_attention(
            q, k, v, self.segment_lengths, self.dilations, key_padding_mask, p, reference_padding=self.reference_padding
        )
        projected: torch.Tensor = self.out_proj(self.inner_norm(out.reshape(b, length, dim)))
        return projected
