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
from pathlib import Path
from typing import Any

from wsistream.bench.slides import bench_slides
from wsistream.bench.workloads import decode_ceiling, open_costs, positions_of, raw_openslide_loop, stream_rate
from wsistream.recipes import build_pipeline


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
    rows: list[dict[str, Any]] = []
    n_pool = 800  # 8 slides x 100 patches

    def add(workload: str, name: str, value: float, unit: str = "patches/s", **extra: Any) -> None:
        rows.append({"workload": workload, "row": name, "value": round(value, 3), "unit": unit, **extra})

    # -- 20x pool of 8 slides, Phikon-v2 -------------------------------------------------------
    def phikon(paths: list[str], views: bool = False, **overrides: Any):
        # views rows use the OpenCV resize: the one device rendering supports, so CPU and device rows compare
        resize = {"resize": "opencv"} if views else {}
        return lambda: build_pipeline("phikon-v2", paths, views=views, cycle=False, **resize, **overrides)

    work = positions_of(phikon(slides.pool_20x)(), n_pool)
    # the pipeline rows are best-of-`repeats`, interleaved, so a background hiccup or a cold cache does not
    # land on one variant only; the raw loop and the ceiling likewise
    variants = {
        "plain": phikon(slides.pool_20x),
        "views": phikon(slides.pool_20x, views=True),
        "planned": phikon(slides.pool_20x, views=True, view_rendering="device"),
    }
    best: dict[str, tuple[float, float]] = {}
    ceiling_tiles, raw = (0.0, 0.0), 0.0
    for _ in range(n_repeats):
        ceiling_tiles = max(ceiling_tiles, decode_ceiling(work))
        raw = max(raw, raw_openslide_loop(work))
        for name, make in variants.items():
            measured = stream_rate(make, n_pool)
            best[name] = max(best.get(name, (0.0, 0.0)), measured)
    (ours, first), (ours_views, _), (ours_planned, _) = best["plain"], best["views"], best["planned"]
    ceiling, tiles = ceiling_tiles
    add("20x pool (8 slides)", "decode ceiling", ceiling, tiles_per_patch=round(tiles, 2))
    add("20x pool (8 slides)", "raw read_region loop", raw)
    add("20x pool (8 slides)", "ours phikon-v2 (opening included)", ours, vs_raw=ours / raw, vs_ceiling=ours / ceiling)
    add(
        "20x pool (8 slides)",
        "ours phikon-v2 + 2 global/8 local views",
        ours_views,
        vs_raw=ours_views / raw,
        views_overhead=ours / ours_views - 1,
    )
    add(
        "20x pool (8 slides)",
        "ours + the same views planned, rendered on device",
        ours_planned,
        vs_raw=ours_planned / raw,
        views_overhead=ours / ours_planned - 1,
    )
    add("20x pool (8 slides)", "time to first patch (8-slide pool)", first, "s")
    costs = open_costs(phikon(slides.pool_20x), slides.pool_20x)
    add("20x pool (8 slides)", "per-slide open cost (mean)", sum(costs) / len(costs), "s", max=max(costs))

    # -- 40x slide at exact 0.5 µm/px ------------------------------------------------------------
    n_big = 400
    work = positions_of(build_pipeline("phikon-v2", [slides.slide_40x], patches_per_slide=n_big, cycle=False), n_big)
    ceiling, tiles = decode_ceiling(work)
    raw = raw_openslide_loop(work)
    ours, first = stream_rate(
        lambda: build_pipeline("phikon-v2", [slides.slide_40x], patches_per_slide=n_big, cycle=False), n_big
    )
    add("40x slide, 0.5 µm/px", "decode ceiling", ceiling, tiles_per_patch=round(tiles, 2))
    add("40x slide, 0.5 µm/px", "raw read_region(444)+resize loop", raw)
    add("40x slide, 0.5 µm/px", "ours phikon-v2 (opening included)", ours, vs_raw=ours / raw, vs_ceiling=ours / ceiling)

    # -- GPFM: 512 px at level 0 -----------------------------------------------------------------
    def gpfm():
        return build_pipeline("gpfm", [slides.slide_40x, slides.slide_20x], patches_per_slide=n_big // 2, cycle=False)

    work = positions_of(gpfm(), n_big)
    raw = raw_openslide_loop(work)
    ours, _ = stream_rate(gpfm, n_big)
    add("GPFM 512 px level 0", "raw read_region(512) loop", raw)
    add("GPFM 512 px level 0", "ours gpfm (CLAM TCGA, opening included)", ours, vs_raw=ours / raw)

    if loader:
        rows.extend(_loader_rows(slides.pool_20x))
    add("process", "peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB")
    # last, so that its CPU-torch buffers do not count in the streaming RSS above
    rows.extend(_device_views_rows(phikon(slides.pool_20x, views=True, view_rendering="device")))
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
