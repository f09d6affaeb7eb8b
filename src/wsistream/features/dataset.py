"""Map-style torch datasets of uint8 tiles: the tiles of one slide, or a folder of tile images.

Items are ``(tile, index)`` with ``tile`` a uint8 (H, W, 3) tensor; the default
collate stacks them into (B, H, W, 3), which the encoder normalises on its
device. Each DataLoader worker opens its own slide handle (handles are not
shared across processes); the backend object itself is a small picklable factory.
A slide's tiles are batched in grid order (:meth:`SlideTileDataset.batches`) so
each stored JPEG tile is decoded once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wsistream.backends.base import SlideBackend
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.features.lanczos import device_resizable
from wsistream.features.reader import TileReader, grid_batches
from wsistream.features.tiling import TileSet
from wsistream.sampling.deepzoom_grid import render_tile

#: Image suffixes collected from a tile dataset folder (NCT-CRC ships ``.tif``).
TILE_IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class SlideTileDataset(Dataset[tuple[torch.Tensor, int]]):
    """The tiles of one slide, read through :class:`~wsistream.features.reader.TileReader`.

    Parameters
    ----------
    tiles : TileSet
        What to read (from :class:`DeepZoomTiling` or :class:`GridTiling`).
    backend : SlideBackend, optional
        Slide reader factory; default :class:`~wsistream.backends.OpenSlideBackend`.
    device_resize : bool
        Deliver DeepZoom reads unresized where :func:`~wsistream.features.lanczos.device_resizable`
        holds, for :func:`~wsistream.features.lanczos.render_batch` on the model's device (the same
        pixels as ``get_tile``, bit for bit); the workers then only decode. Batch with
        :meth:`batches`, which never mixes shapes. Default False: every item is the final tile.
    """

    def __init__(self, tiles: TileSet, backend: SlideBackend | None = None, *, device_resize: bool = False) -> None:
        self.tiles = tiles
        self.backend = backend or OpenSlideBackend()
        self.device_resize = device_resize
        read_h = int(tiles.read_h.max()) if len(tiles) else 1
        self._reader = TileReader(tiles.slide_path, self.backend, tiles.level, read_h)

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def reader(self) -> TileReader:
        """The tile reader (one slide handle per process)."""
        return self._reader

    def _region(self, i: int) -> np.ndarray:
        t = self.tiles
        return self._reader.read(int(t.x0[i]), int(t.y0[i]), t.level, int(t.read_w[i]), int(t.read_h[i]))

    def device_size(self, i: int) -> tuple[int, int] | None:
        """``(z_w, z_h)`` the device resizes item ``i`` to, or ``None`` when the item is already final."""
        t = self.tiles
        if not self.device_resize or t.resize != "deepzoom":
            return None
        shape = (int(t.read_w[i]), int(t.read_h[i]), int(t.out_w[i]), int(t.out_h[i]))
        return shape[2:] if device_resizable(*shape) else None

    def read(self, i: int) -> np.ndarray:
        """Tile ``i`` as uint8 (tile_size, tile_size, 3), resized on the CPU (the reference path)."""
        t = self.tiles
        region = self._region(i)
        out_size = (int(t.out_w[i]), int(t.out_h[i]))
        if t.resize == "deepzoom":
            return render_tile(region, out_size, t.tile_size, pad=True)
        if t.resize == "area" and (region.shape[1], region.shape[0]) != out_size:
            region = cv2.resize(region, out_size, interpolation=cv2.INTER_AREA)
        return region

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        tile = self._region(i) if self.device_size(i) is not None else self.read(i)
        return torch.from_numpy(tile), i

    def batches(self, batch_size: int, num_workers: int = 0) -> list[list[int]]:
        """Batches in grid order (each stored tile decoded once), one item shape per batch."""
        t = self.tiles
        shape = np.full((len(t), 4), -1, np.int64)
        for i in range(len(t)):
            if self.device_size(i) is not None:
                shape[i] = (t.read_w[i], t.read_h[i], t.out_w[i], t.out_h[i])
        return grid_batches(np.stack([t.y0, t.x0], axis=1), shape, batch_size, num_workers)

    def close(self) -> None:
        """Close this process's slide handles."""
        self._reader.close()


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


class TileImageDataset(Dataset[tuple[torch.Tensor, int]]):
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
