"""Peak RSS of tile-feature extraction at 5k vs 50k tiles of one slide (issue 15: "peak RSS flat over 50k tiles").

Two steps::

    # a 20x slide of 50400 x 50400 px (0.5 µm/px, levels 1/4/16): 225 x 225 = 50625 DeepZoom tiles
    python benchmarks/extract_rss.py write --out /tmp/rssbench
    # one extraction per tile count, each in a fresh process; peak RSS from os.wait4 of that process
    python benchmarks/extract_rss.py run --slide /tmp/rssbench/synth-000-50400x50400-*.svs --tiles 5000,50000 \\
        --json out.json

Each run reads the first N tiles of the slide in grid order (tissue detection bypassed
by a whole-slide mask: the synthetic slide's background tiles count too) through the
extraction path (:class:`SlideTileDataset` + :func:`embed_dataset`, the direct-JPEG
reader and its row cache), in-process (``num_workers=0``: every byte is in the measured
process), into a tiny encoder (a 32-px patchify conv, 16-d, mean-pooled: the model is
not what is measured). RSS is sampled at ten points of the pass; "flat" means the
peak does not grow with N beyond the (N, d) float32 feature array itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write(out: str, side: int) -> None:
    """Write (or reuse) the slide and print its path."""
    from wsistream.synthetic import write_synthetic_cohort

    t0 = time.perf_counter()
    (path,) = write_synthetic_cohort(
        out, 1, width=side, height=side, mpp=0.5, app_mag=20, downsamples=(1, 4, 16), seed=50
    )
    print(json.dumps({"slide": str(path), "bytes": path.stat().st_size, "seconds": time.perf_counter() - t0}))


def _whole_slide_detector() -> Any:
    """A tissue detector whose mask is the whole overview: every tile of the grid is read."""
    from dataclasses import dataclass

    import numpy as np

    from wsistream.tissue.base import TissueDetector, TissueMask

    @dataclass(frozen=True)
    class WholeSlide(TissueDetector):
        def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
            return TissueMask(np.ones(overview.shape[:2], bool), *downsample)

    return WholeSlide()


def one(slide: str, n_tiles: int, batch_size: int) -> None:
    """Extract the first ``n_tiles`` grid-order tiles of ``slide`` and print a JSON line of what was seen."""
    import torch
    from torch import nn

    from wsistream.backends import OpenSlideBackend
    from wsistream.features import DeepZoomTiling, Encoder, ExtractionConfig, SlideTileDataset
    from wsistream.features.bench import grid_prefix
    from wsistream.features.extract import TileEncoderRunner, embed_dataset, plan_slide_tiles

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 32, stride=32), nn.Flatten(2))
    encoder = Encoder.from_module(model, name="patchify16", forward=lambda m, x: m(x).mean(dim=2))
    runner = TileEncoderRunner(encoder, ExtractionConfig(batch_size=batch_size, num_workers=0, device="cpu"))
    backend = OpenSlideBackend()
    tiling = DeepZoomTiling(tissue_threshold=0.0, tissue_detector=_whole_slide_detector())
    tiles, _ = plan_slide_tiles(slide, tiling, backend=backend)
    tiles = grid_prefix(tiles, n_tiles)
    dataset = SlideTileDataset(tiles, backend)
    fast = dataset.reader.fast
    rss = [_rss_mib()]
    state = {"done": 0}
    marks = {len(tiles) * k // 10 for k in range(1, 10)}

    def on_batch(n: int) -> None:
        before, state["done"] = state["done"], state["done"] + n
        if any(before < m <= state["done"] for m in marks):
            rss.append(_rss_mib())

    t0 = time.perf_counter()
    feats = embed_dataset(runner, dataset, on_batch=on_batch)
    seconds = time.perf_counter() - t0
    rss.append(_rss_mib())
    report = {
        "n_tiles": len(tiles),
        "seconds": round(seconds, 1),
        "tiles_per_s": round(len(tiles) / seconds, 1),
        "stored_tiles_decoded": fast.tiles_decoded if fast else None,
        "row_cache_mib": round(fast.cache.capacity_bytes / 2**20, 1) if fast else None,
        "features_mib": round(feats.nbytes / 2**20, 2),
        "rss_mib": [round(v) for v in rss],
    }
    dataset.close()
    print(json.dumps(report))


def run(slide: str, counts: list[int], batch_size: int, json_out: str | None) -> None:
    """Run :func:`one` for each tile count in a fresh process; peak RSS from ``os.wait4``."""
    results: list[dict[str, Any]] = []
    for n in counts:
        cmd = [sys.executable, __file__, "one", "--slide", slide, "--tiles", str(n), "--batch-size", str(batch_size)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} exited {proc.returncode}")
        row = {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": round(usage.ru_maxrss / 1024)}
        print(json.dumps(row), flush=True)
        results.append(row)
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=1))


def main() -> None:
    """Command line: ``write``, ``run`` (the measurement), ``one`` (a single run, used by ``run``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--out", required=True)
    w.add_argument("--side", type=int, default=50400)
    for name in ("run", "one"):
        p = sub.add_parser(name)
        p.add_argument("--slide", required=True)
        p.add_argument("--tiles", required=True, help="tile count (one) or comma-separated counts (run)")
        p.add_argument("--batch-size", type=int, default=64)
        if name == "run":
            p.add_argument("--json")
    args = parser.parse_args()
    if args.cmd == "write":
        write(args.out, args.side)
    elif args.cmd == "one":
        one(args.slide, int(args.tiles), args.batch_size)
    else:
        run(args.slide, [int(v) for v in args.tiles.split(",")], args.batch_size, args.json)


if __name__ == "__main__":
    main()
