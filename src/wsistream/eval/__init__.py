"""Tile-level linear evaluation of frozen features (HistoSSLscaling protocol).

Public API: :func:`load_tile_dataset`, :func:`labels_from_class_folders`,
:class:`TileDataset`, :class:`LinearEvalConfig`, :func:`linear_evaluation`,
:class:`LinearEvalResult`, :func:`bootstrap_ci`, :func:`write_linear_report`.
"""

from wsistream.eval.linear import (
    PAPER_FRACTIONS,
    LinearEvalConfig,
    LinearEvalResult,
    bootstrap_ci,
    linear_evaluation,
)
from wsistream.eval.report import plot_linear_eval, write_linear_report
from wsistream.eval.tiles import TileDataset, TileDatasetError, labels_from_class_folders, load_tile_dataset

__all__ = [
    "PAPER_FRACTIONS",
    "LinearEvalConfig",
    "LinearEvalResult",
    "TileDataset",
    "TileDatasetError",
    "bootstrap_ci",
    "labels_from_class_folders",
    "linear_evaluation",
    "load_tile_dataset",
    "plot_linear_eval",
    "write_linear_report",
]
