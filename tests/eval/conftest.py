"""Synthetic tile-feature datasets (NCT-CRC-like: class names, a BACK class, ids as file stems)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CLASSES = ("ADI", "BACK", "LYM", "TUM")


def make_tiles(n_per_class: int, d: int = 12, signal: float = 2.0, seed: int = 0, prefix: str = "T"):
    """Features (N, d) with class c shifted by ``signal`` on dims 2c, 2c+1; ids ``{CLASS}-{prefix}{i}``."""
    rng = np.random.default_rng(seed)
    feats, ids = [], []
    for c, name in enumerate(CLASSES):
        f = rng.normal(size=(n_per_class, d))
        f[:, 2 * c : 2 * c + 2] += signal
        feats.append(f)
        ids += [f"{name}-{prefix}{i:05d}" for i in range(n_per_class)]
    order = rng.permutation(len(ids))
    return np.concatenate(feats)[order].astype(np.float32), np.asarray(ids)[order]


def write_tiles(folder: Path, feats: np.ndarray, ids: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "tile_features.npy", feats)
    np.save(folder / "tile_ids.npy", ids.astype(object), allow_pickle=True)
    return folder


def class_folder_tree(root: Path, ids) -> Path:
    """An NCT-CRC-style image tree root/CLASS/ID.tif (empty files) for the given ids."""
    for i in ids:
        cls = str(i).split("-")[0]
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / f"{i}.tif").touch()
    return root


@pytest.fixture
def tiles():
    return make_tiles


@pytest.fixture
def tile_writer():
    return write_tiles


@pytest.fixture
def class_tree():
    return class_folder_tree
