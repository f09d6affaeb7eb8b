"""Tissue detection on slide overviews: masks cached once per slide."""

from wsistream.tissue.base import TissueDetector, TissueMask
from wsistream.tissue.clam import CLAM_PRESET_PADDING, CLAM_PRESETS, CLAMTissueDetector, best_level_for_downsample
from wsistream.tissue.combined import CombinedTissueDetector
from wsistream.tissue.hsv import HSVTissueDetector
from wsistream.tissue.model import ModelTissueDetector, read_at_mpp
from wsistream.tissue.otsu import OtsuTissueDetector

__all__ = [
    "CLAM_PRESETS",
    "CLAM_PRESET_PADDING",
    "CLAMTissueDetector",
    "CombinedTissueDetector",
    "HSVTissueDetector",
    "ModelTissueDetector",
    "OtsuTissueDetector",
    "TissueDetector",
    "TissueMask",
    "best_level_for_downsample",
    "read_at_mpp",
]
