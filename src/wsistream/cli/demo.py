"""``wsistream demo``: synthetic slides → a recipe's stream → patches/s + a preview PNG."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from wsistream.recipes import build_pipeline, get_recipe


def run_demo(out: Path, *, recipe: str = "phikon-v2", seconds: float = 5.0, views: bool = True) -> dict[str, float]:
    """Write (or reuse) demo slides, stream ``recipe`` for ``seconds``, write ``preview.png``.

    Returns the measured numbers (also printed by the CLI).
    """
    from wsistream.qc import preview_slide
    from wsistream.synthetic import write_aperio_svs, write_synthetic_cohort

    get_recipe(recipe)  # fail fast on a bad name
    slide_dir = out / "slides"
    slide_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    slides = [
        str(p)
        for p in write_synthetic_cohort(
            slide_dir, 3, width=6000, height=4500, mpp=0.5, app_mag=20, downsamples=(1, 4, 16), seed=0
        )
    ]
    forty = slide_dir / "demo-40x-levels-1-4-16.svs"
    if not forty.exists():
        write_aperio_svs(forty, width=12000, height=9000, mpp=0.252, app_mag=40, downsamples=(1, 4, 16), seed=7)
    slides.append(str(forty))
    write_s = time.perf_counter() - t0

    pipeline = build_pipeline(recipe, slides, views=views) if recipe != "phikon" else build_pipeline(recipe, slides)
    t_start = time.perf_counter()
    stream = iter(pipeline)
    first = next(stream)
    first_s = time.perf_counter() - t_start
    count, t_loop = 1, time.perf_counter()
    for _ in itertools.takewhile(lambda _: time.perf_counter() - t_loop < seconds, stream):
        count += 1
    loop_s = time.perf_counter() - t_loop
    stream.close()
    png, _ = preview_slide(
        pipeline,
        str(forty),
        out / "preview.png",
        n_patches=8,
        title=f"recipe {recipe}: what the model is fed",
    )
    return {
        "slides": len(slides),
        "write_slides_s": write_s,
        "time_to_first_patch_s": first_s,
        "patches": count,
        "patches_per_s": (count - 1) / loop_s if loop_s > 0 else 0.0,
        "failures": len(pipeline.failures),
        "first_mpp": first.coordinate.mpp or 0.0,
        "preview": str(png),  # type: ignore[dict-item]
    }
