"""Tissue-mask building at ``overview_side`` 1024 vs 2048 on the shared slides (issue 19 item 6: one overview size).

For each slide and side: the pyramid level the overview is read from, the mask's shape and
level-0 px per mask cell, and the time of ``OtsuTissueDetector().detect_slide`` (the
overview read plus Otsu) on an opened handle — the work ``PatchPipeline`` does once per
slide before its first patch (the process mask cache then serves reopenings). Median of
``--repeats`` runs after one warm-up, one thread::

    OMP_NUM_THREADS=1 python benchmarks/overview_side.py [--slides ../shared/data/*.svs ...] [--repeats 7]

The large-pyramid row of docs/performance.md is a synthetic 40x slide written with
``write_aperio_svs(path, width=40000, height=30000, downsamples=(1, 4, 16, 32), seed=7)`` (52 s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2

from wsistream.backends import OpenSlideBackend
from wsistream.tissue import OtsuTissueDetector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    """Print one Markdown row per slide and side."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", nargs="+", default=sorted(str(s) for s in DATA.glob("*.*")))
    p.add_argument("--sides", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    cv2.setNumThreads(1)
    detector = OtsuTissueDetector()
    print("| slide | level 0 | overview_side | level read (its size) | mask | level-0 px per cell | ms (median) |")
    print("|---|---|---:|---|---|---:|---:|")
    for path in args.slides:
        with OpenSlideBackend().open(path) as handle:
            props = handle.properties
            for side in args.sides:
                level = handle.overview_level(side)
                mask = detector.detect_slide(handle, props, side)  # warm-up: file cache, decoder
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    detector.detect_slide(handle, props, side)
                    times.append(time.perf_counter() - t0)
                lw, lh = props.level_dimensions[level]
                print(
                    f"| {Path(path).name} | {props.level0_width}×{props.level0_height} | {side} | {level} ({lw}×{lh}) "
                    f"| {mask.mask.shape[1]}×{mask.mask.shape[0]} | {mask.downsample_x:.1f} "
                    f"| {1000 * statistics.median(times):.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
