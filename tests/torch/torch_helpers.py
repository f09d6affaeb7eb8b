"""Pipelines and batch digests shared by the torch tests and their subprocess scripts."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from wsistream.pipeline import PatchPipeline
from wsistream.sampling import GridSampler, RandomSampler

PATCH = 32


def write_cohort(directory: Path, n_distinct: int = 4, n_total: int = 8) -> list[str]:
    """``n_total`` small 20x slides: ``n_distinct`` written, the rest byte copies (distinct files)."""
    from wsistream.synthetic import write_synthetic_cohort

    written = write_synthetic_cohort(
        directory / "src", n_distinct, width=1500, height=1200, mpp=0.5, app_mag=20, downsamples=(1, 4)
    )
    out = []
    for i in range(n_total):
        dst = directory / f"slide-{i:02d}.svs"
        if not dst.exists():
            shutil.copyfile(written[i % n_distinct], dst)
        out.append(str(dst))
    return out


def grid_pipeline(slides, *, cycle=False, views=None, seed=0, **kw) -> PatchPipeline:
    """Every tissue tile once (shuffled), 32 px at 2 µm/px: ~30 tiles per slide, one level-1 read each."""
    kw.setdefault("pool_size", 2)
    return PatchPipeline(
        slide_paths=slides,
        sampler=GridSampler(patch_size=PATCH, target_mpp=2.0, shuffle=True),
        patches_per_slide=-1,
        cycle=cycle,
        overview_side=256,
        seed=seed,
        views=views,
        **kw,
    )


def random_pipeline(slides, *, cycle=True, views=None, seed=0, **kw) -> PatchPipeline:
    """Random 32-px patches, 6 per slide visit, endless by default."""
    kw.setdefault("pool_size", 2)
    kw.setdefault("patches_per_slide", 6)
    return PatchPipeline(
        slide_paths=slides,
        sampler=RandomSampler(patch_size=PATCH, target_mpp=2.0),
        cycle=cycle,
        overview_side=256,
        seed=seed,
        views=views,
        **kw,
    )


def small_views():
    """Two global and two local views with random crops and a flip (RNG-dependent pixels)."""
    from wsistream.views import RandomResizedCrop, ViewConfig

    return [
        ViewConfig(name="global", crop=RandomResizedCrop(size=24, scale=(0.4, 1.0)), count=2),
        ViewConfig(name="local", crop=RandomResizedCrop(size=12, scale=(0.1, 0.4)), count=2),
    ]


def digest(batch) -> str:
    """Hash of everything a batch carries: pixels, views, coordinates, provenance."""
    h = hashlib.sha1()
    for key in ("x0", "y0", "level", "read_size", "slide_index", "shard", "epoch", "index", "mpp", "tissue_fraction"):
        h.update(key.encode())
        h.update(batch[key].numpy().tobytes())
    h.update(batch["image"].contiguous().numpy().tobytes())
    for name, view in sorted({**batch.get("views", {}), **batch.get("view_plans", {})}.items()):
        h.update(name.encode())
        h.update(view.contiguous().numpy().tobytes())
    h.update("\0".join(batch["slide_path"]).encode())
    return h.hexdigest()[:16]


def tile_keys(batch) -> list[tuple[str, int, int]]:
    """(slide, x0, y0) of each patch of a batch."""
    return list(zip(batch["slide_path"], batch["x0"].tolist(), batch["y0"].tolist()))
