"""Slide-level benchmark: HistoSSLscaling MIL models and nested cross-validation.

Public API

* models: :class:`MeanPool`, :class:`Chowder`, :class:`ABMIL`, :class:`DSMIL`,
  :class:`TransMIL`, :class:`HIPTMIL`, :func:`build_model`, :data:`MODELS`,
  :func:`count_parameters`;
* data: :func:`load_cohort`, :func:`make_cohort`, :func:`discover_features`,
  :class:`SlideCohort`, :class:`CohortOptions`, :class:`Exclusion`,
  :class:`Notice`, :class:`CohortError`, :class:`FoldError`,
  :class:`LazyRows`, :func:`open_rows`;
* training: :class:`TrainConfig`, :func:`fit`, :func:`predict`,
  :class:`FitHistory`;
* nested CV: :class:`NestedCVConfig`, :func:`nested_cross_validation`,
  :class:`CVResult`, :class:`FoldResult`, :func:`grouped_folds`,
  :func:`make_splits`, :data:`PROTOCOLS`, :class:`Protocol`;
* objectives: :class:`CoxLoss`, :func:`cox_loss`, :func:`binary_auc`,
  :func:`mean_ovr_auc`, :func:`concordance`;
* report: :func:`write_report`, :func:`plot_result`;
* CLI: ``wsistream.mil.cli.app`` (commands ``mil-cv``, ``linear-eval``).

Names are imported on first use, so ``import wsistream.mil.cli`` (and the
CLI's ``--help``) does not load torch. Torch, scikit-learn, lifelines and
pandas come with the ``wsistream[mil]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsistream._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ABMIL": "abmil",
    "Chowder": "chowder",
    "DSMIL": "dsmil",
    "HIPTMIL": "hiptmil",
    "MeanPool": "meanpool",
    "TransMIL": "transmil",
    "NystromAttention": "nystrom",
    "MODELS": "registry",
    "build_model": "registry",
    "count_parameters": "blocks",
    "CohortError": "records",
    "Exclusion": "records",
    "FoldError": "records",
    "Notice": "records",
    "CohortOptions": "screen",
    "LazyRows": "sources",
    "open_rows": "sources",
    "PROTOCOLS": "protocols",
    "Protocol": "protocols",
    "SlideCohort": "data",
    "discover_features": "data",
    "load_cohort": "data",
    "make_cohort": "data",
    "FitHistory": "train",
    "TrainConfig": "train",
    "fit": "train",
    "predict": "train",
    "CVResult": "cv_results",
    "FoldResult": "cv_results",
    "NestedCVConfig": "cv",
    "grouped_folds": "splits",
    "make_splits": "splits",
    "nested_cross_validation": "cv",
    "CoxLoss": "objectives",
    "binary_auc": "objectives",
    "concordance": "objectives",
    "cox_loss": "objectives",
    "mean_ovr_auc": "objectives",
    "plot_result": "report",
    "write_report": "report",
}

__all__ = [
    "ABMIL",
    "DSMIL",
    "HIPTMIL",
    "MODELS",
    "PROTOCOLS",
    "CVResult",
    "Chowder",
    "CohortError",
    "CohortOptions",
    "CoxLoss",
    "Exclusion",
    "FitHistory",
    "FoldError",
    "FoldResult",
    "LazyRows",
    "MeanPool",
    "NestedCVConfig",
    "Notice",
    "NystromAttention",
    "Protocol",
    "SlideCohort",
    "TrainConfig",
    "TransMIL",
    "binary_auc",
    "build_model",
    "concordance",
    "count_parameters",
    "cox_loss",
    "discover_features",
    "fit",
    "grouped_folds",
    "load_cohort",
    "make_cohort",
    "make_splits",
    "mean_ovr_auc",
    "nested_cross_validation",
    "open_rows",
    "plot_result",
    "predict",
    "write_report",
]

if TYPE_CHECKING:
    from wsistream.mil.abmil import ABMIL
    from wsistream.mil.blocks import count_parameters
    from wsistream.mil.chowder import Chowder
    from wsistream.mil.cv import NestedCVConfig, nested_cross_validation
    from wsistream.mil.cv_results import CVResult, FoldResult
    from wsistream.mil.data import SlideCohort, discover_features, load_cohort, make_cohort
    from wsistream.mil.dsmil import DSMIL
    from wsistream.mil.hiptmil import HIPTMIL
    from wsistream.mil.meanpool import MeanPool
    from wsistream.mil.nystrom import NystromAttention
    from wsistream.mil.objectives import CoxLoss, binary_auc, concordance, cox_loss, mean_ovr_auc
    from wsistream.mil.protocols import PROTOCOLS, Protocol
    from wsistream.mil.records import CohortError, Exclusion, FoldError, Notice
    from wsistream.mil.registry import MODELS, build_model
    from wsistream.mil.report import plot_result, write_report
    from wsistream.mil.screen import CohortOptions
    from wsistream.mil.sources import LazyRows, open_rows
    from wsistream.mil.splits import grouped_folds, make_splits
    from wsistream.mil.train import FitHistory, TrainConfig, fit, predict
    from wsistream.mil.transmil import TransMIL


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
