"""Losses and metrics of the three slide-level tasks.

Reference: ``rl_benchmarks/losses/`` (``BCEWithLogitsLoss``,
``CrossEntropyLoss``, ``CoxLoss``) and ``rl_benchmarks/metrics/``
(``compute_binary_auc``, ``compute_mean_one_vs_all_auc``, ``compute_cindex``).
AUCs come from scikit-learn and the C-index from lifelines.

Survival labels use the reference's signed time: ``+t`` is an event
(death) at time t, ``-t`` a censoring at time t. Model outputs are risks
(higher = shorter survival).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Metric used for model selection and reporting, per task.
METRIC_NAME = {"binary": "auc", "multiclass": "auc", "survival": "cindex"}


def cox_loss(risk: torch.Tensor, signed_time: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood averaged over the batch.

    Reference: ``rl_benchmarks/losses/cox_loss.py`` (``cox``): samples are
    ordered by decreasing ``|t|`` (events before censored samples at equal
    time in increasing order, then reversed), the risk set of a sample is the
    prefix up to it (``cumsum``), and the sum of ``-(r_i - log sum exp r_j)``
    over events is divided by the batch size (not the number of events).
    Ties are ordered with a stable sort here; the reference uses an unstable
    one, so its tie order is unspecified.

    Parameters
    ----------
    risk : torch.Tensor
        (B,) or (B, 1) predicted risks.
    signed_time : torch.Tensor
        (B,) or (B, 1) signed survival times; must be non-zero.
    """
    r = risk.reshape(-1).float()
    t = signed_time.reshape(-1).float()
    events_first = torch.argsort(-torch.sign(t), stable=True)
    r, t = r[events_first], t[events_first]
    by_time = torch.argsort(t.abs(), stable=True)
    r, t = r[by_time].flip(0), t[by_time].flip(0)
    event = (torch.sign(t) + 1) / 2
    log_risk_set = torch.logcumsumexp(r, dim=0)
    return -((r - log_risk_set) * event).mean()


class CoxLoss(nn.Module):
    """Module wrapper of :func:`cox_loss` (reference ``CoxLoss``, ``reduction='mean'``)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss for risks ``logits`` (B, 1) and signed times ``labels`` (B,) or (B, 1)."""
        return cox_loss(logits, labels)


class _CrossEntropy(nn.CrossEntropyLoss):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().forward(logits, labels.reshape(-1).long())


class _BCE(nn.BCEWithLogitsLoss):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.reshape(-1), labels.reshape(-1).float())


def make_criterion(task: str) -> nn.Module:
    """BCE-with-logits (binary, 1 logit), cross-entropy (multiclass) or Cox (survival)."""
    if task == "binary":
        return _BCE()
    if task == "multiclass":
        return _CrossEntropy()
    if task == "survival":
        return CoxLoss()
    raise ValueError(f"task={task!r}: pass binary, multiclass or survival")


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 ``labels`` against the logit ``scores`` (N,) or (N, 1); NaN with one class."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).reshape(-1)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64).reshape(-1)))


def mean_ovr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes present in ``labels``.

    Reference ``compute_mean_one_vs_all_auc``: class k is scored by the raw
    logit column ``scores[:, k]`` (not a softmax), and classes absent from
    ``labels`` are skipped. NaN if fewer than two classes are present.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64)
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(labels == k, scores[:, int(k)]) for k in present]))


def concordance(signed_time: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (lifelines) of predicted ``risk`` for signed survival times.

    Reference ``compute_cindex``: ``concordance_index(|t|, -risk, t > 0)``.
    NaN when no pair is comparable (e.g. no event); the reference returns 0.5.
    """
    from lifelines.utils import concordance_index

    t = np.asarray(signed_time, dtype=np.float64).reshape(-1)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    try:
        return float(concordance_index(np.abs(t), -r, (t > 0).astype(int)))
    except ZeroDivisionError:
        return float("nan")


def task_metric(task: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """Compute the selection/report metric of ``task``: AUC, mean OvR AUC or C-index."""
    if task == "binary":
        return binary_auc(labels, scores)
    if task == "multiclass":
        return mean_ovr_auc(labels, scores)
    return concordance(labels, scores)
