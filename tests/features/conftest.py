"""Tiny randomly initialised encoders of the real architectures, and small slides, on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def reference_pixels(tiles: np.ndarray) -> torch.Tensor:
    """torchvision ToTensor + Normalize(ImageNet), written independently: uint8 (B, H, W, 3) -> (B, 3, H, W)."""
    x = tiles.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.fixture(scope="session")
def ref_pixels():
    """The independent ImageNet preprocessing, as a fixture (tests import no helper modules)."""
    return reference_pixels


def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Phikon-shaped HF ViTModel folder (with the pooler, as the hub file has it), 32-d."""
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=224,
        patch_size=32,
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    model = ViTModel(cfg, add_pooling_layer=True)
    _randomise(model, 0)
    out = tmp_path_factory.mktemp("weights") / "tiny-phikon"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Phikon-v2-shaped HF Dinov2Model folder, 48-d."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=224, patch_size=32
    )
    model = Dinov2Model(cfg)
    _randomise(model, 1)
    out = tmp_path_factory.mktemp("weights") / "tiny-phikon-v2"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def phikon(tiny_vit_dir: Path):
    from wsistream.features import load_encoder

    return load_encoder("phikon", tiny_vit_dir)


@pytest.fixture(scope="session")
def feat_slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Small slides: a 40x (0.252 µm/px, levels 1/4), a 20x (0.5 µm/px), a blank one and an unreadable file."""
    from wsistream.synthetic import write_aperio_svs

    root = tmp_path_factory.mktemp("feat-slides")
    s40 = write_aperio_svs(root / "a40x.svs", width=1600, height=1200, mpp=0.252, downsamples=(1, 4), seed=1)
    s20 = write_aperio_svs(root / "b20x.svs", width=900, height=700, mpp=0.5, app_mag=20, downsamples=(1, 4), seed=2)
    blank = write_aperio_svs(
        root / "c-blank.svs",
        width=700,
        height=600,
        mpp=0.5,
        app_mag=20,
        downsamples=(1, 4),
        background_only=True,
        seed=3,
    )
    broken = root / "d-broken.svs"
    broken.write_bytes(b"this is not a slide")
    return {"40x": str(s40), "20x": str(s20), "blank": str(blank), "broken": str(broken)}
