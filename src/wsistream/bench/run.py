"""``wsistream bench``: every number of the throughput issue from one run, side by side.

Rows (single process unless stated):

* decode ceiling: libjpeg-turbo decode of exactly the JPEG tiles the workload touches;
* raw loop: ``openslide.read_region`` at the same positions (+ area resize on 40x);
* ours: the Phikon-v2 recipe (Otsu, ``RandomSampler(224, target_mpp=0.5,
  tissue_threshold=0.6)``, pool 8, 100 patches per slide) from ``iter()``,
  slide opening included; with the DINOv2 views rendered in the worker, and
  planned in the worker for ``DeviceViews`` (plus what the replay costs on
  this machine's torch device); the GPFM recipe (CLAM TCGA,
  512 px at level 0) against its own raw loop;
* time to first patch of an 8-slide pool and the per-slide open cost;
* DataLoader with 2 workers vs 1 (when the torch extra is installed);
* peak RSS.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsistream.backends._tile_cache import tile_cache_counts
from wsistream.bench.slides import BenchSlides, bench_slides
from wsistream.bench.workloads import (
    decode_ceiling,
    open_costs,
    positions_of,
    raw_openslide_loop,
    row,
    stream_rate,
)
from wsistream.pipeline import PatchPipeline
from wsistream.recipes import build_pipeline

_POOL = "20x pool (8 slides)"
_POOL_PATCHES = 800  # 8 slides x 100 patches
_BIG_PATCHES = 400


def run_bench(
    cache_dir: Path | None = None,
    out: Path | None = None,
    *,
    quick: bool = False,
    loader: bool = True,
    repeats: int | None = None,
) -> dict[str, Any]:
    """Run every row; return (and optionally write) the results as a dict.

    ``repeats`` (default 3, 1 with ``quick``) interleaved runs of the 20x-pool rows; each row keeps its best.
    """
    n_repeats = repeats if repeats is not None else (1 if quick else 3)
    t_setup = time.perf_counter()
    slides = bench_slides(cache_dir, quick=quick)
    setup_s = time.perf_counter() - t_setup
    rows = _pool_rows(slides, n_repeats) + _slide_40x_rows(slides) + _gpfm_rows(slides)
    if loader:
        rows.extend(_loader_rows(slides.pool_20x))
    rows.append(row("process", "peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"))
    # last, so that its CPU-torch buffers do not count in the streaming RSS above
    rows.extend(_device_views_rows(_phikon(slides.pool_20x, views=True, view_rendering="device")))
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "quick": quick,
        "repeats": n_repeats,
        "slides": {"40x": slides.slide_40x, "20x": slides.slide_20x, "pool": slides.pool_20x},
        "slide_setup_s": round(setup_s, 1),
        "rows": rows,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def _phikon(paths: list[str], views: bool = False, **overrides: Any) -> Callable[[], PatchPipeline]:
    """A factory of the Phikon-v2 recipe on ``paths`` (one pass)."""
    # views rows use the OpenCV resize: the one device rendering supports, so CPU and device rows compare
    resize = {"resize": "opencv"} if views else {}
    return lambda: build_pipeline("phikon-v2", paths, views=views, cycle=False, **resize, **overrides)


def _pool_rows(slides: BenchSlides, n_repeats: int) -> list[dict[str, Any]]:
    """The 20x pool: ceiling, raw loop, ours plain / with CPU views / with planned views, opening, tile reuse.

    The pipeline rows are best-of-``n_repeats``, interleaved, so a background hiccup or a cold cache does
    not land on one variant only; the raw loop and the ceiling likewise.
    """
    work = positions_of(_phikon(slides.pool_20x)(), _POOL_PATCHES)
    variants = {
        "plain": _phikon(slides.pool_20x),
        "views": _phikon(slides.pool_20x, views=True),
        "planned": _phikon(slides.pool_20x, views=True, view_rendering="device"),
    }
    best: dict[str, tuple[float, float]] = {}
    ceiling_tiles, raw = (0.0, 0.0), 0.0
    hits = misses = 0
    for _ in range(n_repeats):
        ceiling_tiles = max(ceiling_tiles, decode_ceiling(work))
        raw = max(raw, raw_openslide_loop(work))
        for name, make in variants.items():
            before = tile_cache_counts()
            best[name] = max(best.get(name, (0.0, 0.0)), stream_rate(make, _POOL_PATCHES))
            if name == "plain":
                after = tile_cache_counts()
                hits, misses = after[0] - before[0], after[1] - before[1]
    (ours, first), (ours_views, _), (ours_planned, _) = best["plain"], best["views"], best["planned"]
    ceiling, tiles = ceiling_tiles
    costs = open_costs(_phikon(slides.pool_20x), slides.pool_20x)
    lookups = max(hits + misses, 1)
    return [
        row(_POOL, "decode ceiling", ceiling, tiles_per_patch=round(tiles, 2)),
        row(_POOL, "raw read_region loop", raw),
        row(_POOL, "ours phikon-v2 (opening included)", ours, vs_raw=ours / raw, vs_ceiling=ours / ceiling),
        row(
            _POOL,
            "ours phikon-v2 + 2 global/8 local views",
            ours_views,
            vs_raw=ours_views / raw,
            views_overhead=ours / ours_views - 1,
        ),
        row(
            _POOL,
            "ours + the same views planned, rendered on device",
            ours_planned,
            vs_raw=ours_planned / raw,
            views_overhead=ours / ours_planned - 1,
        ),
        row(_POOL, "time to first patch (8-slide pool)", first, "s"),
        row(_POOL, "per-slide open cost (mean)", sum(costs) / len(costs), "s", max=max(costs)),
        row(
            _POOL,
            "decoded-tile cache hits (ours phikon-v2)",
            hits / lookups,
            "fraction",
            hits=hits,
            misses=misses,
            decodes_per_patch=misses / _POOL_PATCHES,
        ),
    ]


def _slide_40x_rows(slides: BenchSlides) -> list[dict[str, Any]]:
    """The 40x slide read at exactly 0.5 µm/px: ceiling, raw read + area resize loop, ours."""

    def make() -> PatchPipeline:
        return build_pipeline("phikon-v2", [slides.slide_40x], patches_per_slide=_BIG_PATCHES, cycle=False)

    work = positions_of(make(), _BIG_PATCHES)
    ceiling, tiles = decode_ceiling(work)
    raw = raw_openslide_loop(work)
    ours, _ = stream_rate(make, _BIG_PATCHES)
    workload = "40x slide, 0.5 µm/px"
    return [
        row(workload, "decode ceiling", ceiling, tiles_per_patch=round(tiles, 2)),
        row(workload, "raw read_region(444)+resize loop", raw),
        row(workload, "ours phikon-v2 (opening included)", ours, vs_raw=ours / raw, vs_ceiling=ours / ceiling),
    ]


def _gpfm_rows(slides: BenchSlides) -> list[dict[str, Any]]:
    """GPFM: 512 px at level 0 on the 40x and 20x slides (CLAM TCGA preset) against its own raw loop."""

    def make() -> PatchPipeline:
        paths = [slides.slide_40x, slides.slide_20x]
        return build_pipeline("gpfm", paths, patches_per_slide=_BIG_PATCHES // 2, cycle=False)

    work = positions_of(make(), _BIG_PATCHES)
    raw = raw_openslide_loop(work)
    ours, _ = stream_rate(make, _BIG_PATCHES)
    return [
        row("GPFM 512 px level 0", "raw read_region(512) loop", raw),
        row("GPFM 512 px level 0", "ours gpfm (CLAM TCGA, opening included)", ours, vs_raw=ours / raw),
    ]


def _device_views_rows(make: Any) -> list[dict[str, Any]]:
    """DeviceViews cost and parity rows (empty when the torch extra is missing)."""
    try:
        from wsistream.bench.device_views import device_views_rows
    except ImportError:
        return []
    return device_views_rows(make)


def _loader_rows(pool: list[str]) -> list[dict[str, Any]]:
    """DataLoader scaling rows (empty when the torch extra is missing)."""
    try:
        from wsistream.bench.loader import loader_scaling
    except ImportError:
        return []
    return loader_scaling(pool)


def format_table(result: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """A plain-text table of the rows with their ratios.

    With ``baseline`` (an earlier run's JSON), each row also shows its value there and the ratio now / then,
    so runs on the same machine can be compared row by row.
    """
    before = {(r["workload"], r["row"]): r["value"] for r in (baseline or {}).get("rows", [])}
    header = f"{'workload':24s} {'row':52s} {'value':>10s} {'unit':12s}"
    lines = [header + (f" {'baseline':>10s} {'now/then':>8s}" if baseline else "") + " ratios"]
    for r in result["rows"]:
        ratios = ", ".join(
            f"{k}={v:.3g}"
            for k, v in r.items()
            if k not in ("workload", "row", "value", "unit") and isinstance(v, float)
        )
        line = f"{r['workload']:24s} {r['row']:52s} {r['value']:10.2f} {r['unit']:12s}"
        if baseline:
            old = before.get((r["workload"], r["row"]))
            line += f" {old:10.2f} {r['value'] / old:8.2f}" if old else f" {'—':>10s} {'':8s}"
        lines.append(f"{line} {ratios}")
    return "\n".join(lines)
