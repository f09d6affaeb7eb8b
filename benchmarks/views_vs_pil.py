"""How far the fast (OpenCV) view paths are from DINOv2's PIL pipeline, on real tissue patches.

Measures, on 224-px tissue patches of a real slide (Phikon-v2 recipe: Otsu,
>= 60 % tissue, 0.5 µm/px):

* crop resize: ``RandomResizedCrop(resize="opencv")`` vs ``resize="pil"``
  (which is torchvision's ``resized_crop`` on PIL images, proven in
  ``tests/views/test_crops.py``), same boxes: grey-level differences and time;
* hue: our ``ColorJitter`` hue op vs torchvision's PIL ``adjust_hue``
  (``torchvision/transforms/_functional_pil.py``: Pillow HSV, ``np_h +=
  np.uint8(hue_factor * 255)``, back to RGB), same factors drawn from DINOv2's
  ``U(-0.1, 0.1)``: share of values that differ and the largest difference.

Usage::

    python benchmarks/views_vs_pil.py ../shared/data/CMU-1-Small-Region.svs --patches 32

Absolute times are noisy on a shared machine; the ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
from PIL import Image

from wsistream.recipes import build_pipeline
from wsistream.transforms import ColorJitter
from wsistream.transforms.color import ColorJitterParams
from wsistream.views import RandomResizedCrop


def _torchvision_pil_hue(image: np.ndarray, hue_factor: float) -> np.ndarray:
    h, s, v = Image.fromarray(image).convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    with np.errstate(over="ignore"):
        np_h += np.array(hue_factor * 255).astype(np.int64).astype(np.uint8)  # np.uint8(x) of a negative x wraps
    return np.asarray(Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB"))


def _stats(diffs: list[np.ndarray]) -> dict[str, float]:
    d = np.concatenate([x.ravel() for x in diffs])
    return {
        "mean_abs": round(float(d.mean()), 3),
        "p99": float(np.percentile(d, 99)),
        "max": int(d.max()),
        "share_differing": round(float((d > 0).mean()), 4),
    }


def measure(slide: str, n_patches: int, seed: int = 0) -> dict[str, object]:
    """Differences and timings; see the module docstring."""
    patches = [r.image for r in itertools.islice(iter(build_pipeline("phikon-v2", [slide], seed=seed)), n_patches)]
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"slide": slide, "patches": len(patches)}
    for name, size, scale in (("global_224", 224, (0.32, 1.0)), ("local_96", 96, (0.05, 0.32))):
        fast = RandomResizedCrop(size, scale=scale, resize="opencv")
        exact = RandomResizedCrop(size, scale=scale, resize="pil")
        boxes = [(p, fast.sample_box(rng, 224, 224)) for p in patches for _ in range(8)]
        t0 = time.perf_counter()
        a = [fast.apply(p, b) for p, b in boxes]
        t1 = time.perf_counter()
        b_ = [exact.apply(p, b) for p, b in boxes]
        t2 = time.perf_counter()
        stats = _stats([np.abs(x.astype(np.int16) - y) for x, y in zip(a, b_, strict=True)])
        stats["opencv_us_per_crop"] = round((t1 - t0) / len(boxes) * 1e6, 1)
        stats["pil_us_per_crop"] = round((t2 - t1) / len(boxes) * 1e6, 1)
        out[f"resize_{name}"] = stats
    jitter = ColorJitter(hue=0.1, p=1.0)
    diffs = []
    for p in patches:
        for _ in range(4):
            f = float(rng.uniform(-0.1, 0.1))
            ours = jitter.apply(p, ColorJitterParams((3, 0, 1, 2), None, None, None, f))
            diffs.append(np.abs(ours.astype(np.int16) - _torchvision_pil_hue(p, f)))
    out["hue_vs_torchvision_pil"] = _stats(diffs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide")
    ap.add_argument("--patches", type=int, default=32)
    args = ap.parse_args()
    print(json.dumps(measure(args.slide, args.patches), indent=1))


if __name__ == "__main__":
    main()
