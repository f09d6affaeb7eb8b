"""Where to read: exact-resolution read plans and patch position samplers."""

from wsistream.sampling.base import PatchSampler, Position, TissueCriterion
from wsistream.sampling.clam_grid import CLAMGridSampler
from wsistream.sampling.deepzoom import DeepZoomSampler
from wsistream.sampling.grid import GridSampler
from wsistream.sampling.magnification import ContinuousMagnificationSampler, MultiMagnificationSampler
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan, plan_read
from wsistream.sampling.random import RandomSampler, WindowDraw

__all__ = [
    "DEFAULT_MPP_TOLERANCE",
    "CLAMGridSampler",
    "ContinuousMagnificationSampler",
    "DeepZoomSampler",
    "GridSampler",
    "MultiMagnificationSampler",
    "PatchSampler",
    "Position",
    "RandomSampler",
    "ReadPlan",
    "TissueCriterion",
    "WindowDraw",
    "plan_read",
]
