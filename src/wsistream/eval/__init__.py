"""Tile-level linear evaluation of frozen features (HistoSSLscaling protocol).

Public API: :func:`load_tile_dataset`, :func:`labels_from_class_folders`,
:class:`TileDataset`, :class:`LinearEvalConfig`, :func:`linear_evaluation`,
:class:`LinearEvalResult`, :func:`bootstrap_ci`, :func:`write_linear_report`;
presets: :data:`PRESETS`, :class:`TilePreset`, :func:`camelyon17_wilds_datasets`,
:func:`wilds_center_labels`.
"""

from wsistream.eval.linear import (
    PAPER_FRACTIONS,
    LinearEvalConfig,
    LinearEvalResult,
    bootstrap_ci,
    linear_evaluation,
)
from wsistream.eval.presets import PRESETS, TilePreset, camelyon17_wilds_datasets, wilds_center_labels
from wsistream.eval.report import plot_linear_eval, write_linear_report
from wsistream.eval.tiles import TileDataset, TileDatasetError, labels_from_class_folders, load_tile_dataset

__all__ = [
    "PAPER_FRACTIONS",
    "PRESETS",
    "LinearEvalConfig",
    "LinearEvalResult",
    "TileDataset",
    "TileDatasetError",
    "TilePreset",
    "bootstrap_ci",
    "camelyon17_wilds_datasets",
    "labels_from_class_folders",
    "linear_evaluation",
    "load_tile_dataset",
    "plot_linear_eval",
    "wilds_center_labels",
    "write_linear_report",
]
