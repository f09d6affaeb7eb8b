"""Tissue detection on slide overviews: masks cached once per slide."""

from wsistream.tissue.base import DEFAULT_OVERVIEW_SIDE, TissueDetector, TissueMask
from wsistream.tissue.clam import CLAM_PRESET_PADDING, CLAM_PRESETS, CLAMTissueDetector
from wsistream.tissue.combined import CombinedTissueDetector
from wsistream.tissue.geojson import (
    GeoJSONTissueDetector,
    TissueAnnotationError,
    geojson_to_mask,
    mask_to_geojson,
    write_geojson,
)
from wsistream.tissue.hsv import HSVTissueDetector
from wsistream.tissue.model import ModelTissueDetector, read_at_mpp
from wsistream.tissue.otsu import OtsuTissueDetector
from wsistream.types import best_level_for_downsample

__all__ = [
    "CLAM_PRESETS",
    "CLAM_PRESET_PADDING",
    "DEFAULT_OVERVIEW_SIDE",
    "CLAMTissueDetector",
    "CombinedTissueDetector",
    "GeoJSONTissueDetector",
    "HSVTissueDetector",
    "ModelTissueDetector",
    "OtsuTissueDetector",
    "TissueAnnotationError",
    "TissueDetector",
    "TissueMask",
    "best_level_for_downsample",
    "geojson_to_mask",
    "mask_to_geojson",
    "read_at_mpp",
    "write_geojson",
]
