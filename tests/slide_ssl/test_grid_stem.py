"""The relative-position options of the encoder: ``grid_stem`` and ``absolute_positions=False``."""

from __future__ import annotations

import pytest
import torch

from wsistream.slide_ssl.config import EncoderConfig
from wsistream.slide_ssl.encoder import GridStem, SlideEncoder

SMALL = {"in_dim": 8, "dim": 16, "depth": 2, "heads": 2, "ffn_dim": 32, "segment_lengths": (64,), "dilations": (1,)}


def _grid(side: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([xx.ravel(), yy.ravel()], dim=1)


def test_grid_stem_mixes_each_tile_with_its_grid_neighbours_only():
    torch.manual_seed(0)
    stem = GridStem(4, 3)
    pos = _grid(5)[None] + 7  # anywhere on the glass
    h = torch.randn(1, 25, 4)
    out = stem(h, pos)
    centre = 12  # tile (2, 2); change a tile two columns away: the centre's output does not move
    far = h.clone()
    far[0, 14] += 1.0
    near = h.clone()
    near[0, 13] += 1.0
    assert torch.allclose(stem(far, pos)[0, centre], out[0, centre])
    assert not torch.allclose(stem(near, pos)[0, centre], out[0, centre])
    # tiles in another order give the same per-tile outputs (the canvas is built from positions)
    perm = torch.randperm(25)
    assert torch.allclose(stem(h[:, perm], pos[:, perm]), out[:, perm], atol=1e-6)


def test_padding_is_left_out_of_the_stem_and_kept_unchanged():
    torch.manual_seed(0)
    stem = GridStem(4, 3)
    pos, h = _grid(4)[None], torch.randn(1, 16, 4)
    padded_h = torch.cat([h, torch.randn(1, 3, 4)], dim=1)
    padded_pos = torch.cat([pos, torch.full((1, 3, 2), 1)], dim=1)  # padding on a real tile's cell
    pad = torch.zeros(1, 19, dtype=torch.bool)
    pad[0, 16:] = True
    out = stem(padded_h, padded_pos, pad)
    assert torch.allclose(out[:, :16], stem(h, pos), atol=1e-6)
    assert torch.equal(out[:, 16:], padded_h[:, 16:])


def test_relative_only_encoder_ignores_where_the_slide_lies_and_default_has_no_stem():
    torch.manual_seed(0)
    enc = SlideEncoder(EncoderConfig(**SMALL, grid_stem=3, absolute_positions=False)).eval()
    x, pos = torch.randn(2, 16, 8), _grid(4)[None].expand(2, -1, -1)
    with torch.no_grad():
        a, b = enc(x, pos).cls, enc(x, pos + torch.tensor([5, 11])).cls
    assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # the stem does see the layout: transposing the grid changes the output
        assert not torch.allclose(a, enc(x, pos.flip(-1)).cls, atol=1e-3)
    plain = SlideEncoder(EncoderConfig(**SMALL))
    assert plain.grid_stem is None and not any(k.startswith("grid_stem") for k in plain.state_dict())
    with pytest.raises(ValueError, match="odd kernel size"):
        EncoderConfig(**SMALL, grid_stem=2)
