"""A preview a person can trust: overview, tissue mask, sampled patch boxes and the patches.

The figure is drawn from the same pipeline object that streams, so what it
shows is what the model will be fed: the mask is the pipeline's mask, the
boxes are the footprints of the first patches of the stream, and the title
states the real delivered µm/px.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsistream.pipeline import PatchPipeline
from wsistream.types import PatchResult

#: Overlay colour of the tissue mask (RGB); tests look for it.
MASK_COLOUR = (0, 200, 80)
BOX_COLOUR = (230, 20, 20)


def overlay_mask(overview: np.ndarray, mask: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Blend :data:`MASK_COLOUR` into ``overview`` where ``mask`` is True (same shape grid)."""
    import cv2

    if mask.shape != overview.shape[:2]:
        mask = cv2.resize(
            mask.astype(np.uint8), (overview.shape[1], overview.shape[0]), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
    out = overview.copy()
    colour = np.array(MASK_COLOUR, np.float32)
    out[mask] = ((1 - alpha) * out[mask] + alpha * colour).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, MASK_COLOUR, 1)
    return out


def preview_slide(
    pipeline: PatchPipeline,
    slide_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    n_patches: int = 16,
    title: str | None = None,
) -> tuple[Path, list[PatchResult]]:
    """Write a preview PNG of ``pipeline`` on one slide; returns the path and the patches shown."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slide = os.fspath(slide_path)
    single = dataclasses.replace(pipeline, slide_paths=[slide], cycle=False, pool_size=1, patches_per_slide=n_patches)
    results = list(itertools.islice(iter(single), n_patches))
    if not results:
        reason = single.failures[-1] if single.failures else "no patch"
        raise RuntimeError(f"{slide}: nothing to preview ({reason})")
    with pipeline.backend.open(slide) as handle:
        props = pipeline.mpp_policy.apply(handle.properties)
        overview, (dsx, dsy) = handle.read_overview(min(pipeline.max_overview_side, 1600))
        mask = pipeline.tissue_mask(handle, props)
    canvas = overlay_mask(overview, mask.mask)
    for r in results:
        c = r.coordinate
        x, y, s = c.x0 / dsx, c.y0 / dsy, c.level0_footprint / dsx
        cv2.rectangle(canvas, (int(x), int(y)), (int(x + s), int(y + s * dsx / dsy)), BOX_COLOUR, 2)
    tiles = _tile_rows(results)
    fig = plt.figure(figsize=(14, 7), dpi=100)
    ax0 = fig.add_axes((0.01, 0.02, 0.48, 0.88))
    ax0.imshow(canvas)
    ax0.set_axis_off()
    ax0.set_title(f"{Path(slide).name}: tissue {mask.tissue_fraction:.0%} of overview, {len(results)} patch boxes")
    ax1 = fig.add_axes((0.51, 0.02, 0.48, 0.88))
    ax1.imshow(tiles)
    ax1.set_axis_off()
    c0 = results[0].coordinate
    mpp = f"{c0.mpp:.4f} µm/px" if c0.mpp is not None else "µm/px unknown"
    ax1.set_title(f"{c0.patch_size}px patches, level {c0.level}, read {c0.read_size}px → {mpp}")
    fig.suptitle(title or "wsistream preview", fontsize=14)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out, results


def _tile_rows(results: Sequence[PatchResult], max_cols: int = 4) -> np.ndarray:
    """Patches (and their views, one row per patch when present) on a white grid."""
    import cv2

    rows = []
    size = 160
    for r in results[: 4 if results[0].views else len(results)]:
        images = [r.image, *(r.views or {}).values()]
        rows.append([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    if not results[0].views:
        flat = [row[0] for row in rows]
        rows = [flat[i : i + max_cols] for i in range(0, len(flat), max_cols)]
    cols = max(len(row) for row in rows)
    pad = 4
    grid = np.full((len(rows) * (size + pad), cols * (size + pad), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid[i * (size + pad) : i * (size + pad) + size, j * (size + pad) : j * (size + pad) + size] = im
    return grid
