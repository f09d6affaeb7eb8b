"""Dilated attention: exact dense attention in the covering case, the torchscale dilation layout, padding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wsistream.slide_ssl.attention import DilatedSelfAttention, dilated_attention
from wsistream.slide_ssl.config import EncoderConfig
from wsistream.slide_ssl.encoder import SlideEncoder, sincos_2d


def _naive(q, k, v, segments, dilations, pad=None):
    """Loop reference: head h of branch (w, r) attends among tokens s0 + h // ceil(H / r) + r * j of each segment."""
    b, length, heads, d = q.shape
    outs, lses = [], []
    for seg, r in zip(segments, dilations, strict=True):
        seg = math.ceil(min(seg, length) / r) * r
        out = torch.zeros(b, length, heads, d, dtype=torch.float64)
        lse = torch.full((b, length, heads), -1e30, dtype=torch.float64)
        for bi in range(b):
            for h in range(heads):
                off = h // math.ceil(heads / r)
                for s0 in range(0, length, seg):
                    idx = [i for i in range(s0 + off, min(s0 + seg, length), r) if pad is None or not pad[bi, i]]
                    if not idx:
                        continue
                    ix = torch.tensor(idx)
                    sc = q[bi, ix, h].double() @ k[bi, ix, h].double().T / math.sqrt(d)
                    out[bi, ix, h] = sc.softmax(-1) @ v[bi, ix, h].double()
                    lse[bi, ix, h] = torch.logsumexp(sc, -1)
        outs.append(out)
        lses.append(lse)
    w = torch.softmax(torch.stack(lses), 0)
    return sum(o * wi[..., None] for o, wi in zip(outs, w, strict=True))


def _qkv(b=2, length=37, heads=4, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, length, heads, d, generator=g) for _ in range(3))


@pytest.mark.parametrize("segment", [37, 64, 5000])
def test_covering_branch_equals_dense_attention(segment):
    q, k, v = _qkv()
    out = dilated_attention(q, k, v, (segment,), (1,))
    dense = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, dense, rtol=0, atol=1e-6)


def test_covering_module_equals_explicit_multihead_attention():
    torch.manual_seed(0)
    attn = DilatedSelfAttention(32, 4, segment_lengths=(4096,), dilations=(1,), subln=False).eval()
    x = torch.randn(2, 50, 32)
    q, k, v = (p(x).view(2, 50, 4, 8).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    ref = attn.out_proj((weights @ v).transpose(1, 2).reshape(2, 50, 32))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)


def test_covering_encoder_matches_single_dense_branch_whatever_the_segment():
    """Two encoders, same weights; segment 10000 vs exactly L + 1 (both dense) give the same outputs."""
    cfg = EncoderConfig(in_dim=8, dim=32, depth=2, heads=4, ffn_dim=64, segment_lengths=(10000,), dilations=(1,))
    torch.manual_seed(0)
    a = SlideEncoder(cfg).eval()
    b = SlideEncoder(EncoderConfig(**{**cfg.__dict__, "segment_lengths": (41,)})).eval()
    b.load_state_dict(a.state_dict())
    x, pos = torch.randn(1, 40, 8), torch.randint(0, 9, (1, 40, 2))
    torch.testing.assert_close(a(x, pos).patch, b(x, pos).patch)


@pytest.mark.parametrize(
    ("segments", "dilations"),
    [((8,), (1,)), ((8, 16), (1, 2)), ((4, 8, 16), (1, 2, 4)), ((4, 8, 32), (1, 2, 8)), ((6, 12), (1, 3))],
)
def test_multi_branch_matches_loop_reference(segments, dilations):
    q, k, v = _qkv()
    out = dilated_attention(q, k, v, segments, dilations)
    torch.testing.assert_close(out.double(), _naive(q, k, v, segments, dilations), rtol=0, atol=1e-5)


def test_padding_is_ignored():
    q, k, v = _qkv()
    pad = torch.zeros(2, 37, dtype=torch.bool)
    pad[1, 29:] = True
    out = dilated_attention(q, k, v, (4, 8, 16), (1, 2, 4), pad)
    ref = _naive(q, k, v, (4, 8, 16), (1, 2, 4), pad)
    torch.testing.assert_close(out.double()[~pad], ref[~pad], rtol=0, atol=1e-5)
    assert torch.isfinite(out).all()


