"""Side-by-side row: the PyPI reference release (wsistream==0.1.6) on the benchmark's 20x pool and 40x slide.

Installs the reference into a throwaway virtualenv (it shares our import name, so it cannot live in ours),
then runs the same workload as `wsistream bench`'s Phikon-v2 rows through it — Otsu tissue detection,
RandomSampler(224, target_mpp=0.5, tissue_threshold=0.6), pool 8, 100 patches per slide, time from iter()
(slide opening included) — and reports patches/s, time to the first patch and the µm/px the reference
actually delivers on the 40x slide (it picks the *closest* pyramid level, so a 0.252 µm/px scan with levels
1/4/16 is read at level 0 = 0.252 µm/px when 0.5 is asked).

Usage: .venv/bin/python benchmarks/compare_reference.py [--venv /tmp/wsistream-ref] [--patches 800]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path

CHILD = r"""
import itertools, json, sys, time
from wsistream.pipeline import PatchPipeline
from wsistream.backends import OpenSlideBackend
from wsistream.tissue import OtsuTissueDetector
from wsistream.sampling import RandomSampler

slides, n = json.loads(sys.argv[1]), int(sys.argv[2])
pipe = PatchPipeline(slide_paths=slides, backend=OpenSlideBackend(), tissue_detector=OtsuTissueDetector(),
                     sampler=RandomSampler(patch_size=224, num_patches=-1, target_mpp=0.5, tissue_threshold=0.6),
                     pool_size=8, patches_per_slide=100, cycle=True, seed=0)
t0 = time.perf_counter()
it = iter(pipe)
first = next(it)
t_first = time.perf_counter() - t0
count = 1 + sum(1 for _ in itertools.islice(it, n - 1))
elapsed = time.perf_counter() - t0
print(json.dumps({"patches_per_s": count / elapsed, "time_to_first_s": t_first,
                  "delivered_mpp": first.coordinate.mpp, "level": first.coordinate.level,
                  "shape": list((first.image if first.image is not None else first.views["global_0"]).shape)}))
"""


def main() -> int:
    from wsistream.bench.slides import bench_slides

    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", type=Path, default=Path("/tmp/wsistream-ref"))
    ap.add_argument("--patches", type=int, default=800)
    ap.add_argument("--quick", action="store_true", help="small benchmark slides")
    args = ap.parse_args()
    python = args.venv / "bin" / "python"
    if not (args.venv / ".ready").exists():
        venv.create(args.venv, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "wsistream==0.1.6", "openslide-python", "openslide-bin"],
            check=True,
        )
        (args.venv / ".ready").touch()
    slides = bench_slides(quick=args.quick)
    rows = {}
    for name, paths, n in (
        ("20x pool (8 slides)", slides.pool_20x, args.patches),
        ("40x slide", [slides.slide_40x], 200),
    ):
        out = subprocess.run(
            [str(python), "-c", CHILD, json.dumps(paths), str(n)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if out.returncode != 0:
            print(f"{name}: reference failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"reference wsistream 0.1.6, {name}: {json.dumps(rows[name])}")
    Path("bench_out").mkdir(exist_ok=True)
    Path("bench_out/reference.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
