"""Write a linear-evaluation result as CSV, JSON and a PNG of the metrics against the training fraction."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsistream.eval.linear import LinearEvalResult


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def plot_linear_eval(result: LinearEvalResult, path: str | os.PathLike[str]) -> Path:
    """AUC, accuracy and F1 (mean over repeats, bootstrap CI of each draw) against the training fraction."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ok = [r for r in result.rows if r["status"] == "ok"]
    for metric, color in (("auc", "#4c72b0"), ("acc", "#55a868"), ("f1", "#c44e52")):
        fr = np.asarray([r["fraction"] for r in ok], dtype=float)
        val = np.asarray([r[metric] for r in ok], dtype=float)
        lo = np.asarray([r[f"{metric}_low"] for r in ok], dtype=float)
        hi = np.asarray([r[f"{metric}_high"] for r in ok], dtype=float)
        ax.scatter(fr, val, s=12, color=color, alpha=0.6)
        ax.vlines(fr, lo, hi, color=color, alpha=0.4)
        summ = [s for s in result.summary() if s["n_ok"]]
        ax.plot(
            [s["fraction"] for s in summ],
            [s[f"{metric}_mean"] for s in summ],
            "-o",
            color=color,
            label=metric,
        )
    ax.set_xscale("log")
    ax.set(xlabel="fraction of training tiles", ylabel="test metric", ylim=(0, 1.02))
    level = result.config["confidence_level"]
    ax.set_title(
        f"linear evaluation: {len(result.class_names)} classes, "
        f"{result.n_train} train / {result.n_test} test tiles\n(bars: {level:.0%} bootstrap CI of each draw)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out


def write_linear_report(
    result: LinearEvalResult, out_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``linear_eval.csv`` (one row per draw), ``linear_eval_summary.csv``, ``.json`` and ``.png``."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "linear_eval.csv",
        "summary_csv": out / "linear_eval_summary.csv",
        "json": out / "linear_eval.json",
        "png": out / "linear_eval.png",
    }
    pd.DataFrame(list(result.rows)).to_csv(paths["csv"], index=False)
    pd.DataFrame(result.summary()).to_csv(paths["summary_csv"], index=False)
    payload = {
        "class_names": list(result.class_names),
        "n_train": result.n_train,
        "n_test": result.n_test,
        "config": result.config,
        "summary": result.summary(),
        "rows": list(result.rows),
        **(extra or {}),
    }
    paths["json"].write_text(json.dumps(_clean(payload), indent=2))
    plot_linear_eval(result, paths["png"])
    return paths
