"""The measured workloads: decode ceiling, raw OpenSlide loop, our pipeline — same slides, same run."""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from wsistream.pipeline import PatchPipeline


@dataclass(frozen=True)
class Workload:
    """Positions (level-0) and the read recipe of a raw loop."""

    reads: list[tuple[str, int, int]]  # (slide, x0, y0)
    level: int
    read_size: int
    patch_size: int


def row(workload: str, name: str, value: float, unit: str = "patches/s", **extra: Any) -> dict[str, Any]:
    """One result row of ``wsistream bench`` (``extra``: ratios and counts shown beside the value)."""
    return {"workload": workload, "row": name, "value": round(value, 3), "unit": unit, **extra}


def rate(n: int, seconds: float) -> float:
    """Items per second (0 when nothing was timed)."""
    return n / seconds if seconds > 0 else 0.0


def positions_of(pipeline: PatchPipeline, n: int) -> Workload:
    """The first ``n`` positions our pipeline streams (used for the raw loop and the ceiling)."""
    results = list(itertools.islice(iter(pipeline), n))
    c = results[0].coordinate
    return Workload(
        [(r.coordinate.slide_path, r.coordinate.x0, r.coordinate.y0) for r in results],
        c.level,
        c.read_size,
        c.patch_size,
    )


def raw_openslide_loop(work: Workload) -> float:
    """Patches/s of a bare ``openslide.read_region`` loop (+ area resize when the read is larger)."""
    import openslide

    handles = {p: openslide.OpenSlide(p) for p in {s for s, _, _ in work.reads}}
    t0 = time.perf_counter()
    for slide, x0, y0 in work.reads:
        region = np.asarray(handles[slide].read_region((x0, y0), work.level, (work.read_size, work.read_size)))
        rgb = np.ascontiguousarray(region[:, :, :3])
        if work.read_size != work.patch_size:
            rgb = cv2.resize(rgb, (work.patch_size, work.patch_size), interpolation=cv2.INTER_AREA)
    elapsed = time.perf_counter() - t0
    for h in handles.values():
        h.close()
    return rate(len(work.reads), elapsed)


def decode_ceiling(work: Workload) -> tuple[float, float]:
    """Patches/s if every patch only JPEG-decoded (libjpeg-turbo via imagecodecs) the tiles it touches.

    Returns ``(patches/s, mean tiles per patch)``.  Raw tile bytes are read
    before timing, so this is the pure decode cost, the ceiling for any reader
    that decodes each patch's tiles once.
    """
    import imagecodecs
    import tifffile

    jobs: list[list[tuple[bytes, bytes | None, str]]] = []
    files = {}
    try:
        for slide, x0, y0 in work.reads:
            if slide not in files:
                tif = tifffile.TiffFile(slide)
                pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
                files[slide] = (tif, pages)
            tif, pages = files[slide]
            page = pages[work.level]
            ds = pages[0].imagewidth / page.imagewidth  # the first tiled page is level 0
            tw, th = page.tilewidth, page.tilelength
            cols = -(-page.imagewidth // tw)
            lx, ly = int(x0 / ds), int(y0 / ds)
            tiles = []
            for ty in range(ly // th, (ly + work.read_size - 1) // th + 1):
                for tx in range(lx // tw, (lx + work.read_size - 1) // tw + 1):
                    idx = ty * cols + tx
                    tif.filehandle.seek(page.dataoffsets[idx])
                    data = tif.filehandle.read(page.databytecounts[idx])
                    colorspace = "RGB" if page.photometric == 2 else "YCBCR"
                    tiles.append((data, page.jpegtables, colorspace))
            jobs.append(tiles)
    finally:
        for tif, _ in files.values():
            tif.close()
    t0 = time.perf_counter()
    for tiles in jobs:
        for data, tables, colorspace in tiles:
            imagecodecs.jpeg8_decode(data, tables=tables, colorspace=colorspace, outcolorspace="RGB")
    elapsed = time.perf_counter() - t0
    return rate(len(jobs), elapsed), float(np.mean([len(t) for t in jobs]))


def stream_rate(make: Callable[[], PatchPipeline], n: int) -> tuple[float, float]:
    """``(patches/s from iter() including slide opening, seconds to the first patch)``."""
    pipeline = make()
    t0 = time.perf_counter()
    stream = iter(pipeline)
    next(stream)
    first = time.perf_counter() - t0
    count = 1 + sum(1 for _ in itertools.islice(stream, n - 1))
    elapsed = time.perf_counter() - t0
    stream.close()
    return rate(count, elapsed), first


def concurrent_stream_rate(make: Callable[[], PatchPipeline], n: int, processes: int) -> float:
    """Summed patches/s of ``processes`` copies of :func:`stream_rate` started together, one per process.

    No DataLoader: each child builds its pipeline, waits at a barrier, then
    streams ``n`` patches. The sum is what this machine gives that many
    independent streams at this moment, the ceiling a DataLoader with as many
    workers can reach (it adds collation, inter-process transfer, and a main
    process that needs CPU too); measured beside the loader rows so that a
    busy machine shows in both.
    """
    ctx = mp.get_context()
    barrier = ctx.Barrier(processes)
    results = ctx.SimpleQueue()
    children = [ctx.Process(target=_stream_child, args=(make, n, barrier, results)) for _ in range(processes)]
    for child in children:
        child.start()
    rates = [float(results.get()) for _ in children]
    for child in children:
        child.join()
    return sum(rates)


def _stream_child(make: Callable[[], PatchPipeline], n: int, barrier: Any, results: Any) -> None:
    make()  # imports and the recipe's checks, outside the timed part as in the parent's rows
    barrier.wait()
    results.put(stream_rate(make, n)[0])


def open_costs(make: Callable[[], PatchPipeline], slides: Sequence[str]) -> list[float]:
    """Seconds to open one slide (properties, overview, tissue mask, first position), per slide."""
    costs = []
    for slide in slides:
        pipeline = dataclasses.replace(make(), slide_paths=[slide], tissue_mask_cache_size=0)
        t0 = time.perf_counter()
        stream = iter(pipeline)
        stream._refill()  # open the pool without reading a patch
        costs.append(time.perf_counter() - t0)
        stream.close()
    return costs
