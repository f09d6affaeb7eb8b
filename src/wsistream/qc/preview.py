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
from typing import Any

import numpy as np

from wsistream.errors import NoUsableSlidesError
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


def _slide_panel(
    pipeline: PatchPipeline, slide: str, n_patches: int, geojson_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, list[PatchResult], float]:
    """Overview with mask and patch boxes, the first patches the pipeline streams there, tissue fraction.

    With ``geojson_dir`` the mask shown (the pipeline's own) is also written there as
    ``{slide name}.geojson``, for QuPath and for ``GeoJSONTissueDetector`` after editing.
    """
    import cv2

    # views rendered here even when the pipeline leaves them to the GPU: same draws, same pixels (render_plan)
    single = dataclasses.replace(
        pipeline, slide_paths=[slide], cycle=False, pool_size=1, patches_per_slide=n_patches, view_rendering="cpu"
    )
    try:
        results = list(itertools.islice(iter(single), n_patches))
    except NoUsableSlidesError:
        results = []
    if not results:
        reason = single.failures[-1] if single.failures else "no patch"
        raise RuntimeError(f"{slide}: nothing to preview ({reason})")
    with pipeline.backend.open(slide) as handle:
        props = pipeline.mpp_policy.apply(handle.properties)
        overview, (dsx, dsy) = handle.read_overview(min(pipeline.overview_side, 1600))
        mask = pipeline.tissue_mask(handle, props)
    if geojson_dir is not None:
        from wsistream.tissue.geojson import write_geojson

        write_geojson(mask, Path(geojson_dir) / f"{Path(slide).name}.geojson")
    canvas = overlay_mask(overview, mask.mask)
    for r in results:
        c = r.coordinate
        x, y, s = c.x0 / dsx, c.y0 / dsy, c.footprint_level0 / dsx
        cv2.rectangle(canvas, (int(x), int(y)), (int(x + s), int(y + s * dsx / dsy)), BOX_COLOUR, 2)
    return canvas, results, mask.tissue_fraction


def _resolution_label(result: PatchResult) -> str:
    c = result.coordinate
    mpp = f"{c.mpp:.4f} µm/px" if c.mpp is not None else "µm/px unknown"
    return f"{c.patch_size}px patches, level {c.level}, read {c.read_size}px → {mpp}"


def preview_slide(
    pipeline: PatchPipeline,
    slide_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    n_patches: int = 16,
    title: str | None = None,
    geojson_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, list[PatchResult]]:
    """Write a preview PNG of ``pipeline`` on one slide; returns the path and the patches shown.

    ``geojson_dir``: also write the slide's tissue mask there as GeoJSON (level-0 px).

    Raises ``RuntimeError`` naming the slide and the recorded failure when it yields no patch.
    """
    plt = _pyplot()
    slide = os.fspath(slide_path)
    canvas, results, tissue = _slide_panel(pipeline, slide, n_patches, geojson_dir)
    fig = plt.figure(figsize=(14, 7), dpi=100)
    ax0 = fig.add_axes((0.01, 0.02, 0.48, 0.88))
    ax0.imshow(canvas)
    ax0.set_axis_off()
    ax0.set_title(f"{Path(slide).name}: tissue {tissue:.0%} of overview, {len(results)} patch boxes")
    ax1 = fig.add_axes((0.51, 0.02, 0.48, 0.88))
    ax1.imshow(_tile_rows(results))
    ax1.set_axis_off()
    ax1.set_title(_resolution_label(results[0]))
    fig.suptitle(title or "wsistream preview", fontsize=14)
    out = _save(fig, out_png)
    return out, results


def preview_sheet(
    pipeline: PatchPipeline,
    slide_paths: list[str],
    out_png: str | os.PathLike[str],
    *,
    n_patches: int = 4,
    title: str | None = None,
    geojson_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, dict[str, str]]:
    """A cohort contact sheet: one row per slide (overview + mask + boxes, then its patches).

    A slide that yields no patch gets a row stating why.  Returns the PNG path
    and ``{slide: "ok" | reason}``.
    """
    plt = _pyplot()
    rows = len(slide_paths)
    fig, axes = plt.subplots(
        rows, 2, figsize=(12, 3.2 * rows), dpi=90, squeeze=False, gridspec_kw={"width_ratios": [1, 2]}
    )
    status: dict[str, str] = {}
    for (ax0, ax1), slide in zip(axes, slide_paths, strict=True):
        ax0.set_axis_off()
        ax1.set_axis_off()
        try:
            canvas, results, tissue = _slide_panel(pipeline, slide, n_patches, geojson_dir)
        except RuntimeError as exc:
            status[slide] = str(exc)
            ax0.text(0, 0.5, f"{Path(slide).name}\n{exc}"[:300], wrap=True, fontsize=8, color="darkred")
            continue
        status[slide] = "ok"
        ax0.imshow(canvas)
        ax0.set_title(f"{Path(slide).name} (tissue {tissue:.0%})", fontsize=9)
        ax1.imshow(_tile_rows(results, max_cols=n_patches))
        ax1.set_title(_resolution_label(results[0]), fontsize=9)
    fig.suptitle(title or "wsistream contact sheet", fontsize=13)
    fig.tight_layout()
    return _save(fig, out_png), status


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, out_png: str | os.PathLike[str]) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return out


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
