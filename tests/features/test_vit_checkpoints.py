"""DINOv2 / timm ViT checkpoints: our plain-torch forward equals Hugging Face's Dinov2Model on the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsistream.features import CheckpointKeyError, EncoderLoadError, load_encoder


def _dinov2_keys(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``Dinov2Model`` names -> facebookresearch/dinov2 ``DinoVisionTransformer`` names (qkv fused)."""
    out = {
        "cls_token": hf_sd["embeddings.cls_token"],
        "mask_token": hf_sd["embeddings.mask_token"],
        "pos_embed": hf_sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf_sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_sd["layernorm.weight"],
        "norm.bias": hf_sd["layernorm.bias"],
    }
    n = 1 + max(int(k.split(".")[2]) for k in hf_sd if k.startswith("encoder.layer."))
    for i in range(n):
        p = f"encoder.layer.{i}."
        att = p + "attention."
        for t in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{t}"] = torch.cat([hf_sd[f"{att}{q}_proj.{t}"] for q in "qkv"])
            out[f"blocks.{i}.attn.proj.{t}"] = hf_sd[f"{att}o_proj.{t}"]
            for a, b in (("norm1", "norm1"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[f"blocks.{i}.{a}.{t}"] = hf_sd[f"{p}{b}.{t}"]
        out[f"blocks.{i}.ls1.gamma"] = hf_sd[f"{p}layer_scale1.lambda1"]
        out[f"blocks.{i}.ls2.gamma"] = hf_sd[f"{p}layer_scale2.lambda1"]
    return out


@pytest.fixture(scope="module")
def hf_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=224, patch_size=32
    )
    model = Dinov2Model(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def test_dinov2_teacher_checkpoint_matches_hf(hf_dinov2, tmp_path: Path, ref_pixels):
    sd = _dinov2_keys(hf_dinov2.state_dict())
    ckpt = {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, "dino_head.mlp.0.weight": torch.ones(4, 48)}}
    torch.save(ckpt, tmp_path / "teacher_checkpoint.pth")
    enc = load_encoder("dinov2", tmp_path / "teacher_checkpoint.pth", num_heads=2)  # dim // 64 would be 0
    assert (enc.dim, enc.input_size) == (48, 224)
    tiles = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        ours = enc(torch.from_numpy(tiles))
        ref = hf_dinov2(pixel_values=ref_pixels(tiles)).last_hidden_state[:, 0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    # a training checkpoint ({"model": teacher.backbone.* + student.backbone.*}) loads its teacher
    student = {f"student.backbone.{k}": torch.zeros_like(v) for k, v in sd.items()}
    torch.save({"model": {**student, **{f"teacher.backbone.{k}": v for k, v in sd.items()}}}, tmp_path / "model.pth")
    with torch.inference_mode():
        torch.testing.assert_close(
            load_encoder("dinov2", tmp_path / "model.pth", num_heads=2)(torch.from_numpy(tiles)), ours
        )


def test_timm_state_dict_with_registers_and_avg_pool(hf_dinov2, tmp_path: Path):
    from safetensors.torch import save_file

    sd = {k: v for k, v in _dinov2_keys(hf_dinov2.state_dict()).items() if k != "mask_token"}
    sd["pos_embed"] = sd["pos_embed"][:, 1:].contiguous()  # timm reg models: no class position (no_embed_class)
    sd["reg_token"] = torch.randn(1, 4, 48)
    sd["fc_norm.weight"], sd["fc_norm.bias"] = torch.ones(48), torch.zeros(48)
    sd["head.weight"] = torch.zeros(2, 48)
    save_file(sd, tmp_path / "model.safetensors")
    enc = load_encoder("timm-vit", tmp_path / "model.safetensors")
    vit = enc.model
    assert (vit.n_prefix, vit.class_pos, vit.fc_norm is not None) == (5, False, True)
    out = enc(torch.zeros(2, 256, 256, 3, dtype=torch.uint8))  # 256 tiles are resized to the model's 224
    assert out.shape == (2, 48) and torch.isfinite(out).all()


def test_bad_checkpoints_name_the_file(hf_dinov2, tmp_path: Path):
    with pytest.raises(EncoderLoadError, match="does not exist"):
        load_encoder("dinov2", tmp_path / "nowhere.pth")
    sd = _dinov2_keys(hf_dinov2.state_dict())
    sd["blocks.0.mlp.w12.weight"] = torch.zeros(4, 4)  # a SwiGLU leftover
    del sd["blocks.1.ls2.gamma"]
    torch.save(sd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointKeyError, match=r"odd\.pth.*w12") as err:
        load_encoder("dinov2", tmp_path / "odd.pth")
    assert "blocks.1.ls2.gamma" in str(err.value)
