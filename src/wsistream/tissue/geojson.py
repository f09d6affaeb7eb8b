"""Tissue masks to and from GeoJSON (QuPath, TRIDENT, LazySlide), in level-0 pixel coordinates.

Export (:func:`mask_to_geojson`): each connected tissue region of a
:class:`TissueMask` becomes a ``Polygon`` feature whose first ring is the outline
and whose further rings are its holes (GeoJSON RFC 7946 §3.1.6: exterior then
interior rings, each closed). Rings come from ``cv2.findContours(RETR_CCOMP)`` on
the mask grid and pass through the *centres* of the boundary cells, scaled to
level-0 pixels: ``x0 = (col + 0.5) · downsample_x``. Features carry QuPath's
``objectType: "annotation"`` and ``classification: {"name": "Tissue"}``, so
QuPath's *File → Import objects* opens them as tissue annotations.

Import (:class:`GeoJSONTissueDetector`): the polygons of a slide's file are
rasterised back onto the overview grid the pipeline asked for (outline filled,
holes cleared, ring cells themselves kept as tissue, the inverse of the export
convention), so an exported mask re-imports cell for cell, and an edited one
becomes the tissue mask for streaming (``PatchPipeline(tissue_detector=...)``) and
extraction (``DeepZoomTiling(tissue_detector=...)``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from wsistream.errors import WsiStreamError
from wsistream.tissue.base import TissueDetector, TissueMask

if TYPE_CHECKING:
    from wsistream.backends.base import SlideHandle
    from wsistream.types import SlideProperties

_GEOMETRIES = ("Polygon", "MultiPolygon")


class TissueAnnotationError(WsiStreamError):
    """A slide's tissue GeoJSON is missing or is not polygons in level-0 pixels."""


def mask_to_geojson(mask: TissueMask, name: str = "Tissue") -> dict[str, Any]:
    """GeoJSON ``FeatureCollection`` of the tissue regions of ``mask`` (level-0 pixels, holes as interior rings)."""
    binary = np.ascontiguousarray(mask.mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    features = []
    if hierarchy is not None:
        for i, (_, _, first_child, parent) in enumerate(hierarchy[0]):
            if parent != -1:
                continue
            rings = [contours[i]]
            child = first_child
            while child != -1:
                rings.append(contours[child])
                child = hierarchy[0][child][0]
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [_ring(r, mask) for r in rings]},
                    "properties": {"objectType": "annotation", "classification": {"name": name}},
                }
            )
    return {"type": "FeatureCollection", "features": features}


def _ring(contour: np.ndarray, mask: TissueMask) -> list[list[float]]:
    pts = contour.reshape(-1, 2).astype(np.float64) + 0.5
    pts *= (mask.downsample_x, mask.downsample_y)
    ring = [[round(float(x), 3), round(float(y), 3)] for x, y in pts]
    return [*ring, ring[0]]  # closed: first position repeated last


def write_geojson(mask: TissueMask, path: str | os.PathLike[str], name: str = "Tissue") -> Path:
    """Write :func:`mask_to_geojson` to ``path`` (atomically: temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(mask_to_geojson(mask, name)))
    os.replace(tmp, target)
    return target


def _polygons(doc: Any, source: str) -> list[list[np.ndarray]]:
    """Rings (level-0 float arrays) of every Polygon / MultiPolygon of a Feature, FeatureCollection or geometry."""
    if not isinstance(doc, dict):
        raise TissueAnnotationError(source, "GeoJSON must be an object (FeatureCollection, Feature or geometry)")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return [p for f in doc.get("features", []) for p in _polygons(f, source)]
    if kind == "Feature":
        return _polygons(doc.get("geometry") or {}, source)
    if kind == "GeometryCollection":
        return [p for g in doc.get("geometries", []) for p in _polygons(g, source)]
    if kind not in _GEOMETRIES:
        return []  # points and lines carry no area
    polys = [doc["coordinates"]] if kind == "Polygon" else doc["coordinates"]
    try:
        return [[np.asarray(ring, np.float64).reshape(-1, 2) for ring in poly] for poly in polys]
    except (ValueError, TypeError) as exc:
        raise TissueAnnotationError(source, f"a {kind} has malformed coordinates ({exc})") from exc


def geojson_to_mask(doc: Any, shape: tuple[int, int], downsample: tuple[float, float], source: str = "") -> TissueMask:
    """Rasterise GeoJSON polygons (level-0 pixels) on an (H, W) grid of ``downsample`` level-0 px per cell."""
    grid = np.zeros(shape, np.uint8)
    dsx, dsy = downsample
    for rings in _polygons(doc, source):
        cells = [np.round(r / (dsx, dsy) - 0.5).astype(np.int32).reshape(-1, 1, 2) for r in rings]
        cv2.fillPoly(grid, cells[:1], 1)
        if len(cells) > 1:
            cv2.fillPoly(grid, cells[1:], 0)
            cv2.polylines(grid, cells[1:], isClosed=True, color=1)  # ring cells are tissue (export convention)
    return TissueMask(grid.astype(bool), dsx, dsy)


@dataclass(frozen=True)
class GeoJSONTissueDetector(TissueDetector):
    """The tissue mask of each slide from its GeoJSON: ``{source}/{slide file name}.geojson`` or ``{stem}.geojson``.

    Parameters
    ----------
    source : str
        A folder of per-slide GeoJSON files, or one ``.geojson`` file (for a single slide).
    """

    source: str

    def __post_init__(self) -> None:
        if not os.path.exists(self.source):
            raise ValueError(f"GeoJSON source {self.source!r} does not exist; pass a folder of SLIDE.geojson or a file")

    def path_for(self, slide_path: str) -> Path:
        """The GeoJSON file of ``slide_path``."""
        src = Path(self.source)
        if src.is_file():
            return src
        name = Path(slide_path).name
        for candidate in (src / f"{name}.geojson", src / f"{Path(name).stem}.geojson"):
            if candidate.is_file():
                return candidate
        return src / f"{Path(name).stem}.geojson"

    def detect_slide(self, handle: SlideHandle, props: SlideProperties, max_side: int) -> TissueMask:
        """Rasterise the slide's polygons on an overview grid of longest side ``max_side``."""
        path = self.path_for(props.slide_path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise TissueAnnotationError(props.slide_path, f"no tissue GeoJSON at {path}") from None
        except (OSError, ValueError) as exc:
            raise TissueAnnotationError(props.slide_path, f"cannot read tissue GeoJSON {path} ({exc})") from exc
        # the grid of ``handle.read_overview(max_side)`` (same shape and downsample as image detectors get),
        # computed without decoding the overview
        level_w, level_h = props.level_dimensions[handle.overview_level(max_side)]
        scale = min(1.0, max_side / max(level_w, level_h))
        shape = (max(1, round(level_h * scale)), max(1, round(level_w * scale)))
        downsample = (props.level0_width / shape[1], props.level0_height / shape[0])
        return geojson_to_mask(doc, shape, downsample, source=str(path))

    def detect(self, overview: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
        """Not available: the polygons belong to a slide; the pipeline calls :meth:`detect_slide`."""
        raise TypeError("GeoJSONTissueDetector needs the slide; use detect_slide(handle, props, max_side)")
