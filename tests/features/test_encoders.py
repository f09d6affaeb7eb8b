from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wsistream.features import (
    CheckpointKeyError,
    Encoder,
    EncoderLoadError,
    available_encoders,
    load_encoder,
    normalize_tiles,
    register,
)


def _tiles(n: int = 3, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_registry_lists_the_three_encoders():
    assert {"phikon", "phikon-v2", "ibot"} <= set(available_encoders())
    with pytest.raises(ValueError, match=r"unknown encoder 'nope'.*phikon"):
        load_encoder("nope", "/tmp")


def test_phikon_equals_direct_hf_call(phikon, tiny_vit_dir: Path, ref_pixels):
    from transformers import ViTModel

    tiles = _tiles()
    ref_model = ViTModel.from_pretrained(tiny_vit_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        ref = ref_model(pixel_values=ref_pixels(tiles)).last_hidden_state[:, 0].numpy()
    with torch.inference_mode():
        got = phikon(torch.from_numpy(tiles)).numpy()
    assert phikon.dim == 32 and phikon.input_size == 224 and phikon.name == "phikon"
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_phikon_v2_is_dinov2_cls(tiny_dinov2_dir: Path, ref_pixels):
    from transformers import Dinov2Model

    enc = load_encoder("phikon-v2", tiny_dinov2_dir)
    tiles = _tiles(2)
    ref_model = Dinov2Model.from_pretrained(tiny_dinov2_dir).eval()
    with torch.no_grad():
        ref = ref_model(pixel_values=ref_pixels(tiles)).last_hidden_state[:, 0].numpy()
    with torch.inference_mode():
        got = enc(torch.from_numpy(tiles)).numpy()
    assert enc.dim == 48
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_normalize_matches_torchvision_order_and_resizes_only_other_sizes(ref_pixels):
    tiles = _tiles(2)
    np.testing.assert_allclose(
        normalize_tiles(torch.from_numpy(tiles)).numpy(), ref_pixels(tiles).numpy(), rtol=0, atol=1e-6
    )
    big = normalize_tiles(torch.from_numpy(_tiles(1, 256)))
    assert big.shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match=r"uint8"):
        normalize_tiles(torch.zeros(1, 224, 224, 3))


def test_missing_weights_folder_names_the_path(tmp_path: Path):
    missing = tmp_path / "no-such-weights"
    with pytest.raises(EncoderLoadError, match=r"no-such-weights.*does not exist"):
        load_encoder("phikon", missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderLoadError, match=r"no config.json"):
        load_encoder("phikon", tmp_path / "empty")


def test_wrong_architecture_is_refused(tiny_vit_dir: Path, tiny_dinov2_dir: Path):
    with pytest.raises(EncoderLoadError, match=r"model_type='dinov2'.*wrong architecture"):
        load_encoder("phikon", tiny_dinov2_dir)
    with pytest.raises(EncoderLoadError, match=r"model_type='vit'"):
        load_encoder("phikon-v2", tiny_vit_dir)
    with pytest.raises(EncoderLoadError, match=r"is a file"):
        load_encoder("phikon", tiny_vit_dir / "config.json")


def test_missing_and_unexpected_keys_are_listed(tiny_vit_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_vit_dir, broken)
    state = load_file(broken / "model.safetensors")
    del state["layernorm.weight"]
    state["extra.head.weight"] = torch.zeros(3)
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointKeyError) as info:
        load_encoder("phikon", broken)
    assert info.value.missing == ["layernorm.weight"]
    assert info.value.unexpected == ["extra.head.weight"]
    assert "broken" in str(info.value)


def test_mismatched_shape_is_refused(tiny_vit_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_vit_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EncoderLoadError, match=r"bad"):
        load_encoder("phikon", bad)


def test_user_module_with_inferred_dim_and_custom_transform():
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 8, stride=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))

    enc = Encoder.from_module(Tiny(), name="tiny")
    assert enc.dim == 5
    out = enc(torch.from_numpy(_tiles(2)))
    assert out.shape == (2, 5)
    calls = []

    def transform(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape)
        return t.permute(0, 3, 1, 2).float()

    enc2 = Encoder.from_module(Tiny(), dim=5, transform=transform)
    assert enc2(torch.from_numpy(_tiles(1))).shape == (1, 5) and calls
    with pytest.raises(ValueError, match=r"dim must be >= 1"):
        Encoder("x", Tiny(), 0)


def test_register_a_user_factory(tmp_path: Path):
    @register("test-linear")
    def _factory(weights):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
        model(torch.zeros(1, 3, 224, 224))
        return Encoder.from_module(model, name="test-linear", dim=4)

    assert "test-linear" in available_encoders()
    assert load_encoder("test-linear", tmp_path).dim == 4
    with pytest.raises(ValueError, match=r"already registered"):
        register("test-linear")(lambda w: None)
