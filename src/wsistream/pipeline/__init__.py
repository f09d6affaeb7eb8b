"""The streaming engine: a pool of slides → exact-resolution patches → views."""

from wsistream.pipeline.adapters import DatasetAdapter, PatchFilter, TCGAAdapter
from wsistream.pipeline.mpp import MppPolicy
from wsistream.pipeline.paths import SLIDE_EXTENSIONS, resolve_slide_paths
from wsistream.pipeline.pipeline import PatchPipeline
from wsistream.pipeline.stats import PipelineStats
from wsistream.pipeline.stream import PatchStream

__all__ = [
    "SLIDE_EXTENSIONS",
    "DatasetAdapter",
    "MppPolicy",
    "PatchFilter",
    "PatchPipeline",
    "PatchStream",
    "PipelineStats",
    "TCGAAdapter",
    "resolve_slide_paths",
]
