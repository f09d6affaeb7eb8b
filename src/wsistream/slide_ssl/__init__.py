"""Slide-level self-supervised pretraining on tile-embedding sequences (DINO / DINOv2, LongNet encoder).

Public names are imported lazily (torch loads on first use), so ``import wsistream.slide_ssl`` and mounting
the CLI stay cheap. See ``docs/slide_ssl.md``.
"""

from __future__ import annotations

from wsistream._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # configuration
    "EncoderConfig": "config",
    "CropConfig": "config",
    "ObjectiveConfig": "config",
    "OptimConfig": "config",
    "PretrainConfig": "config",
    "METHODS": "config",
    "method_preset": "presets",
    "segment_lengths_for": "config",
    # encoder
    "dilated_attention": "attention",
    "DilatedSelfAttention": "attention",
    "SlideEncoder": "encoder",
    "EncoderOutput": "encoder",
    "sincos_2d": "encoder",
    "reference_sincos_2d": "encoder",
    "load_gigapath_slide_encoder": "gigapath",
    "GIGAPATH_SEGMENT_LENGTHS": "gigapath",
    # data and crops
    "SlideTokenCohort": "data",
    "SlideTokens": "data",
    "SkipRecord": "data",
    "tile_grid": "data",
    "read_slide_ids": "data",
    "slide_key": "data",
    "TileCrop": "crops",
    "TileCropBox": "crops",
    "coordinate_crop": "crops",
    "square_grid_crop": "crops",
    "multi_crop": "crops",
    "block_mask": "crops",
    "sample_view_masks": "crops",
    "ViewBatch": "batch",
    "build_view_batch": "batch",
    # objectives and training
    "DINOHead": "losses",
    "Centering": "losses",
    "dino_loss": "losses",
    "ibot_loss": "losses",
    "koleo_loss": "losses",
    "cosine_schedule": "losses",
    "SSLModel": "objective",
    "Schedules": "objective",
    "build_schedules": "objective",
    "pretrain": "train",
    "PretrainResult": "train",
    "PretrainError": "checkpoint",
    # evaluation
    "load_slide_encoder": "probe",
    "embed_slides": "probe",
    "repeated_splits": "probe",
    "kfold_splits": "probe",
    "reference_splits": "probe",
    "pretraining_overlap": "probe",
    "binary_metrics": "probe",
    "head_probe": "linear_head",
    "HeadProbeConfig": "linear_head",
    "Split": "probe",
    "linear_probe": "probe",
    "abmil_probe": "probe",
    "ProbeScores": "probe",
    # synthetic data
    "make_spatial_cohort": "synthetic",
    "make_arrangement_cohort": "synthetic",
    "SyntheticCohort": "synthetic",
}

__all__ = sorted(_EXPORTS)


#: Names that meant something else in another package (issue 19 item 6): ``wsistream.features.load_encoder``
#: loads a *tile* encoder, ``wsistream.mil.SlideCohort`` holds labelled slides, ``wsistream.views.Crop`` and
#: ``CropBox`` are pixel crops. The old names still resolve, with a DeprecationWarning.
_RENAMED = {
    "load_encoder": "load_slide_encoder",
    "SlideCohort": "SlideTokenCohort",
    "Crop": "TileCrop",
    "CropBox": "TileCropBox",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), _RENAMED)
