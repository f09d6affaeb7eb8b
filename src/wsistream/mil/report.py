"""Write a nested-CV result as JSON, CSV and a one-page PNG.

Files written into ``out_dir``:

* ``cv_results.json`` - summary (mean, std; with repeats also per-repeat
  means and their mean ± std), the protocol (name, tile sampling,
  description, deviations), configuration, exclusions, notices, and per
  fold: repeat, split seed, selected hyper-parameters, inner grid, test
  metric per refit epoch, test slide ids, labels and scores;
* ``cv_folds.csv`` - one row per outer fold of each repeat;
* ``cv_predictions.csv`` - one row per test slide and repeat (repeat, fold,
  slide, patient, label, scores);
* ``cv_report.png`` - per-fold test metric with the mean ± std, and ROC
  curves (classification) or Kaplan-Meier curves of the predicted high- vs
  low-risk halves (survival).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsistream.mil.cv_results import CVResult
from wsistream.mil.protocols import get_protocol


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def result_to_dict(result: CVResult) -> dict[str, Any]:
    """JSON-ready dictionary of ``result``."""
    protocol = get_protocol(result.config["protocol"])
    out: dict[str, Any] = _jsonable(
        {
            "task": result.task,
            "model": result.model,
            "metric": result.metric_name,
            "mean": result.mean,
            "std": result.std,
            "n_slides": result.n_slides,
            "n_patients": result.n_patients,
            "repeats": {
                "split_seeds": result.config["split_seeds"],
                "means": result.repeat_means,
                "mean_of_means": float(np.mean(result.repeat_means)),
                "std_of_means": float(np.std(result.repeat_means)),
            },
            "protocol": {
                "name": protocol.name,
                "tile_sampling": result.config["tile_sampling"],
                "description": protocol.description,
                "deviations": result.config["deviations"],
            },
            "class_names": list(result.class_names),
            "config": result.config,
            "exclusions": [{"slide_id": e.slide_id, "reason": e.reason} for e in result.exclusions],
            "notices": [{"slide_id": n.slide_id, "message": n.message} for n in result.notices],
            "folds": [
                {
                    "repeat": f.repeat,
                    "split_seed": f.split_seed,
                    "fold": f.fold,
                    "metric": f.metric,
                    "train_metric": f.train_metric,
                    "learning_rate": f.learning_rate,
                    "weight_decay": f.weight_decay,
                    "epochs": f.epochs,
                    "inner_metric": f.inner_metric,
                    "n_train": f.n_train,
                    "n_test": len(f.test_slide_ids),
                    "grid": list(f.grid),
                    "test_metric_per_epoch": list(f.test_metric_per_epoch),
                    "test_slide_ids": list(f.test_slide_ids),
                    "test_labels": f.test_labels,
                    "test_scores": f.test_scores,
                }
                for f in result.folds
            ],
        }
    )
    return out


def _fold_label(result: CVResult, f: Any) -> str:
    return f"{f.fold}" if result.n_repeats == 1 else f"{f.repeat}.{f.fold}"


def _plot_metric(ax: Any, result: CVResult) -> None:
    ks = list(range(1, len(result.folds) + 1))
    ax.bar(ks, result.metrics, color=["#4c72b0" if f.repeat % 2 else "#55a868" for f in result.folds])
    ax.axhline(result.mean, color="k", lw=1.5, label=f"mean {result.mean:.3f} ± {result.std:.3f}")
    ax.axhspan(result.mean - result.std, result.mean + result.std, color="k", alpha=0.1)
    ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance (0.5)")
    for k, v in zip(ks, result.metrics, strict=True):
        ax.text(k, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="outer fold" if result.n_repeats == 1 else "repeat.fold", ylabel=f"test {result.metric_name}")
    ax.set(ylim=(0, 1.08), xticks=ks, xticklabels=[_fold_label(result, f) for f in result.folds])
    ax.set_title(f"{result.model} - {result.task}: test {result.metric_name} per fold")
    ax.legend(loc="lower right", fontsize=8)


def _plot_roc(ax: Any, result: CVResult) -> None:
    from sklearn.metrics import roc_curve

    if result.task == "binary":
        for f in result.folds:
            fpr, tpr, _ = roc_curve(f.test_labels, f.test_scores.reshape(-1))
            ax.plot(fpr, tpr, lw=1.2, label=f"fold {_fold_label(result, f)} (AUC {f.metric:.2f})")
        ax.set_title("ROC per outer fold (test sets)")
    else:
        labels = np.concatenate([f.test_labels for f in result.folds])
        scores = np.concatenate([f.test_scores for f in result.folds])
        for c, name in enumerate(result.class_names):
            if 0 < (labels == c).sum() < len(labels):
                fpr, tpr, _ = roc_curve(labels == c, scores[:, c])
                ax.plot(fpr, tpr, lw=1.2, label=f"{name} vs rest")
        ax.set_title("one-vs-rest ROC, test sets of all folds pooled")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
    ax.legend(loc="lower right", fontsize=8)


def _plot_km(ax: Any, result: CVResult) -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    times, events, high = [], [], []
    for f in result.folds:  # split each fold at its own median risk
        risk = f.test_scores.reshape(-1)
        times.append(np.abs(f.test_labels))
        events.append(f.test_labels > 0)
        high.append(risk > np.median(risk))
    t, e, h = np.concatenate(times), np.concatenate(events), np.concatenate(high)
    for mask, label, color in ((~h, "predicted low risk", "#4c72b0"), (h, "predicted high risk", "#c44e52")):
        if mask.any():
            KaplanMeierFitter().fit(t[mask], e[mask], label=f"{label} (n={int(mask.sum())})").plot_survival_function(
                ax=ax, color=color, ci_show=True
            )
    title = "Kaplan-Meier, test sets pooled, split at each fold's median risk"
    if h.any() and (~h).any():
        p = logrank_test(t[h], t[~h], e[h], e[~h]).p_value
        title += f"\nlog-rank p = {p:.3g}"
    ax.set_title(title, fontsize=10)
    ax.set(xlabel="time", ylabel="survival probability", ylim=(0, 1.02))


def plot_result(result: CVResult, path: str | os.PathLike[str]) -> Path:
    """Draw the two-panel report PNG to ``path``."""
    from matplotlib.figure import Figure  # no pyplot: works headless, whatever the backend

    fig = Figure(figsize=(12, 5))
    axes = fig.subplots(1, 2)
    _plot_metric(axes[0], result)
    if result.task == "survival":
        _plot_km(axes[1], result)
    else:
        _plot_roc(axes[1], result)
    fig.suptitle(result.summary(), fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out


def write_report(result: CVResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``cv_results.json``, ``cv_folds.csv``, ``cv_predictions.csv`` and ``cv_report.png``."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "cv_results.json",
        "folds_csv": out / "cv_folds.csv",
        "predictions_csv": out / "cv_predictions.csv",
        "png": out / "cv_report.png",
    }
    paths["json"].write_text(json.dumps(result_to_dict(result), indent=2))
    rows = [
        {
            "repeat": f.repeat,
            "split_seed": f.split_seed,
            "fold": f.fold,
            result.metric_name: f.metric,
            f"train_{result.metric_name}": f.train_metric,
            "learning_rate": f.learning_rate,
            "weight_decay": f.weight_decay,
            "epochs": f.epochs,
            f"inner_{result.metric_name}": f.inner_metric,
            "n_train": f.n_train,
            "n_test": len(f.test_slide_ids),
        }
        for f in result.folds
    ]
    pd.DataFrame(rows).to_csv(paths["folds_csv"], index=False)
    preds = []
    for f in result.folds:
        for i, sid in enumerate(f.test_slide_ids):
            row: dict[str, Any] = {"repeat": f.repeat, "fold": f.fold, "slide_id": sid}
            row["patient_id"] = f.test_patient_ids[i]
            row["label"] = f.test_labels[i]
            for c in range(f.test_scores.shape[1]):
                row[f"score_{c}"] = f.test_scores[i, c]
            preds.append(row)
    pd.DataFrame(preds).to_csv(paths["predictions_csv"], index=False)
    plot_result(result, paths["png"])
    return paths
