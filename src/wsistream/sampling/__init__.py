"""Where to read: exact-resolution read plans and patch position samplers."""

from wsistream.sampling.base import PatchSampler, Position
from wsistream.sampling.grid import GridSampler
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan, plan_read
from wsistream.sampling.random import RandomSampler

__all__ = [
    "DEFAULT_MPP_TOLERANCE",
    "GridSampler",
    "PatchSampler",
    "Position",
    "RandomSampler",
    "ReadPlan",
    "plan_read",
]
