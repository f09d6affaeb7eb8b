"""Throughput report: tells whether extraction is limited by reading tiles or by the model.

Three rates on the same tiles of one slide, each timed after a warm-up batch:

* ``loader``: DataLoader workers reading + decoding + resampling tiles, batches discarded;
* ``model``: preprocessing + forward on one batch already on the device, repeated;
* ``full``: the extraction path (read → device → preprocess → model → CPU float32).

``full`` ≈ min(loader, model) when reading and compute overlap; the smaller of
the first two is the bottleneck.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from wsistream.backends.base import SlideBackend
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.features.dataset import SlideTileDataset
from wsistream.features.encoders import Encoder
from wsistream.features.extract import ExtractionConfig, TileEncoderRunner, plan_slide_tiles
from wsistream.features.tiling import DeepZoomTiling, GridTiling


@dataclass(frozen=True)
class ThroughputReport:
    """Tiles per second of the loader alone, the model alone and the full path."""

    encoder: str
    device: str
    n_tiles: int
    batch_size: int
    num_workers: int
    loader_tiles_per_s: float
    model_tiles_per_s: float
    full_tiles_per_s: float

    @property
    def bottleneck(self) -> str:
        """``"data loading"`` when the loader is slower than the model, else ``"model"``."""
        return "data loading" if self.loader_tiles_per_s < self.model_tiles_per_s else "model"

    def __str__(self) -> str:
        return (
            f"encoder={self.encoder} device={self.device} tiles={self.n_tiles} batch={self.batch_size} "
            f"workers={self.num_workers}\n"
            f"  loader alone : {self.loader_tiles_per_s:10.1f} tiles/s\n"
            f"  model alone  : {self.model_tiles_per_s:10.1f} tiles/s\n"
            f"  full path    : {self.full_tiles_per_s:10.1f} tiles/s\n"
            f"  bottleneck   : {self.bottleneck}"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_throughput(
    slide_path: str | os.PathLike[str],
    encoder: Encoder,
    *,
    tiling: DeepZoomTiling | GridTiling | None = None,
    config: ExtractionConfig | None = None,
    backend: SlideBackend | None = None,
    max_tiles: int = 256,
) -> ThroughputReport:
    """Measure loader, model and full-path tiles/s on up to ``max_tiles`` tissue tiles of a slide.

    The first batch of each pass is a warm-up (worker start, CUDA kernels) and is not timed;
    a slide with fewer than two batches of tiles is timed on all batches.
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    config = config or ExtractionConfig()
    backend = backend or OpenSlideBackend()
    tiling = tiling or DeepZoomTiling()
    runner = TileEncoderRunner(encoder, config)
    tiles, _ = plan_slide_tiles(slide_path, tiling, backend=backend)
    tiles = tiles.subset(max_tiles, seed=0)
    dataset = SlideTileDataset(tiles, backend)

    def timed(step) -> float:
        count, start, first = 0, None, None
        for batch, _ in runner.loader(dataset):
            step(batch)
            if start is None:
                first = len(batch)
                _sync(runner.device)
                start = time.perf_counter()
                continue
            count += len(batch)
        _sync(runner.device)
        elapsed = time.perf_counter() - (start or time.perf_counter())
        if count == 0:  # a single batch: time it alone
            return _rate_of(step, dataset, first or 1)
        return count / max(elapsed, 1e-9)

    def _rate_of(step, ds, n: int) -> float:
        batch = torch.stack([ds[i][0] for i in range(n)])
        t0 = time.perf_counter()
        step(batch)
        _sync(runner.device)
        return n / max(time.perf_counter() - t0, 1e-9)

    loader_rate = timed(lambda batch: batch.to(runner.device, non_blocking=True))
    full_rate = timed(runner)
    n_model = min(config.batch_size, len(dataset))
    sample = torch.stack([dataset[i][0] for i in range(n_model)]).to(runner.device)
    runner(sample)  # warm-up
    reps = max(1, -(-len(dataset) // n_model))
    _sync(runner.device)
    t0 = time.perf_counter()
    for _ in range(reps):
        runner(sample)
    _sync(runner.device)
    model_rate = reps * n_model / max(time.perf_counter() - t0, 1e-9)
    dataset.close()
    return ThroughputReport(
        encoder.name,
        str(runner.device),
        len(dataset),
        config.batch_size,
        config.num_workers,
        loader_rate,
        model_rate,
        full_rate,
    )
