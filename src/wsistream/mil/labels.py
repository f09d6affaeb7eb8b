"""Labels CSV of the MIL benchmark: one row per slide, joined to the feature files by slide id.

Reference: ``rl_benchmarks/datasets/slides_classification/tcga.py`` (signed
survival time: ``+t`` event at t, ``-t`` censored at t) and
``camelyon16.py``. Rows with an empty label or patient become
:class:`~wsistream.mil.data.Exclusion` records instead of being dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsistream.mil.records import CohortError, Exclusion


def encode_labels(task: str, sids: list[str], raw: list[object]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices in sorted-value order and the class names, or signed survival times (float64)."""
    if task == "survival":
        try:
            vals = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CohortError(None, f"survival labels must be signed times (numbers): {exc}") from exc
        for sid, v in zip(sids, vals, strict=True):
            if v == 0:
                raise CohortError(sid, "survival label is 0; signed times must be non-zero (+t event, -t censored)")
        return vals, ()
    uniq = sorted(set(raw), key=lambda v: (isinstance(v, str), v))
    if len(uniq) < 2:
        raise CohortError(None, f"all labelled slides have the same label {uniq}; a {task} task needs two classes")
    if task == "binary" and len(uniq) > 2:
        raise CohortError(None, f"binary task but {len(uniq)} label values {uniq[:10]}; pass task='multiclass'")
    index = {v: i for i, v in enumerate(uniq)}
    return np.asarray([index[v] for v in raw], dtype=np.int64), tuple(str(v) for v in uniq)


def _clean_label(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, np.generic):
        return _clean_label(value.item())
    return value


def read_label_table(
    labels_csv: str | os.PathLike[str],
    task: str,
    slide_column: str,
    patient_column: str | None,
    label_column: str,
    time_column: str | None,
    event_column: str | None,
) -> tuple[dict[str, tuple[str, object]], list[Exclusion]]:
    """``{slide_id: (patient_id, label)}`` and the rows excluded for an empty label or patient cell."""
    import pandas as pd

    path = Path(labels_csv)
    if not path.is_file():
        raise CohortError(str(path), "labels CSV not found")
    df = pd.read_csv(path, dtype={slide_column: str})
    survival_cols = task == "survival" and time_column is not None
    needed = [slide_column, *([time_column, event_column] if survival_cols else [label_column])]
    if patient_column:
        needed.append(patient_column)
    missing = [c for c in needed if c and c not in df.columns]
    if missing:
        hint = " (pass patient_column=None to treat each slide as its own patient)" if patient_column in missing else ""
        raise CohortError(str(path), f"labels CSV lacks column(s) {missing}; it has {list(df.columns)}{hint}")
    dup = df[slide_column][df[slide_column].duplicated()].tolist()
    if dup:
        raise CohortError(dup[0], f"slide listed {len(dup) + 1} times in the labels CSV; keep one row per slide")
    table: dict[str, tuple[str, object]] = {}
    excluded: list[Exclusion] = []
    for row in df.to_dict("records"):
        sid = str(row[slide_column])
        if patient_column and pd.isna(row[patient_column]):
            excluded.append(Exclusion(sid, f"patient column {patient_column!r} is empty"))
            continue
        pid = str(row[patient_column]) if patient_column else sid
        if survival_cols:
            t, e = row[time_column], row[event_column]
            if pd.isna(t) or pd.isna(e):
                excluded.append(Exclusion(sid, "survival time or event is missing in the labels CSV"))
                continue
            if float(t) <= 0:
                raise CohortError(sid, f"survival time {t} must be > 0")
            label: object = float(t) if int(e) else -float(t)
        else:
            if pd.isna(row[label_column]):
                excluded.append(Exclusion(sid, f"label column {label_column!r} is empty"))
                continue
            label = _clean_label(row[label_column])
        table[sid] = (pid, label)
    return table, excluded
