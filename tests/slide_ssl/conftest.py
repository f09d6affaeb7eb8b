"""Fixtures for slide-level SSL: tiny configurations and small feature folders written by our own writers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from wsistream.features.formats import write_h5
from wsistream.slide_ssl.config import EncoderConfig, PretrainConfig
from wsistream.slide_ssl.presets import method_preset


@pytest.fixture(autouse=True)
def _one_thread():
    """Deterministic and fair on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_encoder() -> EncoderConfig:
    return EncoderConfig(
        in_dim=8, dim=32, depth=2, heads=4, ffn_dim=64, segment_lengths=(16, 32, 128), dilations=(1, 2, 4), dropout=0.1
    )


@pytest.fixture
def tiny_config(tiny_encoder: EncoderConfig) -> Callable[..., PretrainConfig]:
    """A method preset shrunk to test size: tiny encoder and heads, 2 local crops, caps of 64 / 16 tokens."""

    def make(method: str = "dinov2", **top) -> PretrainConfig:
        cfg = method_preset(method, **{"steps": 4, "batch_size": 2, "checkpoint_every": 2, **top})
        return dataclasses.replace(
            cfg,
            encoder=tiny_encoder,
            crops=dataclasses.replace(cfg.crops, n_local=2, max_tiles=64, local_max_tiles=16, min_tiles=8),
            objective=dataclasses.replace(
                cfg.objective, out_dim=32, head_hidden_dim=32, head_bottleneck_dim=16, ibot_out_dim=32
            ),
            optim=dataclasses.replace(cfg.optim, grad_accum=2, base_lr=1e-3, lr_scaling="none"),
        )

    return make


def _slide(rng: np.random.Generator, w: int, h: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    keep = rng.random(xx.size) < 0.85
    xy = np.stack([xx.ravel()[keep], yy.ravel()[keep]], 1) * 512 + 1024
    return rng.normal(size=(len(xy), dim)).astype(np.float32), xy


@pytest.fixture
def feature_dir(tmp_path: Path) -> Path:
    """Six .h5 slides (irregular 10x12 grids, 512-px tiles, d = 8)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "features"
    for i in range(6):
        feats, xy = _slide(rng, 10 + i % 3, 12, 8)
        write_h5(root / f"slide_{i}.h5", feats, xy, patch_size=512, level=0)
    return root


@pytest.fixture
def write_slide() -> Callable[..., Path]:
    """Write one .h5 slide: ``write_slide(path, n_side=6, dim=8, nan_rows=0)``."""

    def write(path: Path, n_side: int = 6, dim: int = 8, nan_rows: int = 0, **attrs) -> Path:
        rng = np.random.default_rng(len(str(path)))
        feats, xy = _slide(rng, n_side, n_side, dim)
        feats[:nan_rows] = np.nan
        return write_h5(path, feats, xy, **{"patch_size": 512, **attrs})

    return write
