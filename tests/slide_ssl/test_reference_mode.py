"""Reference mode and the Prov-GigaPath importer against outputs of prov-gigapath's own code.

``fixtures/gigapath_tiny_*`` were written by prov-gigapath ``LongNetViT`` (commit 09d8e87, see
``fixtures/PROVENANCE.md``): a 2-layer, 32-dim model, two slides of 70 tiles in file order, in two
configurations — the released model's segments / dilations / 16 heads, and short segments (several per
branch, a segment length that is not a multiple of its dilation, 4 heads, a wrapping position index).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wsistream.features.errors import CheckpointKeyError, EncoderLoadError
from wsistream.features.formats import SlideFeatures, write_h5
from wsistream.slide_ssl.attention import dilated_attention
from wsistream.slide_ssl.config import EncoderConfig
from wsistream.slide_ssl.data import SlideTokenCohort, tile_grid
from wsistream.slide_ssl.encoder import SlideEncoder, reference_sincos_2d, sincos_2d
from wsistream.slide_ssl.gigapath import load_gigapath_slide_encoder

FIXTURES = Path(__file__).parent / "fixtures"
WEIGHTS = FIXTURES / "gigapath_tiny_slide_encoder.pth"
IO = torch.load(FIXTURES / "gigapath_tiny_io.pt", weights_only=True)
CASES = ("gigapath", "short_segments")


def _load(case: str, path: Path = WEIGHTS, **kw: object) -> SlideEncoder:
    c = IO[case]
    return load_gigapath_slide_encoder(
        path,
        heads=c["heads"],
        segment_lengths=c["segment_lengths"],
        dilations=c["dilations"],
        slide_ngrids=c["slide_ngrids"],
        **kw,  # type: ignore[arg-type]
    )


def _grid(coords: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) level-0 px -> grid indices through our tile-grid rule with 256-px tiles (coords_to_pos)."""
    rows = []
    for xy in coords.numpy():
        sf = SlideFeatures("s", np.zeros((len(xy), 1), np.float32), np.c_[np.zeros(len(xy)), xy].astype(np.float32), {})
        rows.append(tile_grid(sf, tile_size=256)[0])
    return torch.from_numpy(np.stack(rows))


@pytest.mark.parametrize("case", CASES)
def test_reference_mode_reproduces_the_reference_outputs(case: str) -> None:
    c = IO[case]
    enc = _load(case)
    assert enc.cfg.mode == "reference" and not enc.training
    with torch.no_grad():
        out = enc(c["x"], _grid(c["coords"]), layers=(1, 2))
    assert out.layer_cls is not None
    assert (out.cls - c["cls"]).abs().max() <= 1e-5  # all_layer_embed=False: both final LayerNorms
    assert (out.layer_cls - c["layer_cls"][:, 1:]).abs().max() <= 1e-5  # all_layer_embed=True, layers 1..2
    assert (out.patch - c["patch"]).abs().max() <= 1e-5  # every token through both final LayerNorms


def test_default_mode_differs_from_reference_mode() -> None:
    """The same weights in default mode give other outputs; each reference switch alone is visible."""
    c = IO["short_segments"]
    ref = _load("short_segments")
    default = SlideEncoder(dataclasses.replace(ref.cfg, mode="default")).eval()
    default.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("encoder_norm.")})
    grid = _grid(c["coords"])
    with torch.no_grad():
        gap = (default(c["x"], grid).cls - c["cls"]).abs().max()
    assert gap > 1e-2
    assert ref.layers[0].attn_norm.eps == 1e-5 and default.layers[0].attn_norm.eps == 1e-6
    assert ref.norm.eps == default.norm.eps == 1e-6
    assert isinstance(ref.encoder_norm, nn.LayerNorm) and default.encoder_norm is None