def test_gradients_are_finite_with_padding():
    q, k, v = (t.requires_grad_() for t in _qkv())
    pad = torch.zeros(2, 37, dtype=torch.bool)
    pad[0, 10:] = True
    dilated_attention(q, k, v, (4, 8, 16), (1, 2, 4), pad).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_encoder_batch_with_padding_equals_single_slides(tiny_encoder):
    torch.manual_seed(0)
    enc = SlideEncoder(tiny_encoder).eval()
    xa, pa = torch.randn(1, 30, 8), torch.randint(0, 8, (1, 30, 2))
    xb, pb = torch.randn(1, 19, 8), torch.randint(0, 8, (1, 19, 2))
    x = torch.zeros(2, 30, 8)
    pos = torch.zeros(2, 30, 2, dtype=torch.long)
    x[0], pos[0], x[1, :19], pos[1, :19] = xa[0], pa[0], xb[0], pb[0]
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 19:] = True
    both = enc(x, pos, pad)
    torch.testing.assert_close(both.cls[0], enc(xa, pa).cls[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both.cls[1], enc(xb, pb).cls[0], rtol=1e-4, atol=1e-5)


def test_sincos_matches_mae_formula():
    pos = torch.tensor([[3, 5]])
    emb = sincos_2d(pos, 16)
    omega = 1.0 / 10000 ** (torch.arange(4) / 4)
    expected = torch.cat([torch.sin(3 * omega), torch.cos(3 * omega), torch.sin(5 * omega), torch.cos(5 * omega)])
    torch.testing.assert_close(emb[0], expected)


def test_layer_cls_and_layer_numbers(tiny_encoder):
    enc = SlideEncoder(tiny_encoder).eval()
    out = enc(torch.randn(1, 12, 8), torch.randint(0, 4, (1, 12, 2)), layers=(1, -1))
    assert out.layer_cls is not None and out.layer_cls.shape == (1, 2, 32)
    torch.testing.assert_close(out.layer_cls[:, 1], out.cls)
    with pytest.raises(ValueError, match=r"outside 1\.\.2"):
        enc(torch.randn(1, 4, 8), torch.zeros(1, 4, 2, dtype=torch.long), layers=(3,))


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_fallback_lse_paths_agree_in_value_and_gradient(fused, monkeypatch):
    """CPU uses the flash kernel's lse; elsewhere SDPA plus a chunked lse pass. Both match the loop reference."""
    import wsistream.slide_ssl.attention as attention

    if not fused:
        monkeypatch.setattr(attention, "_fused_attention_lse", lambda *a: None)
    q, k, v = (t.requires_grad_() for t in _qkv(length=45))
    pad = torch.zeros(2, 45, dtype=torch.bool)
    pad[1, 33:] = True
    out = dilated_attention(q, k, v, (8, 16, 64), (1, 2, 4), pad)
    ref_q, ref_k, ref_v = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = _naive(ref_q, ref_k, ref_v, (8, 16, 64), (1, 2, 4), pad)
    torch.testing.assert_close(out.double()[~pad], ref[~pad].detach(), rtol=0, atol=1e-5)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)) * (~pad)[..., None, None]
    (out * weight).sum().backward()
    # branch weights are constants for the backward pass (reference: computed under no_grad)
    outs = []
    for seg, r in zip((8, 16, 64), (1, 2, 4), strict=True):
        outs.append(_naive(ref_q, ref_k, ref_v, (seg,), (r,), pad))
    lse_w = _branch_weights(ref_q.detach(), ref_k.detach(), (8, 16, 64), (1, 2, 4), pad)
    mixed = sum(o * w[..., None] for o, w in zip(outs, lse_w, strict=True))
    (mixed * weight.double()).sum().backward()
    for a, b in ((q, ref_q), (k, ref_k), (v, ref_v)):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=1e-4)


def _branch_weights(q, k, segments, dilations, pad):
    """softmax over branches of each branch's lse, from the loop reference (as constants)."""
    b, length, heads, d = q.shape
    lses = []
    for seg, r in zip(segments, dilations, strict=True):
        seg = math.ceil(min(seg, length) / r) * r
        lse = torch.full((b, length, heads), -1e30, dtype=torch.float64)
        for bi in range(b):
            for h in range(heads):
                off = h // math.ceil(heads / r)
                for s0 in range(0, length, seg):
                    idx = [i for i in range(s0 + off, min(s0 + seg, length), r) if not pad[bi, i]]
                    if idx:
                        ix = torch.tensor(idx)
                        lse[bi, ix, h] = torch.logsumexp(q[bi, ix, h] @ k[bi, ix, h].T / math.sqrt(d), -1)
        lses.append(lse)
    return torch.softmax(torch.stack(lses), 0)


def test_checkpointed_layers_give_the_same_loss_and_gradients():
    """Recomputing activations in backward (dropout masks replayed) changes nothing but memory."""
    import dataclasses

    cfg = EncoderConfig(in_dim=8, dim=32, depth=3, heads=4, ffn_dim=64, segment_lengths=(8, 16), dilations=(1, 2),
                        dropout=0.2, drop_path=0.1)  # fmt: skip
    x, pos = torch.randn(2, 30, 8), torch.randint(0, 6, (2, 30, 2))
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 25:] = True
    runs, saved = [], []
    for ckpt in (False, True):
        torch.manual_seed(0)
        enc = SlideEncoder(dataclasses.replace(cfg, checkpoint_layers=ckpt)).train()
        torch.manual_seed(1)
        count = [0]

        def pack(t, count=count):
            count[0] += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = enc(x, pos, pad)
        saved.append(count[0])
        loss = out.cls.square().sum() + out.patch.mean()
        loss.backward()
        runs.append((loss.detach(), [p.grad for p in enc.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = runs
    assert saved[1] < saved[0] / 3  # the checkpointed forward keeps only the layer inputs
    torch.testing.assert_close(loss_a, loss_b)
    assert len(grads_a) == len(grads_b) == sum(1 for _ in enc.parameters()) - 1  # all but the unused mask token
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
