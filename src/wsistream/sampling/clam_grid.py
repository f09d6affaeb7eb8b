"""CLAM's per-contour patch grid (the coordinates GPFM and CLAM extract).

mahmoodlab/CLAM ``WholeSlideImage.process_contour`` (GPFM's copy:
birkhoffkiki/GPFM ``Patching/wsi_core/WholeSlideImage.py``) does not lay one
grid over the slide: for **each kept tissue contour** (level-0 pixels, int32)
it starts a grid at the corner of the contour's bounding box
(``cv2.boundingRect``), steps ``step_size · int(level downsample)`` level-0
pixels, and keeps the origins that the contour check (``four_pt`` etc., see
:mod:`wsistream.tissue.containment`) accepts against *that* contour and its
holes.  With ``use_padding`` (GPFM's ``tcga.csv``, CLAM's presets) the grid
runs to the end of the bounding box, so edge patches stick out of the slide;
without it (GPFM's ``BCNB.csv``) origins stop at ``slide side - patch + 1``.
A contour whose kept origins are too few is dropped: GPFM writes a contour
only when it has more than one patch (``len(results) > 1``), current CLAM
when it has at least one (``> 0``).

Pixels of a padded patch outside the slide: both pipelines read patches with
``openslide.read_region(...).convert('RGB')``; OpenSlide returns transparent
(0, 0, 0, 0) outside the slide and PIL's RGBA→RGB conversion drops alpha, so
they are **black** (``pad_value=0``; measured on the shared slides,
``tests/sampling/test_clam_grid.py``).

Coordinates equal those written by CLAM's and GPFM's own code on every shared
slide (``tests/recipes/fixtures/clam_grid.json``, with provenance).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from wsistream.errors import NoTissueError
from wsistream.sampling.base import PatchSampler, Position
from wsistream.sampling.plan import DEFAULT_MPP_TOLERANCE, ReadPlan, plan_read
from wsistream.tissue.base import TissueMask
from wsistream.tissue.containment import ClamCriterion, clam_keeps, level0_contours
from wsistream.types import SlideProperties


@dataclass(frozen=True)
class CLAMGridSampler(PatchSampler):
    """Every patch of CLAM's per-contour grids, once, in CLAM's order or a seeded shuffle.

    Parameters
    ----------
    patch_size : int
        Patch side in level-0 pixels (CLAM's ``patch_size`` at ``patch_level=0``; GPFM: 512).
    step_size : int, optional
        Grid step in level-0 pixels. Default ``patch_size`` (GPFM's ``--step_size 512``).
    contour_fn : {"four_pt", "four_pt_hard", "center"}
        CLAM's contour check (presets: ``four_pt``).
    use_padding : bool
        Keep origins up to the end of each contour's bounding box (edge patches
        padded with ``pad_value``). CLAM/GPFM ``tcga.csv``: True; GPFM ``BCNB.csv``: False.
    min_patches_per_contour : int
        A contour with fewer kept origins contributes none. GPFM: 2
        (``len(results) > 1``); mahmoodlab/CLAM at 53e2409: 1.
    pad_value : int
        Grey level of pixels outside the slide. 0 (black), what CLAM's reads produce.
    shuffle : bool
        Yield the patches in a random order from the pipeline's generator
        (default: CLAM's order, contour by contour, x-major).

    Only ``patch_level=0`` is supported (GPFM's extraction); CLAM's grid at a
    coarser level steps by ``int(downsample)``, off the level's pixel grid.
    """

    finite: ClassVar[bool] = True
    # fixed by CLAM's level-0 extraction: fields outside __init__, repr and comparison (PatchSampler declares them)
    level: int | None = field(default=0, init=False, repr=False, compare=False)
    target_mpp: float | None = field(default=None, init=False, repr=False, compare=False)
    tissue_threshold: float = field(default=0.0, init=False, repr=False, compare=False)
    mpp_tolerance: float = field(default=DEFAULT_MPP_TOLERANCE, init=False, repr=False, compare=False)

    patch_size: int = 512
    step_size: int | None = None
    contour_fn: ClamCriterion = "four_pt"
    use_padding: bool = True
    min_patches_per_contour: int = 2
    pad_value: int = 0
    shuffle: bool = False

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1 level-0 pixel, got {self.patch_size}; GPFM uses 512")
        if self.step_size is not None and self.step_size < 1:
            raise ValueError(f"step_size must be >= 1 level-0 pixel, got {self.step_size}; omit it for patch_size")
        if self.contour_fn not in ("four_pt", "four_pt_hard", "center"):
            raise ValueError(
                f"contour_fn={self.contour_fn!r}; pass 'four_pt' (CLAM presets), 'four_pt_hard' or 'center'"
            )
        if self.min_patches_per_contour < 1:
            raise ValueError(
                f"min_patches_per_contour must be >= 1, got {self.min_patches_per_contour}; GPFM: 2, CLAM: 1"
            )
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value is a grey level; pass 0..255 (CLAM's black: 0), got {self.pad_value}")

    @property
    def tissue_criterion(self) -> ClamCriterion:  # type: ignore[override]
        """The contour check (CLAM's ``contour_fn``)."""
        return self.contour_fn

    def plan(self, props: SlideProperties) -> ReadPlan:
        """Level 0 at ``patch_size``, out-of-slide pixels ``pad_value``."""
        return dataclasses.replace(plan_read(props, self.patch_size, level=0), pad_value=self.pad_value)

    def grid(self, mask: TissueMask, props: SlideProperties) -> list[Position]:
        """CLAM's coordinates in CLAM's order: contour by contour, x-major within a contour."""
        step = self.step_size or self.patch_size
        ps = self.patch_size
        tiles: list[Position] = []
        for contour, holes in level0_contours(mask):
            cont = np.asarray(contour, np.int32).reshape(-1, 1, 2)
            start_x, start_y, w, h = cv2.boundingRect(cont)
            stop_x, stop_y = start_x + w, start_y + h
            if not self.use_padding:
                stop_x = min(stop_x, props.level0_width - ps + 1)
                stop_y = min(stop_y, props.level0_height - ps + 1)
            own = ((cont.reshape(-1, 2), holes),)
            kept = [
                Position(int(x), int(y), mask.fraction_in(x, y, ps, ps))
                for x in range(start_x, stop_x, step)
                for y in range(start_y, stop_y, step)
                if clam_keeps(own, x, y, ps, self.contour_fn)
            ]
            if len(kept) >= self.min_patches_per_contour:
                tiles += kept
        return tiles

    def positions(
        self, mask: TissueMask, plan: ReadPlan, props: SlideProperties, rng: np.random.Generator
    ) -> Iterator[Position]:
        """Yield each grid patch once."""
        tiles = self.grid(mask, props)
        if not tiles:
            raise NoTissueError(
                props.slide_path,
                f"no tissue contour yields at least {self.min_patches_per_contour} CLAM grid patches of "
                f"{self.patch_size} level-0 px",
            )
        order = rng.permutation(len(tiles)) if self.shuffle else range(len(tiles))
        for i in order:
            yield tiles[int(i)]