def test_reference_position_table_is_the_references() -> None:
    """Rows of prov-gigapath's get_2d_sincos_pos_embed(32, 4) at x * 4 + y + 1: y in the first half."""
    table = IO["pos_embed_ngrids4"]
    xy = torch.tensor([(x, y) for x in range(4) for y in range(4)])
    ours = reference_sincos_2d(xy, 32, slide_ngrids=4).float()
    assert torch.allclose(ours, table[1 + xy[:, 0] * 4 + xy[:, 1]], atol=1e-6)
    assert torch.allclose(ours, sincos_2d(xy.flip(-1), 32), atol=1e-6)  # the default layout with x, y swapped
    assert not torch.allclose(ours, sincos_2d(xy, 32), atol=1e-2)
    wrapped = reference_sincos_2d(torch.tensor([[0, 5], [1, 1]]), 32, slide_ngrids=4)
    assert torch.equal(wrapped[0], wrapped[1])  # y = 5 runs into the next row: 0 * 4 + 5 = 1 * 4 + 1
    with pytest.raises(ValueError, match="slide_ngrids"):
        reference_sincos_2d(torch.tensor([[4, 0]]), 32, slide_ngrids=4)


def test_reference_mode_drops_out_the_input_tokens() -> None:
    """torchscale Encoder.forward_embedding: dropout on the tokens the first layer receives (default: none)."""
    seen: dict[str, torch.Tensor] = {}
    for mode in ("default", "reference"):
        cfg = EncoderConfig(in_dim=8, dim=16, depth=1, heads=2, ffn_dim=32, dropout=0.5, mode=mode)
        enc = SlideEncoder(cfg).train()
        enc.layers[0].register_forward_pre_hook(lambda m, args, mode=mode: seen.__setitem__(mode, args[0]))
        torch.manual_seed(0)
        enc(torch.randn(1, 200, 8), torch.randint(0, 20, (1, 200, 2)))
    assert (seen["default"] == 0).float().mean() == 0
    assert 0.4 < float((seen["reference"] == 0).float().mean()) < 0.6


def test_reference_padding_is_attended_default_padding_masked() -> None:
    """Two padded tokens: the default masks them (same CLS as the unpadded slide), reference mode does not."""
    torch.manual_seed(1)
    x, pos = torch.randn(1, 30, 8), torch.randint(0, 9, (1, 30, 2))
    xp, posp = torch.cat([x, torch.zeros(1, 2, 8)], 1), torch.cat([pos, torch.zeros(1, 2, 2, dtype=pos.dtype)], 1)
    pad = torch.zeros(1, 32, dtype=torch.bool)
    pad[:, 30:] = True
    for mode, same in (("default", True), ("reference", False)):
        cfg = EncoderConfig(in_dim=8, dim=16, depth=2, heads=2, ffn_dim=32, segment_lengths=(64,), dilations=(1,))
        enc = SlideEncoder(dataclasses.replace(cfg, mode=mode)).eval()
        with torch.no_grad():
            alone, padded = enc(x, pos).cls, enc(xp, posp, pad=pad).cls
        assert torch.allclose(alone, padded, atol=1e-5) is same


def test_reference_segmentation_attends_zero_padding_only() -> None:
    """reference_padding differs from the default exactly when a segment is zero-padded."""
    torch.manual_seed(2)
    for length, differs in ((64, False), (71, True)):
        q, k, v = (torch.randn(1, length, 4, 8) for _ in range(3))
        ours = dilated_attention(q, k, v, (16, 32), (1, 2))
        ref = dilated_attention(q, k, v, (16, 32), (1, 2), reference_padding=True)
        assert bool((ours - ref).abs().max() > 1e-3) is differs
    with pytest.raises(ValueError, match="key_padding_mask"):
        dilated_attention(q, k, v, (16,), (1,), torch.zeros(1, length, dtype=torch.bool), reference_padding=True)


def test_layer_eps_follows_the_mode() -> None:
    cfg = EncoderConfig(in_dim=8, dim=16, depth=1, heads=2, ffn_dim=32)
    assert cfg.inner_eps == 1e-6
    assert dataclasses.replace(cfg, mode="reference").inner_eps == 1e-5
    assert dataclasses.replace(cfg, mode="reference", layer_eps=1e-4).inner_eps == 1e-4
    with pytest.raises(ValueError, match="mode="):
        EncoderConfig(mode="gigapath")  # type: ignore[arg-type]


def _state() -> dict[str, torch.Tensor]:
    return dict(torch.load(WEIGHTS, weights_only=True)["model"])


