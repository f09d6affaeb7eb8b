"""What reading a coarser pyramid level costs vs resampling level 0, at the same target µm/px.

``plan_read`` reads the coarsest level not coarser than the target (on the
0.228 µm/px DAPI NDPI at 0.5 µm/px: level 1, 245 px -> 224). This reads the
same footprints from level 0 and area-resamples both to 224 px, reporting the
grey-level difference and the pixels decoded.

Usage::

    python benchmarks/read_level_vs_level0.py ../shared/data/test3-DAPI-2.ndpi --patches 40
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from wsistream.backends import OpenSlideBackend
from wsistream.sampling import plan_read


def measure(slide: str, n_patches: int, target_mpp: float = 0.5, seed: int = 0) -> dict[str, object]:
    """Differences between the planned level's read and level 0's; see the module docstring."""
    rng = np.random.default_rng(seed)
    with OpenSlideBackend().open(slide) as handle:
        props = handle.properties
        plan = plan_read(props, 224, target_mpp=target_mpp)
        foot = round(plan.footprint_level0)
        diffs = []
        for _ in range(n_patches):
            x0 = int(rng.integers(0, props.level0_width - 2 * foot)) // 2 * 2
            y0 = int(rng.integers(0, props.level0_height - 2 * foot)) // 2 * 2
            planned = handle.read_region(x0, y0, plan.level, (plan.read_size, plan.read_size))
            level0 = handle.read_region(x0, y0, 0, (foot, foot))
            a = cv2.resize(planned, (224, 224), interpolation=cv2.INTER_AREA)
            b = cv2.resize(level0, (224, 224), interpolation=cv2.INTER_AREA)
            diffs.append(np.abs(a.astype(np.int16) - b).ravel())
    d = np.concatenate(diffs)
    return {
        "slide": slide,
        "level": plan.level,
        "read_size": plan.read_size,
        "level0_read_size": foot,
        "mean_abs": round(float(d.mean()), 3),
        "p99": float(np.percentile(d, 99)),
        "max": int(d.max()),
        "pixels_decoded_ratio": round(foot**2 / plan.read_size**2, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide")
    ap.add_argument("--patches", type=int, default=40)
    args = ap.parse_args()
    print(json.dumps(measure(args.slide, args.patches), indent=1))


if __name__ == "__main__":
    main()
