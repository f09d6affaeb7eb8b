"""Tissue detection on slide overviews: masks cached once per slide."""

from wsistream.tissue.base import TissueDetector, TissueMask
from wsistream.tissue.clam import CLAM_PRESETS, CLAMTissueDetector
from wsistream.tissue.combined import CombinedTissueDetector
from wsistream.tissue.hsv import HSVTissueDetector
from wsistream.tissue.model import ModelTissueDetector, read_at_mpp
from wsistream.tissue.otsu import OtsuTissueDetector

__all__ = [
    "CLAM_PRESETS",
    "CLAMTissueDetector",
    "CombinedTissueDetector",
    "HSVTissueDetector",
    "ModelTissueDetector",
    "OtsuTissueDetector",
    "TissueDetector",
    "TissueMask",
    "read_at_mpp",
]
