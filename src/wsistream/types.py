"""Frozen value types that flow between the pipeline stages.

Coordinate frames are part of the names: ``x0``/``y0`` are level-0 pixels,
``read_size`` is in pixels of ``level``, ``patch_size`` is output pixels and
``mpp`` is the µm/px of the *output* pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

MppSource = Literal["slide", "override", "fallback", "none"]


def best_level_for_downsample(level_downsamples: tuple[float, ...], downsample: float) -> int:
    """OpenSlide's ``get_best_level_for_downsample``: the last level whose downsample is <= ``downsample``.

    One rule for CLAM's segmentation level (``tissue.clam``) and DeepZoom's preferred read level
    (``sampling.deepzoom_grid``), both of which call OpenSlide's function in the reference code.
    """
    if downsample < level_downsamples[0]:
        return 0
    for level in range(1, len(level_downsamples)):
        if downsample < level_downsamples[level]:
            return level - 1
    return len(level_downsamples) - 1


@dataclass(frozen=True)
class SlideProperties:
    """What a backend reports about an opened slide.

    Attributes
    ----------
    slide_path : str
        Path of the slide file.
    level_dimensions : tuple of (width, height)
        Size of each pyramid level in its own pixels; index 0 is full resolution.
    level_downsamples : tuple of float
        Level-0 pixels per pixel of each level.
    mpp_level0 : float or None
        µm per level-0 pixel actually used (slide metadata, or the user's
        override/fallback); ``None`` when unknown. Not the µm/px of the
        patches a pipeline returns (``PatchCoordinate.mpp``, the batch's ``mpp``).
    mpp_source : {"slide", "override", "fallback", "none"}
        Where ``mpp_level0`` came from, so a run can report slides whose resolution
        was not read from the file.
    objective_power : float or None
        Scanner objective magnification (e.g. 20, 40) when the file states it.
    vendor : str
        Format vendor as the backend names it (``"aperio"``, ``"hamamatsu"``...).
    backend : str
        Name of the backend that opened the slide.
    """

    slide_path: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp_level0: float | None
    mpp_source: MppSource
    objective_power: float | None
    vendor: str
    backend: str

    @property
    def level0_width(self) -> int:
        """Width of level 0 in pixels."""
        return self.level_dimensions[0][0]

    @property
    def level0_height(self) -> int:
        """Height of level 0 in pixels."""
        return self.level_dimensions[0][1]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    @property
    def mpp(self) -> float | None:
        """Deprecated name of :attr:`mpp_level0` (issue 19 item 6: ``mpp`` elsewhere is the output pixels')."""
        warnings.warn(
            "SlideProperties.mpp is renamed mpp_level0 (µm per level-0 pixel); the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.mpp_level0

    def mpp_at_level(self, level: int) -> float | None:
        """µm/px of pyramid ``level`` (``None`` when the slide's µm/px is unknown)."""
        return None if self.mpp_level0 is None else self.mpp_level0 * self.level_downsamples[level]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for logs, manifests and the validate report)."""
        return asdict(self)


@dataclass(frozen=True)
class SlideMetadata:
    """Dataset-level facts about a slide (from a ``DatasetAdapter``) plus its properties."""

    slide_path: str
    properties: SlideProperties
    dataset_name: str = "unknown"
    patient_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mpp_source(self) -> MppSource:
        """Where the slide's level-0 µm/px came from."""
        return self.properties.mpp_source


@dataclass(frozen=True)
class PatchCoordinate:
    """Where a patch came from: enough to re-read exactly the same pixels.

    Attributes
    ----------
    x0, y0 : int
        Top-left corner in level-0 pixels.
    level : int
        Pyramid level the pixels were read from.
    read_size : int
        Side of the square region read, in pixels of ``level``.
    patch_size : int
        Side of the delivered patch (``read_size`` area-resampled to it).
    mpp : float or None
        µm per *delivered* pixel: ``mpp(level) * read_size / patch_size``.
    slide_path : str
        The slide file.
    level_downsample : float
        Level-0 pixels per pixel of ``level``.
    """

    x0: int
    y0: int
    level: int
    read_size: int
    patch_size: int
    mpp: float | None
    slide_path: str
    level_downsample: float = 1.0

    @property
    def x(self) -> int:
        """Alias of ``x0`` (level-0 pixels), for code written against the 0.1 API."""
        return self.x0

    @property
    def y(self) -> int:
        """Alias of ``y0`` (level-0 pixels)."""
        return self.y0

    @property
    def footprint_level0(self) -> float:
        """Side of the patch footprint in level-0 pixels (the name ``PatchPlan`` uses too)."""
        return self.read_size * self.level_downsample

    @property
    def level0_footprint(self) -> float:
        """Deprecated name of :attr:`footprint_level0` (issue 19 item 6: one name for one quantity)."""
        warnings.warn(
            "PatchCoordinate.level0_footprint is renamed footprint_level0; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.footprint_level0


@dataclass(frozen=True)
class PatchResult:
    """One streamed patch.

    ``image`` is always the primary uint8 patch (H×W×3); ``views`` holds the
    named SSL views (``global_0`` …) when the pipeline was built with views;
    with ``view_rendering="device"`` ``views`` is ``None`` and ``view_plans``
    holds each view copy's drawn parameters instead
    (:func:`wsistream.views.plan_views`).
    """

    image: np.ndarray
    coordinate: PatchCoordinate
    tissue_fraction: float
    slide_metadata: SlideMetadata
    views: dict[str, np.ndarray] | None = None
    view_plans: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class FailureRecord:
    """A slide (or one read of it) that failed, with where and why.

    ``stage`` is one of ``open``, ``plan``, ``tissue``, ``sample``, ``read``;
    ``error_type`` is the exception class name; ``retired`` tells whether the
    slide was taken out of the stream (False for one undecodable region of an
    otherwise readable slide).
    """

    slide_path: str
    stage: str
    error_type: str
    message: str
    time: float = 0.0
    retired: bool = True

    def __str__(self) -> str:
        return f"{self.slide_path} [{self.stage}] {self.error_type}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (one line of a failure log)."""
        return asdict(self)