def test_importer_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    sd = _state()
    del sd["encoder.layer_norm.weight"], sd["encoder.layers.1.ffn.fc2.bias"]
    sd["decoder_embed.weight"] = torch.zeros(2, 2)
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointKeyError) as err:
        _load("gigapath", tmp_path / "bad.pth")
    assert err.value.missing == ["encoder.layer_norm.weight", "encoder.layers.1.ffn.fc2.bias"]
    assert err.value.unexpected == ["decoder_embed.weight"]
    assert str(tmp_path / "bad.pth") in str(err.value)


def test_importer_reads_a_prefixed_training_checkpoint(tmp_path: Path) -> None:
    """SLP-style checkpoint: backbone under 'teacher' with a 'backbone.' prefix, head keys beside it ignored."""
    sd = {f"backbone.{k}": v for k, v in _state().items()}
    sd["head.last_layer.weight"] = torch.zeros(3, 3)
    sd["backbone.mask_token"] = torch.full((1, 32), 0.5)
    torch.save({"teacher": sd, "epoch": 3}, tmp_path / "checkpoint.pth")
    enc = _load("gigapath", tmp_path / "checkpoint.pth", checkpoint_key="teacher")
    assert torch.equal(enc.mask_token, torch.full((1, 32), 0.5))
    c = IO["gigapath"]
    with torch.no_grad():
        assert (enc(c["x"], _grid(c["coords"])).cls - c["cls"]).abs().max() <= 1e-5


def test_importer_checks_a_stored_position_table(tmp_path: Path) -> None:
    table = IO["pos_embed_ngrids4"].unsqueeze(0)
    torch.save({"model": {**_state(), "pos_embed": table}}, tmp_path / "with_table.pth")
    enc = load_gigapath_slide_encoder(tmp_path / "with_table.pth", slide_ngrids=4)
    assert enc.cfg.slide_ngrids == 4
    rows_yx = table[:, 1:].reshape(1, 4, 4, 32).transpose(1, 2).reshape(1, 16, 32)  # x and y swapped
    swapped = torch.cat([table[:, :1], rows_yx], 1)
    torch.save({"model": {**_state(), "pos_embed": swapped}}, tmp_path / "swapped.pth")
    with pytest.raises(CheckpointKeyError, match="pos_embed"):
        load_gigapath_slide_encoder(tmp_path / "swapped.pth", slide_ngrids=4)


def test_importer_rejects_absent_foreign_and_misfit_files(tmp_path: Path) -> None:
    with pytest.raises(EncoderLoadError, match="does not exist"):
        load_gigapath_slide_encoder(tmp_path / "none.pth")
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, tmp_path / "vit.pth")
    with pytest.raises(EncoderLoadError, match=r"patch_embed\.proj\.weight"):
        load_gigapath_slide_encoder(tmp_path / "vit.pth")
    with pytest.raises(EncoderLoadError, match="heads"):
        load_gigapath_slide_encoder(WEIGHTS, heads=5)  # 32 dims do not split into 5 heads


def test_h5_slide_in_file_order_reproduces_the_reference(tmp_path: Path) -> None:
    """The whole path: .h5 (level-0 coords) -> SlideTokenCohort(order="file") -> reference encoder = LongNetViT."""
    c = IO["gigapath"]
    write_h5(tmp_path / "feats" / "slide0.h5", c["x"][0].numpy(), c["coords"][0].numpy().astype(np.int64))
    enc = _load("gigapath")
    got = {}
    for order in ("file", "row_major"):
        cohort = SlideTokenCohort.scan(tmp_path / "feats", min_tiles=1, tile_size=256, order=order)  # type: ignore[arg-type]
        s = cohort.load(0)
        with torch.no_grad():
            got[order] = enc(torch.from_numpy(s.features)[None], torch.from_numpy(s.grid)[None]).cls[0]
    assert (got["file"] - c["cls"][0]).abs().max() <= 1e-5
    assert (got["row_major"] - c["cls"][0]).abs().max() > 1e-3  # token order matters to LongNet
    with pytest.raises(ValueError, match="order="):
        SlideTokenCohort.scan(tmp_path / "feats", order="random")  # type: ignore[arg-type]
