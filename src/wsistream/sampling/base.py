"""The sampler interface: where to read, given a tissue mask and a read plan."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan, plan_read
from wsistream.tissue.base import TissueMask
from wsistream.tissue.containment import clam_keeps, level0_contours
from wsistream.types import SlideProperties

TissueCriterion = Literal["fraction", "four_pt", "four_pt_hard", "center"]


@dataclass(frozen=True)
class Position:
    """A patch position: level-0 top-left corner, its tissue fraction, and its read plan.

    ``plan`` is set by samplers whose resolution varies per patch (the
    magnification samplers); otherwise the slide's plan applies.
    """

    x0: int
    y0: int
    tissue_fraction: float
    plan: ReadPlan | None = None


class PatchSampler(ABC):
    """Chooses patch positions on one slide.

    Samplers hold configuration only; all randomness comes from the
    ``rng`` passed to :meth:`positions`, so one sampler object serves every
    slide, worker and epoch and pickles under ``spawn``.
    """

    #: True when :meth:`positions` ends by itself (a grid); False for endless samplers.
    finite: ClassVar[bool] = False

    patch_size: int
    level: int | None
    target_mpp: float | None
    tissue_threshold: float
    mpp_tolerance: float
    tissue_criterion: TissueCriterion = "fraction"

    def plan(self, props: SlideProperties) -> ReadPlan:
        """The read plan of this sampler on a slide (raises for unusable slides)."""
        return plan_read(
            props, self.patch_size, level=self.level, target_mpp=self.target_mpp, tolerance=self.mpp_tolerance
        )

    def validate(self) -> None:
        """Constructor checks shared by every sampler (see :func:`validate_common`)."""
        validate_common(
            self.patch_size,
            self.level,
            self.target_mpp,
            self.tissue_threshold,
            self.mpp_tolerance,
            self.tissue_criterion,
        )

    def accepts(self, mask: TissueMask, x0: float, y0: float, footprint0: float) -> tuple[bool, float]:
        """Tissue test of a level-0 box: ``(kept, tissue fraction)``.

        ``tissue_criterion="fraction"`` keeps boxes whose mask fraction is at
        least ``tissue_threshold``; the CLAM criteria reproduce CLAM's contour
        containment (:mod:`wsistream.tissue.containment`) with the footprint as
        the reference patch.
        """
        fraction = mask.fraction_in(x0, y0, footprint0, footprint0)
        if self.tissue_criterion == "fraction":
            return fraction >= self.tissue_threshold and fraction > 0, fraction
        kept = clam_keeps(level0_contours(mask), x0, y0, round(footprint0), self.tissue_criterion)
        return kept, fraction

    @property
    def window_threshold(self) -> float:
        """Minimum window fraction for a candidate (the threshold itself, or any tissue for CLAM criteria)."""
        return max(self.tissue_threshold, 1e-9) if self.tissue_criterion == "fraction" else 1e-9

    @abstractmethod
    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield positions; raise :class:`~wsistream.errors.NoTissueError` when none can qualify."""


def check_num_patches(num_patches: int) -> None:
    """``num_patches`` is a positive count or -1 (endless)."""
    if num_patches == 0 or num_patches < -1:
        raise ValueError(f"num_patches must be >= 1, or -1 for endless, got {num_patches}")


def validate_common(
    patch_size: int,
    level: int | None,
    target_mpp: float | None,
    tissue_threshold: float,
    mpp_tolerance: float = DEFAULT_MPP_TOLERANCE,
    tissue_criterion: str = "fraction",
) -> None:
    """Shared constructor checks; messages say what to pass instead."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if level is not None and target_mpp is not None:
        raise ValueError(f"pass either level={level} or target_mpp={target_mpp}, not both")
    if level is not None and level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    if target_mpp is not None and not target_mpp > 0:
        raise ValueError(f"target_mpp must be > 0 µm/px (e.g. 0.5 for 20x), got {target_mpp}")
    if not 0.0 <= tissue_threshold <= 1.0:
        raise ValueError(f"tissue_threshold is a fraction of the patch; pass a value in [0, 1], got {tissue_threshold}")
    if tissue_criterion not in ("fraction", "four_pt", "four_pt_hard", "center"):
        raise ValueError(
            f"tissue_criterion={tissue_criterion!r}; pass 'fraction' or a CLAM contour check "
            "('four_pt', 'four_pt_hard', 'center')"
        )
    if not 0.0 <= mpp_tolerance < 0.5:
        raise ValueError(f"mpp_tolerance is relative; pass a value in [0, 0.5), got {mpp_tolerance}")


def fitting_windows(mask: TissueMask, plan: ReadPlan, props: SlideProperties) -> tuple[np.ndarray, int, int]:
    """Tissue fraction of every footprint-sized window on the mask grid.

    Returns ``(fractions, cells_x, cells_y)``; ``fractions[r, c]`` is the
    fraction for the window whose top-left mask cell is (c, r).  Windows
    whose level-0 footprint would leave the slide are set to -1.
    """
    foot = plan.footprint_level0
    cells_x = max(1, round(foot / mask.downsample_x))
    cells_y = max(1, round(foot / mask.downsample_y))
    fractions = mask.window_fractions(cells_x, cells_y)
    if fractions.size:
        max_x0 = props.level0_width - foot
        max_y0 = props.level0_height - foot
        cols = np.arange(fractions.shape[1]) * mask.downsample_x
        rows = np.arange(fractions.shape[0]) * mask.downsample_y
        fractions[:, cols > max_x0] = -1.0
        fractions[rows > max_y0, :] = -1.0
    return fractions, cells_x, cells_y
