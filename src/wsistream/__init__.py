"""wsistream: stream exact-resolution patches and SSL views from whole-slide images.

Data flows one way, one package per stage::

    backends  → tissue → sampling → pipeline (read, resample) → views/transforms → torch (batches)

and the downstream workflow works on tile features: ``features`` (encode tiles),
``mil`` / ``eval`` (slide-level benchmark), ``slide_ssl`` (slide-encoder pretraining).
Heavy stages (torch, transformers) are imported lazily; ``import wsistream`` is cheap.
"""

from wsistream.backends import OpenSlideBackend, SlideBackend, SlideHandle, TiffSlideBackend
from wsistream.errors import (
    MissingMppError,
    NoTissueError,
    NoUsableSlidesError,
    ResolutionUnavailableError,
    SamplingExhaustedError,
    SlideNotFoundError,
    SlideOpenError,
    SlideTooSmallError,
    TileDecodeError,
    WsiStreamError,
)
from wsistream.pipeline import DatasetAdapter, MppPolicy, PatchFilter, PatchPipeline, TCGAAdapter
from wsistream.recipes import build_pipeline, get_recipe, list_recipes
from wsistream.registry import MissingDependencyError
from wsistream.sampling import (
    ContinuousMagnificationSampler,
    GridSampler,
    MultiMagnificationSampler,
    RandomSampler,
    plan_read,
)
from wsistream.tissue import (
    CLAMTissueDetector,
    CombinedTissueDetector,
    HSVTissueDetector,
    OtsuTissueDetector,
    TissueMask,
)
from wsistream.types import FailureRecord, PatchCoordinate, PatchResult, SlideMetadata, SlideProperties
from wsistream.views import RandomResizedCrop, ViewConfig, dinov2_multicrop

__version__ = "0.2.0.dev0"

__all__ = [  # noqa: RUF022 - grouped by pipeline stage, in data-flow order
    # backends
    "OpenSlideBackend",
    "SlideBackend",
    "SlideHandle",
    "TiffSlideBackend",
    # tissue
    "CLAMTissueDetector",
    "CombinedTissueDetector",
    "HSVTissueDetector",
    "OtsuTissueDetector",
    "TissueMask",
    # sampling
    "ContinuousMagnificationSampler",
    "GridSampler",
    "MultiMagnificationSampler",
    "RandomSampler",
    "plan_read",
    # pipeline
    "DatasetAdapter",
    "MppPolicy",
    "PatchFilter",
    "PatchPipeline",
    "TCGAAdapter",
    # views
    "RandomResizedCrop",
    "ViewConfig",
    "dinov2_multicrop",
    # recipes
    "build_pipeline",
    "get_recipe",
    "list_recipes",
    # values
    "FailureRecord",
    "PatchCoordinate",
    "PatchResult",
    "SlideMetadata",
    "SlideProperties",
    # errors
    "MissingDependencyError",
    "MissingMppError",
    "NoTissueError",
    "NoUsableSlidesError",
    "ResolutionUnavailableError",
    "SamplingExhaustedError",
    "SlideNotFoundError",
    "SlideOpenError",
    "SlideTooSmallError",
    "TileDecodeError",
    "WsiStreamError",
]
