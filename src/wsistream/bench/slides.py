"""The benchmark's slides, written once by our synthetic writer and cached on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchSlides:
    """Paths of the benchmark cohort."""

    slide_40x: str
    slide_20x: str
    pool_20x: list[str]


def default_cache_dir() -> Path:
    """``$WSISTREAM_BENCH_CACHE`` or ``~/.cache/wsistream/bench``."""
    return Path(os.environ.get("WSISTREAM_BENCH_CACHE", Path.home() / ".cache" / "wsistream" / "bench"))


def bench_slides(cache_dir: Path | None = None, *, quick: bool = False) -> BenchSlides:
    """Write (or reuse) the slides the issue specifies.

    A 40x Aperio-style slide (0.252 µm/px, levels 1/4/16, no 2x level; 40000×30000),
    a 20x slide (0.5 µm/px; 20000×15000) and a pool of 8 distinct 8000×8000 20x slides.
    ``quick`` writes smaller slides (for tests of the benchmark itself).
    """
    from wsistream.synthetic import write_synthetic_cohort

    root = Path(cache_dir or default_cache_dir())
    root.mkdir(parents=True, exist_ok=True)
    big = (8000, 6000) if quick else (40000, 30000)
    mid = (4000, 3000) if quick else (20000, 15000)
    (s40,) = write_synthetic_cohort(
        root, 1, width=big[0], height=big[1], mpp=0.252, app_mag=40, downsamples=(1, 4, 16), seed=40
    )
    (s20,) = write_synthetic_cohort(
        root, 1, width=mid[0], height=mid[1], mpp=0.5, app_mag=20, downsamples=(1, 4, 16), seed=20
    )
    return BenchSlides(str(s40), str(s20), pool_20x_slides(root, quick=quick))


def pool_20x_slides(cache_dir: Path | None = None, *, quick: bool = False) -> list[str]:
    """Only the pool of 8 distinct 8000×8000 20x slides (2000×2000 with ``quick``) of :func:`bench_slides`."""
    from wsistream.synthetic import write_synthetic_cohort

    root = Path(cache_dir or default_cache_dir())
    root.mkdir(parents=True, exist_ok=True)
    side = 2000 if quick else 8000
    paths = write_synthetic_cohort(
        root, 8, width=side, height=side, mpp=0.5, app_mag=20, downsamples=(1, 4, 16), seed=8
    )
    return [str(p) for p in paths]
