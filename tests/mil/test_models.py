"""MIL models: parameter counts against the reference architecture, shapes, padding, init."""

from __future__ import annotations

import itertools

import pytest
import torch

from wsistream.mil import (
    ABMIL,
    DSMIL,
    HIPTMIL,
    MODELS,
    Chowder,
    MeanPool,
    TransMIL,
    build_model,
    count_parameters,
)
from wsistream.mil.registry import CORRECTABLE
from wsistream.registry import MIL_MODELS


def lin(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def mlp(*widths: int) -> int:
    return sum(lin(a, b) for a, b in itertools.pairwise(widths))


# Expected counts, derived by hand from the reference layer lists
# (rl_benchmarks/models/slide_models/*.py with the paper yamls), out_features = 1:
def expected(name: str, d: int) -> int:
    if name == "meanpool":  # mean_pool.yaml: MLP(d, 1, hidden=None) = Linear(d, 1)
        return lin(d, 1)
    if name == "chowder":  # TilesMLP d->128->1, ExtremeLayer (no params), MLP 20->128->64->1
        return mlp(d, 128, 1) + mlp(20, 128, 64, 1)
    if name == "abmil":  # TilesMLP d->128, GatedAttention(att 128x128, gate 128x128, w 128->1), MLP 128->128->64->1
        return lin(d, 128) + 2 * lin(128, 128) + lin(128, 1) + mlp(128, 128, 64, 1)
    if name == "dsmil":  # scores d->200->100->1, (unused) values d->32, queries d->200->100->32, bag MLP d->200->100->1
        return mlp(d, 200, 100, 1) + lin(d, 32) + mlp(d, 200, 100, 32) + mlp(d, 200, 100, 1)
    if name == "transmil":
        block = lin(d, 3 * d, bias=False) + lin(d, d) + 2 * d  # qkv (no bias) + proj + LayerNorm
        ppeg = sum(k * k * d * d + d for k in (3, 5, 7))  # full (not depthwise) Conv2d(d, d, k)
        return d + 2 * block + ppeg + 2 * d + lin(d, 1)  # cls token, cor, agg, PPEG, norm, head
    if name == "hipt":
        w = 192
        layer = 3 * w * w + 3 * w + lin(w, w) + lin(w, w) + lin(w, w) + 2 * 2 * w  # MHA in/out, FFN, 2 norms
        gat = 2 * lin(w, w) + lin(w, 1)
        return lin(d, w) + 2 * layer + gat + lin(w, w) + lin(w, 1)
    raise KeyError(name)


# Pinned values (equal to the formulas above; a change in either is a regression).
PINNED = {
    768: {
        "meanpool": 769,
        "chowder": 109_570,
        "abmil": 156_418,
        "dsmil": 549_742,
        "transmil": 53_683_969,
        "hipt": 705_410,
    },
    1536: {
        "meanpool": 1_537,
        "chowder": 207_874,
        "abmil": 254_722,
        "dsmil": 1_035_118,
        "transmil": 214_715_905,
        "hipt": 852_866,
    },
}


@pytest.mark.parametrize("d", [768, 1536])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_matches_reference(name, d):
    with torch.device("meta"):  # no memory for the 215M-parameter TransMIL
        model = build_model(name, d, 1)
    assert count_parameters(model) == expected(name, d) == PINNED[d][name]


def test_dsmil_corrected_drops_only_the_unused_value_layer():
    with torch.device("meta"):
        parity, fixed = DSMIL(768), DSMIL(768, corrected=True)
    assert count_parameters(parity) - count_parameters(fixed) == lin(768, 32)
    assert fixed.tiles_values is None


def test_state_dict_keys_follow_reference_names():
    keys = {n: set(build_model(n, 16, 1).state_dict()) for n in MODELS}
    assert {"mlp.0.weight", "mlp.0.bias"} == keys["meanpool"]
    assert {
        "score_model.hidden_layers.0.weight",
        "score_model.hidden_layers.2.weight",
        "mlp.0.0.weight",
        "mlp.2.weight",
    } <= keys["chowder"]
    assert {
        "tiles_emb.hidden_layers.0.weight",
        "attention_layer.att.weight",
        "attention_layer.gate.weight",
        "attention_layer.w.weight",
        "mlp.1.0.weight",
    } <= keys["abmil"]
    assert {
        "tiles_scores.hidden_layers.4.weight",
        "tiles_values.hidden_layers.0.weight",
        "tiles_queries.hidden_layers.4.weight",
        "mlp.2.weight",
    } <= keys["dsmil"]
    assert {
        "cls_token",
        "cor.attn.qkv.weight",
        "cor.attn.proj.bias",
        "cor.norm1.weight",
        "pos_enc.group_conv3.weight",
        "agg.norm1.bias",
        "norm.weight",
        "head.weight",
    } <= keys["transmil"]
    assert "cor.attn.qkv.bias" not in keys["transmil"]
    assert {
        "phi.0.weight",
        "transformer.layers.1.self_attn.in_proj_weight",
        "gat.attention_c.weight",
        "rho.0.weight",
        "classifier.bias",
    } <= keys["hipt"]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("out", [1, 3])
def test_forward_shape(name, out):
    torch.manual_seed(0)
    b = 1 if name == "hipt" else 4
    x = torch.randn(b, 25, 3 + 16)
    mask = torch.zeros(b, 25, 1, dtype=torch.bool)
    model = build_model(name, 16, out).eval()
    assert model(x, mask).shape == (b, out)
    assert model(x).shape == (b, out)


def _padded_pair(d: int = 16, lengths=(30, 12, 6)):
    torch.manual_seed(1)
    real = [torch.randn(1, n, 3 + d) for n in lengths]
    x = torch.zeros(len(lengths), max(lengths) + 5, 3 + d)
    mask = torch.ones(len(lengths), max(lengths) + 5, 1, dtype=torch.bool)
    for i, r in enumerate(real):
        x[i, : r.shape[1]] = r[0]
        mask[i, : r.shape[1]] = False
    return real, x, mask


#: Reference implementations that ignore the padding mask (documented flaws; their ``corrected``
#: variants are padding-invariant, and the two tests below pin the flaw itself).
_REFERENCE_IGNORES_PADDING = frozenset({"transmil", "hipt"})


def _padding_cases() -> list[tuple[str, bool]]:
    """Every registered model, so a new one cannot skip the padding check: the corrected variant
    (ignored by models without one) and, where the reference is not known to be flawed, the reference."""
    cases = [(name, True) for name in MIL_MODELS.names()]
    reference_ok = CORRECTABLE - _REFERENCE_IGNORES_PADDING
    cases += [(name, False) for name in MIL_MODELS.names() if name in reference_ok]
    return cases


def test_padding_cases_cover_every_registered_model():
    assert {name for name, _ in _padding_cases()} == set(MIL_MODELS.names()) == set(MODELS)
    assert _REFERENCE_IGNORES_PADDING <= CORRECTABLE


@pytest.mark.parametrize(("name", "corrected"), _padding_cases())
def test_padded_tiles_change_nothing(name, corrected):
    real, x, mask = _padded_pair()
    model = build_model(name, 16, 2, corrected=corrected).eval()
    with torch.no_grad():
        alone = torch.cat([model(r) for r in real])
        batched = model(x, mask)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_transmil_reference_mode_is_affected_by_padding():
    # Documented reference flaw: the mask is ignored.
    real, x, mask = _padded_pair()
    model = TransMIL(16, 1).eval()
    with torch.no_grad():
        assert not torch.allclose(model(x, mask)[1], model(real[1])[0], atol=1e-4)


def test_hipt_reference_mode_ignores_mask_and_needs_batch_of_one():
    real, x, mask = _padded_pair()
    model = HIPTMIL(16, 1).eval()
    with pytest.raises(ValueError, match="batch_size=1"):
        model(x, mask)
    with torch.no_grad():  # one slide with padding: padded tiles are attended to
        assert not torch.allclose(model(x[1:2], mask[1:2]), model(real[1]), atol=1e-4)


def test_chowder_init_is_xavier_with_zero_bias():
    model = Chowder(64, 1)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 5
    for m in linears:
        assert torch.count_nonzero(m.bias) == 0
        bound = (6 / (m.in_features + m.out_features)) ** 0.5
        assert m.weight.abs().max() <= bound


def test_transmil_init_and_structure():
    model = TransMIL(32, 2)
    assert torch.count_nonzero(model.cls_token) == 0
    assert model.pos_enc.group_conv2.groups == 1 and model.pos_enc.group_conv2.kernel_size == (5, 5)
    assert model.cor.attn.num_heads == 8 and model.cor.attn.qkv.bias is None
    assert torch.count_nonzero(model.head.bias) == 0 and model.head.weight.std() < 0.05


def test_abmil_uses_relu_head_and_meanpool_is_linear():
    model = ABMIL(16)
    assert isinstance(model.mlp[0][1], torch.nn.ReLU) and isinstance(model.mlp[1][1], torch.nn.ReLU)
    assert isinstance(MeanPool(16).mlp[0], torch.nn.Linear)


def test_hipt_structure_matches_reference():
    model = HIPTMIL(16)
    layer = model.transformer.layers[0]
    assert len(model.transformer.layers) == 2 and layer.self_attn.num_heads == 3
    assert layer.linear1.out_features == 192 and layer.dropout.p == 0.25 and not layer.norm_first


def test_unknown_model_and_bad_dims_are_rejected():
    with pytest.raises(ValueError, match=r"unknown MIL model 'clam': pass one of meanpool"):
        build_model("clam", 16)
    with pytest.raises(ValueError, match="num_heads"):
        TransMIL(20)


def test_iterative_pinv_inverts_a_well_conditioned_matrix():
    from wsistream.mil.nystrom import iterative_pinv

    torch.manual_seed(0)
    x = torch.eye(12, dtype=torch.float64) + 0.1 * torch.randn(3, 12, 12, dtype=torch.float64)
    eye = torch.eye(12, dtype=torch.float64).expand(3, -1, -1)
    torch.testing.assert_close(x @ iterative_pinv(x, iterations=12), eye, atol=1e-8, rtol=0)


def test_nystrom_with_one_landmark_per_token_is_full_attention():
    """m = N landmarks of one token each: the Nyström product A pinv(A) A V is A V."""
    from wsistream.mil.blocks import SelfAttention
    from wsistream.mil.nystrom import NystromAttention

    torch.manual_seed(0)
    full = SelfAttention(32, num_heads=4).double()
    approx = NystromAttention(32, num_heads=4, num_landmarks=10, pinv_iterations=30, residual=False).double()
    approx.to_qkv.load_state_dict(full.qkv.state_dict())
    approx.to_out.load_state_dict(full.proj.state_dict())
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    torch.testing.assert_close(approx(x), full(x), atol=1e-6, rtol=1e-6)
    # more tokens than landmarks: padded in front, the last N rows returned, finite
    y = approx(torch.randn(2, 23, 32, dtype=torch.float64))
    assert y.shape == (2, 23, 32) and torch.isfinite(y).all()


def test_transmil_with_nystrom_attention():
    base, nys = TransMIL(64, 1), TransMIL(64, 1, attention="nystrom", num_landmarks=8)
    assert count_parameters(nys) == count_parameters(base) + 2 * 8 * 33  # a (33, 1) depthwise conv per head and block
    x = torch.randn(3, 50, 3 + 64)
    out = nys(x)
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    out.sum().backward()
    assert nys.cor.attn.res_conv.weight.grad is not None
    with pytest.raises(ValueError, match="'original' or 'nystrom'"):
        TransMIL(64, 1, attention="linear")
