"""Map-style torch datasets of uint8 tiles: the tiles of one slide, or a folder of tile images.

Items are ``(tile, index)`` with ``tile`` a uint8 (H, W, 3) tensor; the default
collate stacks them into (B, H, W, 3), which the encoder normalises on its
device. Each DataLoader worker opens its own slide handle (handles are not
shared across processes); the backend object itself is a small picklable factory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wsistream.backends.base import SlideBackend, SlideHandle
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.features.tiling import TileSet
from wsistream.sampling.deepzoom_grid import render_tile

#: Image suffixes collected from a tile dataset folder (NCT-CRC ships ``.tif``).
TILE_IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class SlideTileDataset(Dataset):
    """The tiles of one slide, read through a core backend.

    Parameters
    ----------
    tiles : TileSet
        What to read (from :class:`DeepZoomTiling` or :class:`GridTiling`).
    backend : SlideBackend, optional
        Slide reader factory; default :class:`~wsistream.backends.OpenSlideBackend`.
    """

    def __init__(self, tiles: TileSet, backend: SlideBackend | None = None) -> None:
        self.tiles = tiles
        self.backend = backend or OpenSlideBackend()
        self._handle: SlideHandle | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.tiles)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, None
        return state

    def _slide(self) -> SlideHandle:
        if self._handle is None or self._pid != os.getpid():  # forked workers open their own handle
            self._handle = self.backend.open(self.tiles.slide_path)
            self._pid = os.getpid()
        return self._handle

    def read(self, i: int) -> np.ndarray:
        """Tile ``i`` as uint8 (tile_size, tile_size, 3)."""
        t = self.tiles
        region = self._slide().read_region(int(t.x0[i]), int(t.y0[i]), t.level, (int(t.read_w[i]), int(t.read_h[i])))
        out_size = (int(t.out_w[i]), int(t.out_h[i]))
        if t.resize == "deepzoom":
            return render_tile(region, out_size, t.tile_size, pad=True)
        if t.resize == "area" and (region.shape[1], region.shape[0]) != out_size:
            region = cv2.resize(region, out_size, interpolation=cv2.INTER_AREA)
        return region

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.read(i)), i

    def close(self) -> None:
        """Close this process's slide handle."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None


def list_tile_images(root: str | os.PathLike[str]) -> tuple[list[str], list[str], list[str]]:
    """Images of a tile dataset laid out as ``root/{class}/{image}`` (NCT-CRC), sorted.

    Returns ``(paths, tile_ids, labels)``; ``tile_id`` is the file name up to its
    first dot and ``label`` the class folder (``rl_benchmarks``' ``load_nct_crc``).
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: tile dataset folder does not exist")
    paths = sorted(p for p in base.glob("*/*") if p.is_file() and p.suffix.lower() in TILE_IMAGE_EXTENSIONS)
    if not paths:
        raise FileNotFoundError(f"{base}: no tile images in class sub-folders ({', '.join(TILE_IMAGE_EXTENSIONS)})")
    return [str(p) for p in paths], [p.name.split(".")[0] for p in paths], [p.parent.name for p in paths]


class TileImageDataset(Dataset):
    """Tile image files as uint8 tensors (``rl_benchmarks`` ``TileImagesDataset``: RGB, resized if not 224).

    Parameters
    ----------
    paths : sequence of str
        Image files.
    tile_size : int
        Delivered side; other sizes are resized with PIL's default filter, as
        ``Image.resize((tile_size, tile_size))`` does in ``rl_benchmarks``.
    """

    def __init__(self, paths: Sequence[str], tile_size: int = 224) -> None:
        if tile_size < 1:
            raise ValueError(f"tile_size must be >= 1, got {tile_size}")
        self.paths = list(paths)
        self.tile_size = tile_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            rgb = img.convert("RGB")
        if rgb.size != (self.tile_size, self.tile_size):
            rgb = rgb.resize((self.tile_size, self.tile_size))
        return torch.from_numpy(np.array(rgb, dtype=np.uint8)), i
