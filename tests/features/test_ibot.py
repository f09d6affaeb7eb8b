"""iBOT checkpoint conversion against an independent forward of the iBOT/DINO ViT layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wsistream.features import (
    CheckpointKeyError,
    EncoderLoadError,
    convert_ibot_checkpoint,
    load_encoder,
)

DIM, DEPTH, HEADS, PATCH, IMG, MLP = 48, 2, 3, 32, 224, 96


def _ibot_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the parameter names of rl_benchmarks' VisionTransformer (qkv_bias=True)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    n = (IMG // PATCH) ** 2
    sd = {
        "cls_token": r(1, 1, DIM),
        "pos_embed": r(1, n + 1, DIM),
        "patch_embed.proj.weight": r(DIM, 3, PATCH, PATCH),
        "patch_embed.proj.bias": r(DIM),
        "norm.weight": 1 + r(DIM),
        "norm.bias": r(DIM),
    }
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd |= {
            b + "norm1.weight": 1 + r(DIM),
            b + "norm1.bias": r(DIM),
            b + "attn.qkv.weight": r(3 * DIM, DIM),
            b + "attn.qkv.bias": r(3 * DIM),
            b + "attn.proj.weight": r(DIM, DIM),
            b + "attn.proj.bias": r(DIM),
            b + "norm2.weight": 1 + r(DIM),
            b + "norm2.bias": r(DIM),
            b + "mlp.fc1.weight": r(MLP, DIM),
            b + "mlp.fc1.bias": r(MLP),
            b + "mlp.fc2.weight": r(DIM, MLP),
            b + "mlp.fc2.bias": r(DIM),
        }
    return sd


def ibot_reference_cls(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``get_intermediate_layers(x, 1)[0][:, 0]`` of the iBOT/DINO ViT, written from the rl_benchmarks source."""
    ln = lambda t, p: nn.functional.layer_norm(t, (DIM,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)  # noqa: E731
    B = x.shape[0]
    t = nn.functional.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(B, -1, -1), t], dim=1) + sd["pos_embed"]
    for i in range(DEPTH):
        b = f"blocks.{i}."
        h = ln(t, b + "norm1")
        N = h.shape[1]
        qkv = (h @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]).reshape(B, N, 3, HEADS, DIM // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, DIM) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        t = t + y
        h = ln(t, b + "norm2") @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # nn.GELU()
        t = t + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    return ln(t, "norm")[:, 0]


def _checkpoint(path: Path, teacher: dict[str, torch.Tensor], prefix: str = "backbone.") -> Path:
    head = {
        "head.mlp.0.weight": torch.zeros(4, DIM),
        "head.last_layer.weight_g": torch.ones(1),
        "head.last_layer2.weight_v": torch.zeros(2, 4),
    }
    student = {f"module.backbone.{k}": v + 1 for k, v in teacher.items()} | {
        "module.backbone.masked_embed": torch.zeros(1, DIM)
    }
    torch.save({"teacher": {prefix + k: v for k, v in (teacher | head).items()}, "student": student, "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def ibot_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = _ibot_state()
    return _checkpoint(tmp_path_factory.mktemp("ibot") / "ibot_vit_tiny.pth", sd), sd


def _tiles(n: int = 3) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (n, IMG, IMG, 3), dtype=np.uint8)


def test_conversion_reproduces_the_ibot_forward(ibot_ckpt, ref_pixels):
    path, sd = ibot_ckpt
    enc = load_encoder("ibot", path, num_heads=HEADS)
    tiles = _tiles()
    ref = ibot_reference_cls(sd, ref_pixels(tiles))
    with torch.inference_mode():
        got = enc(torch.from_numpy(tiles))
    assert enc.dim == DIM and enc.model.config.layer_norm_eps == 1e-6
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


def test_student_with_module_prefix_and_converted_folder(ibot_ckpt, tmp_path: Path, ref_pixels):
    path, sd = ibot_ckpt
    student = load_encoder("ibot", path, encoder="student", num_heads=HEADS)  # module.backbone.*, masked_embed
    tiles = _tiles(2)
    ref = ibot_reference_cls({k: v + 1 for k, v in sd.items()}, ref_pixels(tiles))
    with torch.inference_mode():
        np.testing.assert_allclose(student(torch.from_numpy(tiles)).numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    folder = convert_ibot_checkpoint(path, tmp_path / "as-phikon", num_heads=HEADS)
    as_phikon = load_encoder("phikon", folder)  # the converted folder is a Phikon-style HF ViT
    with torch.inference_mode():
        got = as_phikon(torch.from_numpy(tiles)).numpy()
    np.testing.assert_allclose(got, ibot_reference_cls(sd, ref_pixels(tiles)).numpy(), rtol=1e-4, atol=1e-4)


def test_unexpected_and_missing_keys_fail_loudly(tmp_path: Path):
    sd = _ibot_state()
    sd["blocks.0.gamma_1"] = torch.ones(DIM)  # LayerScale: no place in a HF ViT
    del sd["blocks.1.mlp.fc2.bias"]
    path = _checkpoint(tmp_path / "bad.pth", sd)
    with pytest.raises(CheckpointKeyError) as info:
        load_encoder("ibot", path, num_heads=HEADS)
    assert info.value.missing == ["blocks.1.mlp.fc2.bias"]
    assert info.value.unexpected == ["blocks.0.gamma_1"]
    assert "bad.pth" in str(info.value) and "LayerScale" in str(info.value)


def test_bad_checkpoint_files(tmp_path: Path, ibot_ckpt):
    with pytest.raises(EncoderLoadError, match=r"missing.pth: iBOT checkpoint file does not exist"):
        load_encoder("ibot", tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(EncoderLoadError, match=r"junk.pth: .*not a torch checkpoint"):
        load_encoder("ibot", junk)
    path, _ = ibot_ckpt
    with pytest.raises(EncoderLoadError, match=r"no 'ema' entry.*student.*teacher"):
        load_encoder("ibot", path, encoder="ema")
    vit_b_heads = tmp_path / "heads.pth"
    _checkpoint(vit_b_heads, _ibot_state())
    with pytest.raises(EncoderLoadError, match=r"not divisible by num_heads=5"):
        load_encoder("ibot", vit_b_heads, num_heads=5)


class _Opaque:
    pass


def test_pickled_objects_need_trust(tmp_path: Path):
    path = tmp_path / "pickled.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in _ibot_state().items()}, "args": _Opaque()}, path)
    with pytest.raises(EncoderLoadError, match=r"trusted=True"):
        load_encoder("ibot", path, num_heads=HEADS)
    assert load_encoder("ibot", path, num_heads=HEADS, trusted=True).dim == DIM
