"""Encode the tiles of a slide (or a tile folder): DataLoader workers read, the model runs in inference mode.

On CUDA the model runs under ``torch.autocast`` (bf16 where supported, else
fp16) with channels-last input; on CPU it runs in float32 as is. Features are
returned as float32 in tile order, whatever order batches arrive in.

The stages overlap: workers read and decode (in grid order, each stored tile
once), batches arrive in pinned memory and are copied with ``non_blocking``,
DeepZoom's LANCZOS thumbnail runs batched on the device (``resize="device"``,
bit-exact with Pillow), and the features of batch ``i`` are copied back only
after batch ``i + 1`` is queued, so the device never waits for the host.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsistream.backends.base import SlideBackend
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.features.dataset import SlideTileDataset, TileImageDataset, list_tile_images
from wsistream.features.encoders import Encoder
from wsistream.features.formats import write_h5, write_histossl, write_tile_features
from wsistream.features.lanczos import render_batch
from wsistream.features.tiling import DeepZoomTiling, GridTiling, TileSet
from wsistream.pipeline.mpp import MppPolicy

AmpMode = Literal["auto", "bf16", "fp16", "off"]
ResizeWhere = Literal["auto", "device", "worker"]
BatchCallback = Callable[[int], None]
#: A DataLoader item of the extraction datasets: a uint8 (H, W, 3) tile and its index.
TileItem = tuple[torch.Tensor, int]


@dataclass(frozen=True)
class ExtractionConfig:
    """How tiles are batched and where the model runs.

    Parameters
    ----------
    batch_size : int
        Tiles per forward pass.
    num_workers : int
        DataLoader worker processes reading tiles (0 reads in the main process).
    device : str
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Under
        ``torchrun``, ``"auto"``/``"cuda"`` mean ``cuda:$LOCAL_RANK``.
    amp : {"auto", "bf16", "fp16", "off"}
        Autocast dtype on CUDA (``auto``: bf16 if supported, else fp16). Ignored on CPU.
    channels_last : bool
        Channels-last model and input on CUDA. Ignored on CPU.
    prefetch_factor : int
        Batches prefetched per worker.
    resize : {"auto", "device", "worker"}
        Where DeepZoom's LANCZOS thumbnail (448 → 224 on 40x slides) runs: batched on the model's
        device (``lanczos.render_batch``, integer arithmetic, identical to Pillow) or in the
        workers with Pillow. ``auto``: device on CUDA, workers on CPU (where both compete for the
        same cores and Pillow's C loop is the faster of the two).
    """

    batch_size: int = 64
    num_workers: int = 4
    device: str = "auto"
    amp: AmpMode = "auto"
    channels_last: bool = True
    prefetch_factor: int = 2
    resize: ResizeWhere = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp={self.amp!r}; pass 'auto', 'bf16', 'fp16' or 'off'")
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.resize not in ("auto", "device", "worker"):
            raise ValueError(f"resize={self.resize!r}; pass 'auto', 'device' or 'worker'")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device={self.device!r}; pass 'auto', 'cpu', 'cuda' or 'cuda:N'")

    def resolve_device(self) -> torch.device:
        """Return the torch device this config runs on."""
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if self.device == "auto":
            return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available; pass device='cpu'")
        return torch.device(f"cuda:{local}" if self.device == "cuda" else self.device)


class TileEncoderRunner:
    """An encoder placed on its device: uint8 CPU batches in, float32 numpy features out."""

    def __init__(self, encoder: Encoder, config: ExtractionConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config or ExtractionConfig()
        self.device = self.config.resolve_device()
        self.cuda = self.device.type == "cuda"
        encoder.model.to(self.device)
        if self.cuda and self.config.channels_last:
            encoder.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.amp_dtype: torch.dtype | None = None
        if self.cuda and self.config.amp != "off":
            bf16 = self.config.amp == "bf16" or (self.config.amp == "auto" and torch.cuda.is_bf16_supported())
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16

    @property
    def device_resize(self) -> bool:
        """Whether DeepZoom thumbnails run on this runner's device (``ExtractionConfig.resize``)."""
        return self.config.resize == "device" or (self.config.resize == "auto" and self.cuda)

    def encode(self, tiles: torch.Tensor, z_size: tuple[int, int] | None = None, tile_size: int = 224) -> torch.Tensor:
        """Features (B, d) on the device, not synchronised, of uint8 (B, H, W, 3) tiles.

        ``z_size``: the batch holds unresized DeepZoom reads, to thumbnail to ``(z_w, z_h)`` and
        zero-pad to ``tile_size`` first (:func:`~wsistream.features.lanczos.render_batch`).
        """
        x = tiles.to(self.device, non_blocking=True)
        autocast = (
            torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else contextlib.nullcontext()
        )
        with torch.inference_mode():
            if z_size is not None:
                x = render_batch(x, z_size, tile_size)
            with autocast:
                fmt = torch.channels_last if self.cuda and self.config.channels_last else torch.contiguous_format
                out = self.encoder.forward(self.encoder.model, self.encoder.preprocess(x, fmt))
        if out.ndim != 2 or out.shape[1] != self.encoder.dim:
            raise ValueError(
                f"encoder {self.encoder.name!r} returned {tuple(out.shape)}, expected (B, {self.encoder.dim})"
            )
        return out

    def __call__(self, tiles: torch.Tensor, z_size: tuple[int, int] | None = None, tile_size: int = 224) -> np.ndarray:
        """Features (B, d) float32 of uint8 (B, H, W, 3) tiles (see :meth:`encode`)."""
        return self.encode(tiles, z_size, tile_size).float().cpu().numpy()

    def loader(self, dataset: Dataset[TileItem], batches: list[list[int]] | None = None) -> DataLoader[TileItem]:
        """Return the DataLoader this runner reads ``dataset`` with (ordered; pinned memory on CUDA).

        ``batches``: an explicit batch list (grid order, see :meth:`SlideTileDataset.batches`).
        """
        cfg = self.config
        extra: dict[str, Any] = {"prefetch_factor": cfg.prefetch_factor} if cfg.num_workers > 0 else {}
        if batches is None:
            extra.update(batch_size=cfg.batch_size, shuffle=False)
        else:
            extra["batch_sampler"] = batches
        return DataLoader(dataset, num_workers=cfg.num_workers, pin_memory=self.cuda, **extra)


def embed_dataset(
    runner: TileEncoderRunner, dataset: Dataset[TileItem], *, on_batch: BatchCallback | None = None
) -> np.ndarray:
    """(N, d) float32 features of a ``(tile, index)`` dataset, row ``i`` for item ``i``.

    A :class:`SlideTileDataset` is read in its grid-order batches; the features of a batch
    are fetched from the device once the next batch is queued (one batch in flight).
    """
    feats = np.empty((len(dataset), runner.encoder.dim), np.float32)  # type: ignore[arg-type]
    slide = dataset if isinstance(dataset, SlideTileDataset) else None
    batches = slide.batches(runner.config.batch_size, runner.config.num_workers) if slide else None
    pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def collect(item: tuple[torch.Tensor, torch.Tensor]) -> None:
        index, out = item
        feats[index.numpy()] = out.float().cpu().numpy()
        if on_batch is not None:
            on_batch(len(index))

    for tiles, index in runner.loader(dataset, batches):
        z_size = slide.device_size(int(index[0])) if slide else None
        out = runner.encode(tiles, z_size, slide.tiles.tile_size if slide else 224)
        if pending is not None:
            collect(pending)
        pending = (index, out)
    if pending is not None:
        collect(pending)
    return feats


@dataclass(frozen=True)
class SlideExtraction:
    """Features of one slide with the tiles they came from."""

    slide_path: str
    features: np.ndarray
    tiles: TileSet
    attrs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_tiles(self) -> int:
        """Number of tiles N."""
        return int(self.features.shape[0])

    def write_histossl(self, slide_dir: str | os.PathLike[str]) -> Path:
        """``features.npy`` (N, 3+d) + ``coords.npy`` + ``extraction.json`` into ``slide_dir``."""
        return write_histossl(slide_dir, self.features, self.tiles.coords, attrs=self.attrs)

    def write_h5(self, path: str | os.PathLike[str]) -> Path:
        """CLAM/TRIDENT ``.h5``: ``features`` (N, d), ``coords`` (N, 2) level-0 x/y, attributes."""
        return write_h5(path, self.features, self.tiles.xy, **self.attrs)


def plan_slide_tiles(
    slide_path: str | os.PathLike[str],
    tiling: DeepZoomTiling | GridTiling,
    *,
    backend: SlideBackend | None = None,
    mpp_policy: MppPolicy | None = None,
) -> tuple[TileSet, str]:
    """Return the slide's tiles and the source of its µm/px (``slide``, ``override``, ``fallback``)."""
    backend = backend or OpenSlideBackend()
    with backend.open(slide_path) as handle:
        props = mpp_policy.apply(handle.properties) if mpp_policy else handle.properties
        return tiling.tiles(handle, props), props.mpp_source


def extract_slide(
    slide_path: str | os.PathLike[str],
    encoder: Encoder | TileEncoderRunner,
    tiling: DeepZoomTiling | GridTiling | None = None,
    config: ExtractionConfig | None = None,
    *,
    backend: SlideBackend | None = None,
    mpp_policy: MppPolicy | None = None,
    on_batch: BatchCallback | None = None,
) -> SlideExtraction:
    """Encode every tissue tile of one slide.

    Parameters
    ----------
    slide_path : path-like
        The slide.
    encoder : Encoder or TileEncoderRunner
        The model (a runner keeps it on its device across slides).
    tiling : DeepZoomTiling or GridTiling
        Default :class:`DeepZoomTiling` (HistoSSLscaling, 224 px at 0.5 µm/px).
    config : ExtractionConfig
        Batching and device; ignored when ``encoder`` is already a runner.

    Raises
    ------
    WsiStreamError
        The slide cannot be opened or read, has no µm/px, or has no tissue tile.
    """
    t0 = time.perf_counter()
    runner = encoder if isinstance(encoder, TileEncoderRunner) else TileEncoderRunner(encoder, config)
    backend = backend or OpenSlideBackend()
    tiling = tiling or DeepZoomTiling()
    tiles, mpp_source = plan_slide_tiles(slide_path, tiling, backend=backend, mpp_policy=mpp_policy)
    dataset = SlideTileDataset(tiles, backend, device_resize=runner.device_resize)
    try:
        feats = embed_dataset(runner, dataset, on_batch=on_batch)
    finally:
        dataset.close()
    enc = runner.encoder
    attrs = {
        **tiles.attrs,
        "encoder": enc.name,
        "feature_dim": enc.dim,
        "slide_path": os.fspath(slide_path),
        "slide_id": Path(slide_path).name,
        "n_tiles": len(tiles),
        "mpp_source": mpp_source,
        "n_tiles_requested": getattr(tiling, "n_tiles", None),
        "seed": tiling.seed,
    }
    return SlideExtraction(os.fspath(slide_path), feats, tiles, attrs, time.perf_counter() - t0)


def extract_tile_dataset(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    encoder: Encoder | TileEncoderRunner,
    config: ExtractionConfig | None = None,
    *,
    tile_size: int = 224,
    on_batch: BatchCallback | None = None,
) -> Path:
    """Encode a folder of tile images (``root/{class}/{image}``) into ``tile_features.npy`` + ids.

    Follows ``rl_benchmarks`` ``extract_tile_features.py``; the class of each tile is
    also written as ``tile_labels.npy``. Returns the ``tile_features.npy`` path.
    """
    runner = encoder if isinstance(encoder, TileEncoderRunner) else TileEncoderRunner(encoder, config)
    paths, ids, labels = list_tile_images(root)
    feats = embed_dataset(runner, TileImageDataset(paths, tile_size), on_batch=on_batch)
    return write_tile_features(out_dir, feats, np.asarray(ids), np.asarray(labels))
