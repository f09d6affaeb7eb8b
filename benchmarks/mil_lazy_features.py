"""Peak RSS and wall time of ``mil-cv`` on a synthetic TCGA-size feature cohort (issue 17).

Two steps::

    # 300 slides x 10k tiles x 768-d float32 = 9.25 GB of features.npy (the per-slide size of TCGA)
    python benchmarks/mil_lazy_features.py write --out /tmp/milbench --slides 300 --tiles 10000 --dim 768
    # one mil-cv per mode, each in a fresh process; peak RSS from os.wait4 of that process
    python benchmarks/mil_lazy_features.py run --cohort /tmp/milbench --modes auto,lazy,random-lazy \\
        [--baseline-src /tmp/old/src] --json out.json

Modes (``mil-cv --model meanpool``, 2 outer x 2 inner folds, one grid point,
1 epoch, ``n_tiles`` 1000, batch 16, CPU; the CV settings are small on
purpose: what is measured is how features are held and read):

* ``auto`` - the default: ``histossl`` protocol, rows held in RAM if they fit
  ``--memory-gb 1`` (the first 1000 rows per slide), else read per batch;
* ``lazy`` - ``histossl``, ``--memory-gb 0``: always read per batch;
* ``random-lazy`` - ``random-tiles`` protocol, ``--memory-gb 0`` (all rows
  are candidates; only the sampled ones are read);
* ``baseline`` - the loader before issue 17 (every tile of every slide in
  RAM): the same command run with ``PYTHONPATH=--baseline-src``, a source
  tree of the previous commit (``git archive <commit> src | tar -x -C DIR``).

Numbers on a shared machine are noisy; compare modes of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_CV_ARGS = [
    "--model", "meanpool", "--task", "binary", "--outer-folds", "2", "--inner-folds", "2",
    "--lr", "1e-3", "--wd", "0", "--epochs", "1", "--n-tiles", "1000", "--batch-size", "16", "--device", "cpu",
]  # fmt: skip
_MODES = {
    "auto": [],
    "lazy": ["--memory-gb", "0"],
    "random-lazy": ["--protocol", "random-tiles", "--memory-gb", "0"],
    "baseline": ["--tile-sampling", "first"],  # the same sampling as auto/lazy, all tiles in RAM
}


def write_cohort(out: Path, slides: int, tiles: int, dim: int, seed: int) -> None:
    """``slides`` HistoSSLscaling folders (``features.npy`` (tiles, 3 + dim)) and ``labels.csv``.

    Label-1 slides carry +0.5 on the first 8 feature dims in their first
    ``tiles // 2`` rows, so the CV has something to find.
    """
    from wsistream.features.formats import write_histossl

    rng = np.random.default_rng(seed)
    rows = []
    t0 = time.perf_counter()
    for i in range(slides):
        sid, label = f"S{i:04d}", i % 2
        feats = rng.standard_normal((tiles, dim), dtype=np.float32)
        feats[: tiles // 2, :8] += 0.5 * label
        coords = np.c_[np.full(tiles, 16), np.arange(tiles) % 100, np.arange(tiles) // 100].astype(np.float32)
        write_histossl(out / "features" / sid, feats, coords)
        rows.append(f"{sid},P{i:04d},{label}")
    (out / "labels.csv").write_text("slide_id,patient_id,label\n" + "\n".join(rows) + "\n")
    size = slides * tiles * (dim + 3) * 4 / 1e9
    print(f"wrote {slides} slides x {tiles} tiles x {dim}-d ({size:.2f} GB) in {time.perf_counter() - t0:.0f} s")


def run_mode(cohort: Path, mode: str, baseline_src: str | None, out: Path) -> dict[str, object]:
    """One ``mil-cv`` in a fresh process: wall time (s) and peak RSS (GiB) of that process."""
    env = dict(os.environ)
    if mode == "baseline":
        if not baseline_src:
            raise SystemExit("mode 'baseline' needs --baseline-src (a src/ tree of the previous commit)")
        env["PYTHONPATH"] = baseline_src
    cmd = [sys.executable, "-m", "wsistream.mil.cli", "mil-cv", "--features", str(cohort / "features")]
    cmd += ["--labels", str(cohort / "labels.csv"), "--out", str(out / mode), *_CV_ARGS, *_MODES[mode]]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    summary = [line for line in output.splitlines() if "meanpool binary: auc" in line]
    row = {
        "mode": mode,
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),  # ru_maxrss is in KiB on Linux
        "summary": summary[-1].strip() if summary else output[-800:],
        "command": " ".join(cmd),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    """Command line: ``write`` or ``run``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write the synthetic cohort")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--slides", type=int, default=300)
    w.add_argument("--tiles", type=int, default=10_000)
    w.add_argument("--dim", type=int, default=768)
    w.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="run mil-cv once per mode")
    r.add_argument("--cohort", type=Path, required=True)
    r.add_argument("--modes", default="auto,lazy,random-lazy")
    r.add_argument("--baseline-src", default=None)
    r.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "write":
        write_cohort(args.out, args.slides, args.tiles, args.dim, args.seed)
        return
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(_MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; pass some of {sorted(_MODES)}")
    rows = [run_mode(args.cohort, m, args.baseline_src, args.cohort / "runs") for m in modes]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
