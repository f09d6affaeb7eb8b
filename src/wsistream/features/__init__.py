"""Tile feature extraction with pretrained encoders, and the feature files it writes and reads.

Encoders (:func:`load_encoder` from a local path: ``phikon``, ``phikon-v2``,
``ibot``; or :meth:`Encoder.from_module`) encode the tissue tiles of a slide
(:class:`DeepZoomTiling`, HistoSSLscaling's grid; or :class:`GridTiling`, a
level-0 grid at exact µm/px) into HistoSSLscaling ``features.npy`` or
CLAM/TRIDENT ``.h5`` files, slide by slide (:func:`extract_slide`) or for a
whole cohort (:func:`extract_cohort`, resumable and sharded). Readers return
:class:`SlideFeatures` whatever the format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsistream._lazy import lazy_exports
from wsistream.features.errors import CheckpointKeyError, EncoderLoadError, OutputNotWritableError
from wsistream.features.formats import (
    FeatureFileError,
    SlideFeatures,
    TileFeatures,
    iter_feature_dir,
    read_features,
    read_tile_features,
    write_h5,
    write_histossl,
    write_tile_features,
)

# The file formats need only numpy (and h5py for .h5): they are imported eagerly so that readers
# (``wsistream.mil``, ``wsistream.slide_ssl``) never pull in torch or transformers through this package.
from wsistream.sampling.deepzoom_grid import DeepZoomGrid

#: Torch-dependent names, imported on first access (PEP 562).
_LAZY = {
    "ThroughputReport": "bench",
    "benchmark_throughput": "bench",
    "ClaimConfig": "claims",
    "SlideClaims": "claims",
    "cluster_rank_world": "claims",
    "CohortReport": "manifest",
    "SlideRecord": "manifest",
    "dist_rank_world": "cohort",
    "extract_cohort": "cohort",
    "read_manifest": "manifest",
    "shard": "cohort",
    "slide_output": "manifest",
    "SlideTileDataset": "dataset",
    "TileImageDataset": "dataset",
    "list_tile_images": "dataset",
    "IMAGENET_MEAN": "encoders",
    "IMAGENET_STD": "encoders",
    "Encoder": "encoders",
    "available_encoders": "encoders",
    "hf_cls_token": "encoders",
    "load_encoder": "encoders",
    "load_hf_model": "encoders",
    "normalize_tiles": "encoders",
    "register": "encoders",
    "ExtractionConfig": "extract",
    "SlideExtraction": "extract",
    "TileEncoderRunner": "extract",
    "embed_dataset": "extract",
    "extract_slide": "extract",
    "extract_tile_dataset": "extract",
    "plan_slide_tiles": "extract",
    "lanczos_thumbnail": "lanczos",
    "render_batch": "lanczos",
    "TileReader": "reader",
    "grid_batches": "reader",
    "convert_ibot_checkpoint": "ibot",
    "load_ibot_vit": "ibot",
    "read_ibot_checkpoint": "ibot",
    "DeepZoomTiling": "tiling",
    "GridTiling": "tiling",
    "TileSet": "tiling",
}

if TYPE_CHECKING:
    from wsistream.features.bench import ThroughputReport, benchmark_throughput
    from wsistream.features.claims import ClaimConfig, SlideClaims, cluster_rank_world
    from wsistream.features.cohort import dist_rank_world, extract_cohort, shard
    from wsistream.features.dataset import SlideTileDataset, TileImageDataset, list_tile_images
    from wsistream.features.encoders import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        Encoder,
        available_encoders,
        hf_cls_token,
        load_encoder,
        load_hf_model,
        normalize_tiles,
        register,
    )
    from wsistream.features.extract import (
        ExtractionConfig,
        SlideExtraction,
        TileEncoderRunner,
        embed_dataset,
        extract_slide,
        extract_tile_dataset,
        plan_slide_tiles,
    )
    from wsistream.features.ibot import convert_ibot_checkpoint, load_ibot_vit, read_ibot_checkpoint
    from wsistream.features.lanczos import lanczos_thumbnail, render_batch
    from wsistream.features.manifest import CohortReport, SlideRecord, read_manifest, slide_output
    from wsistream.features.reader import TileReader, grid_batches
    from wsistream.features.tiling import DeepZoomTiling, GridTiling, TileSet


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointKeyError",
    "ClaimConfig",
    "CohortReport",
    "DeepZoomGrid",
    "DeepZoomTiling",
    "Encoder",
    "EncoderLoadError",
    "ExtractionConfig",
    "FeatureFileError",
    "GridTiling",
    "OutputNotWritableError",
    "SlideClaims",
    "SlideExtraction",
    "SlideFeatures",
    "SlideRecord",
    "SlideTileDataset",
    "ThroughputReport",
    "TileEncoderRunner",
    "TileFeatures",
    "TileImageDataset",
    "TileReader",
    "TileSet",
    "available_encoders",
    "benchmark_throughput",
    "cluster_rank_world",
    "convert_ibot_checkpoint",
    "dist_rank_world",
    "embed_dataset",
    "extract_cohort",
    "extract_slide",
    "extract_tile_dataset",
    "grid_batches",
    "hf_cls_token",
    "iter_feature_dir",
    "lanczos_thumbnail",
    "list_tile_images",
    "load_encoder",
    "load_hf_model",
    "load_ibot_vit",
    "normalize_tiles",
    "plan_slide_tiles",
    "read_features",
    "read_ibot_checkpoint",
    "read_manifest",
    "read_tile_features",
    "register",
    "render_batch",
    "shard",
    "slide_output",
    "write_h5",
    "write_histossl",
    "write_tile_features",
]
