"""Throughput report: the decode ceiling, the reader, the model and the full path, on the same tiles.

Rates (tiles/s) on the first ``max_tiles`` tissue tiles of a slide in grid order
(the order extraction reads them), one run:

* ``decode ceiling``: libjpeg-turbo (imagecodecs) decoding each stored JPEG tile
  these tiles touch exactly once, bytes read before timing: what any reader that
  decodes each stored tile once can at most deliver on one core;
* ``reader alone``: :class:`SlideTileDataset` items in its grid-order batches, in
  this process (decode, cache, assembly, and the CPU resize where it runs there);
* ``loader``: the same through DataLoader workers (``num_workers``), and with one
  and two workers when ``scaling`` is asked;
* ``model alone``: one device-resident batch, device resize + preprocessing + forward;
* ``full``: :func:`embed_dataset`, the extraction path.

The smaller of loader and model is the bottleneck. ``wsistream bench`` holds the
streaming numbers; this is the extraction counterpart (``wsistream extract-bench``).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from wsistream.backends.base import SlideBackend
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.features.dataset import SlideTileDataset
from wsistream.features.encoders import Encoder
from wsistream.features.extract import ExtractionConfig, TileEncoderRunner, embed_dataset, plan_slide_tiles
from wsistream.features.tiling import DeepZoomTiling, GridTiling, TileSet


@dataclass(frozen=True)
class ThroughputReport:
    """Tiles per second of each stage on the same tiles, and memory."""

    encoder: str
    device: str
    n_tiles: int
    batch_size: int
    num_workers: int
    loader_tiles_per_s: float
    model_tiles_per_s: float
    full_tiles_per_s: float
    reader_tiles_per_s: float = 0.0
    ceiling_tiles_per_s: float | None = None
    stored_tiles: int = 0
    resize: str = "worker"
    worker_scaling: dict[str, float] = field(default_factory=dict)
    rss_mib: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0

    @property
    def bottleneck(self) -> str:
        """``"data loading"`` when the loader is slower than the model, else ``"model"``."""
        return "data loading" if self.loader_tiles_per_s < self.model_tiles_per_s else "model"

    @property
    def reader_vs_ceiling(self) -> float | None:
        """Reader alone / decode ceiling (``None`` where the slide has no direct JPEG path)."""
        return self.reader_tiles_per_s / self.ceiling_tiles_per_s if self.ceiling_tiles_per_s else None

    def rows(self) -> list[dict[str, Any]]:
        """The report as ``wsistream bench`` rows (for ``--json`` and ``--compare``)."""
        work = f"extract {self.encoder} {self.device}"
        rows: list[dict[str, Any]] = []

        def add(name: str, value: float | None, unit: str = "tiles/s", **extra: Any) -> None:
            if value is not None:
                rows.append({"workload": work, "row": name, "value": round(value, 3), "unit": unit, **extra})

        add("decode ceiling (each stored tile once)", self.ceiling_tiles_per_s, stored_tiles=self.stored_tiles)
        add("reader alone (1 process)", self.reader_tiles_per_s, vs_ceiling=self.reader_vs_ceiling)
        for name, value in self.worker_scaling.items():
            add(f"loader, {name}", value)
        add(f"loader ({self.num_workers} workers)", self.loader_tiles_per_s)
        add("model alone", self.model_tiles_per_s)
        add("full path", self.full_tiles_per_s, vs_model=self.full_tiles_per_s / self.model_tiles_per_s)
        add("peak RSS", self.peak_rss_mib, "MiB")
        return rows

    def __str__(self) -> str:
        lines = [
            f"encoder={self.encoder} device={self.device} tiles={self.n_tiles} batch={self.batch_size} "
            f"workers={self.num_workers} resize={self.resize}"
        ]
        if self.ceiling_tiles_per_s:
            lines.append(
                f"  decode ceiling: {self.ceiling_tiles_per_s:10.1f} tiles/s ({self.stored_tiles} stored tiles once)"
            )
            lines.append(
                f"  reader alone  : {self.reader_tiles_per_s:10.1f} tiles/s ({self.reader_vs_ceiling:.2f}x ceiling)"
            )
        else:
            lines.append(f"  reader alone  : {self.reader_tiles_per_s:10.1f} tiles/s (no direct JPEG path: no ceiling)")
        for name, value in self.worker_scaling.items():
            lines.append(f"  loader, {name:14s}: {value:10.1f} tiles/s")
        lines += [
            f"  loader alone  : {self.loader_tiles_per_s:10.1f} tiles/s",
            f"  model alone   : {self.model_tiles_per_s:10.1f} tiles/s",
            f"  full path     : {self.full_tiles_per_s:10.1f} tiles/s",
            f"  bottleneck    : {self.bottleneck}",
            f"  RSS (MiB) over the reader pass: {', '.join(f'{v:.0f}' for v in self.rss_mib)}",
            f"  peak RSS      : {self.peak_rss_mib:.0f} MiB",
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Fields, derived values and rows, JSON-ready."""
        return {
            **asdict(self),
            "bottleneck": self.bottleneck,
            "reader_vs_ceiling": self.reader_vs_ceiling,
            "rows": self.rows(),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def grid_prefix(tiles: TileSet, max_tiles: int) -> TileSet:
    """The first ``max_tiles`` tiles in row-major grid order (the order extraction reads them)."""
    return tiles.take(np.lexsort((tiles.x0, tiles.y0))[:max_tiles])


def decode_ceiling(dataset: SlideTileDataset) -> tuple[float | None, int]:
    """``(tiles/s, stored tiles)`` if every stored JPEG tile the tiles touch were decoded once and nothing else."""
    import imagecodecs

    fast, t = dataset.reader.fast, dataset.tiles
    if fast is None or len(t) == 0:
        return None, 0
    lv = fast.levels[t.level]
    ds = fast.level_downsamples[t.level]
    keys: set[tuple[int, int]] = set()
    for x0, y0, w, h in zip(t.x0, t.y0, t.read_w, t.read_h, strict=True):
        lx, ly = round(x0 / ds), round(y0 / ds)
        rows = range(ly // lv.tile_height, min(lv.tiles_down - 1, (ly + h - 1) // lv.tile_height) + 1)
        cols = range(lx // lv.tile_width, min(lv.tiles_across - 1, (lx + w - 1) // lv.tile_width) + 1)
        keys.update((c, r) for r in rows for c in cols)
    raw = [fast.raw_tile(t.level, c, r) for c, r in sorted(keys, key=lambda k: (k[1], k[0]))]
    start = time.perf_counter()
    for data in raw:
        imagecodecs.jpeg8_decode(data, tables=lv.tables, colorspace=lv.colorspace, outcolorspace="RGB")
    return len(t) / max(time.perf_counter() - start, 1e-9), len(keys)


def reader_rate(dataset: SlideTileDataset, batch_size: int) -> tuple[float, list[float]]:
    """``(tiles/s, RSS samples)`` of the items in grid-order batches, in this process (handle opened first)."""
    dataset.reader.fast  # noqa: B018  open before timing
    batches = dataset.batches(batch_size)
    marks = {len(batches) * k // 4 for k in range(1, 4)}
    rss = [_rss_mib()]
    start = time.perf_counter()
    for b, batch in enumerate(batches):
        for i in batch:
            dataset[i]
        if b in marks:
            rss.append(_rss_mib())
    elapsed = time.perf_counter() - start
    rss.append(_rss_mib())
    return len(dataset) / max(elapsed, 1e-9), rss


def loader_rate(runner: TileEncoderRunner, dataset: SlideTileDataset, num_workers: int) -> float:
    """Tiles/s through ``num_workers`` DataLoader workers, batches moved to the device and dropped.

    The first batch (worker start) is not timed.
    """
    cfg = replace(runner.config, num_workers=num_workers)
    loader = TileEncoderRunner(runner.encoder, cfg).loader(dataset, dataset.batches(cfg.batch_size, num_workers))
    count, start = 0, None
    for batch, _ in loader:
        batch.to(runner.device, non_blocking=True)
        if start is None:
            start = time.perf_counter()
            continue
        count += len(batch)
    _sync(runner.device)
    return count / max(time.perf_counter() - (start or time.perf_counter()), 1e-9) if count else 0.0


def model_rate(runner: TileEncoderRunner, dataset: SlideTileDataset, n_tiles: int) -> float:
    """Tiles/s of device resize + preprocessing + forward on one device-resident batch, repeated."""
    batch = dataset.batches(runner.config.batch_size)[0]
    z_size = dataset.device_size(batch[0])
    sample = torch.stack([dataset[i][0] for i in batch]).to(runner.device)
    runner(sample, z_size, dataset.tiles.tile_size)  # warm-up
    reps = max(1, -(-n_tiles // len(batch)))
    _sync(runner.device)
    start = time.perf_counter()
    for _ in range(reps):
        out = runner.encode(sample, z_size, dataset.tiles.tile_size)
    out.float().cpu()
    return reps * len(batch) / max(time.perf_counter() - start, 1e-9)


def full_rate(runner: TileEncoderRunner, dataset: SlideTileDataset) -> float:
    """Tiles/s of :func:`embed_dataset` after its first batch (worker start and warm-up excluded)."""
    state: dict[str, Any] = {"count": -1, "start": None}

    def on_batch(n: int) -> None:
        if state["start"] is None:
            state["start"], state["count"] = time.perf_counter(), 0
        else:
            state["count"] += n

    embed_dataset(runner, dataset, on_batch=on_batch)
    if state["count"] <= 0:
        return 0.0
    return float(state["count"] / max(time.perf_counter() - state["start"], 1e-9))


def benchmark_throughput(
    slide_path: str | os.PathLike[str],
    encoder: Encoder,
    *,
    tiling: DeepZoomTiling | GridTiling | None = None,
    config: ExtractionConfig | None = None,
    backend: SlideBackend | None = None,
    max_tiles: int = 256,
    scaling: bool = False,
) -> ThroughputReport:
    """Measure every stage on the first ``max_tiles`` tissue tiles of a slide (grid order).

    ``scaling`` adds the loader with 1 and 2 workers (the issue's 2-worker target).
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    config = config or ExtractionConfig()
    backend = backend or OpenSlideBackend()
    runner = TileEncoderRunner(encoder, config)
    tiles, _ = plan_slide_tiles(slide_path, tiling or DeepZoomTiling(), backend=backend)
    tiles = grid_prefix(tiles, max_tiles)

    def fresh() -> SlideTileDataset:  # a cold decoded-tile cache for every pass
        return SlideTileDataset(tiles, backend, device_resize=runner.device_resize)

    probe = fresh()
    ceiling, stored = decode_ceiling(probe)
    probe.close()
    reader = fresh()
    reader_tps, rss = reader_rate(reader, config.batch_size)
    reader.close()
    workers = {f"{w} worker{'s' * (w > 1)}": loader_rate(runner, fresh(), w) for w in ((1, 2) if scaling else ())}
    loader_tps = loader_rate(runner, fresh(), config.num_workers)
    dataset = fresh()
    model_tps = model_rate(runner, dataset, len(tiles))
    full_tps = full_rate(runner, dataset)
    dataset.close()
    return ThroughputReport(
        encoder.name,
        str(runner.device),
        len(tiles),
        config.batch_size,
        config.num_workers,
        loader_tps,
        model_tps,
        full_tps,
        reader_tps,
        ceiling,
        stored,
        "device" if runner.device_resize else "worker",
        workers,
        rss,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
