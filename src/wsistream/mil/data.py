"""Slide cohorts for the MIL benchmark: feature files + a labels CSV.

The reference (``rl_benchmarks/datasets/__init__.py``,
``SlideClassificationDataset``) merges feature paths with clinical labels and
silently drops slides without features (``dropna``). Here every slide that is
labelled but has no features, or has features but no label, is kept as an
:class:`Exclusion` with its reason and reported; unusable data (NaN features,
mixed feature dimensions, empty slides, bad labels) raises a
:class:`CohortError` naming the slide.

Labels CSV columns (names configurable):

* ``slide_id`` - matches the feature folder name (``{slide_id}/features.npy``)
  or the ``.h5`` stem; a slide extension on the feature side (``.svs``,
  ``.tif``, ...) is also accepted, as TCGA feature folders carry it.
* ``patient_id`` - grouping key for the patient-level splits.
* ``label`` - class (binary / multiclass), or for survival the reference's
  signed time (``+t`` = event at t, ``-t`` = censored at t); alternatively
  survival can use a time column and an event column.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wsistream.errors import WsiStreamError
from wsistream.features.formats import SlideFeatures, read_features

Task = Literal["binary", "multiclass", "survival"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "survival")
_SLIDE_EXTS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".bif", ".isyntax", ".czi")


class CohortError(WsiStreamError):
    """A slide or its label cannot be used; the message names the slide and the reason."""


class FoldError(WsiStreamError):
    """A cross-validation split cannot be made or evaluated (too few patients, a single-class fold)."""


@dataclass(frozen=True)
class Exclusion:
    """A slide left out of the cohort, with the reason."""

    slide_id: str
    reason: str


@dataclass(frozen=True, eq=False)
class SlideCohort:
    """Labelled slides ready for cross-validation.

    Attributes
    ----------
    task : str
        ``binary``, ``multiclass`` or ``survival``.
    slide_ids, patient_ids : tuple of str
        One entry per slide.
    labels : np.ndarray
        Class indices (int64) or signed survival times (float64, ``+t`` event,
        ``-t`` censored; reference ``tcga.py``).
    features : tuple of np.ndarray
        Per slide (N_i, 3 + d) float32 ``[tile_level, x, y, f...]``.
    class_names : tuple of str
        Original label values in class-index order (empty for survival).
    exclusions : tuple of Exclusion
        Slides left out, with reasons.
    """

    task: str
    slide_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    labels: np.ndarray
    features: tuple[np.ndarray, ...]
    class_names: tuple[str, ...] = ()
    exclusions: tuple[Exclusion, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: pass one of {TASKS}")
        n = len(self.slide_ids)
        if not (len(self.patient_ids) == len(self.labels) == len(self.features) == n):
            raise ValueError("slide_ids, patient_ids, labels and features must have one entry per slide")
        if n == 0:
            raise CohortError(None, "no slide has both features and a label; see the exclusions")

    @property
    def n_slides(self) -> int:
        """Number of slides."""
        return len(self.slide_ids)

    @property
    def n_patients(self) -> int:
        """Number of distinct patients."""
        return len(set(self.patient_ids))

    @property
    def dim(self) -> int:
        """Tile feature dimension d."""
        return int(self.features[0].shape[1] - 3)

    @property
    def n_outputs(self) -> int:
        """Model outputs: 1 for binary and survival (reference), C for multiclass."""
        return len(self.class_names) if self.task == "multiclass" else 1

    def strata(self) -> np.ndarray:
        """Stratification labels: the class, or the event indicator for survival (reference)."""
        if self.task == "survival":
            return (self.labels > 0).astype(np.int64)
        return self.labels.astype(np.int64)


def _strip_ext(name: str) -> str:
    low = name.lower()
    for ext in _SLIDE_EXTS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def discover_features(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Map slide id -> feature file for ``**/features.npy`` (id = folder) and ``**/*.h5`` (id = stem)."""
    base = Path(root)
    if not base.is_dir():
        raise CohortError(str(base), "feature directory not found; pass the folder holding the slide features")
    found: dict[str, Path] = {}
    paths = sorted([*base.rglob("features.npy"), *base.rglob("*.h5")])
    for p in paths:
        sid = p.parent.name if p.name == "features.npy" else p.stem
        if sid in found:
            raise CohortError(sid, f"two feature files for one slide: {found[sid]} and {p}; keep one")
        found[sid] = p
    return found


def _check_slide(sid: str, arr: np.ndarray) -> None:
    if arr.shape[0] == 0:
        raise CohortError(sid, "feature file holds no tiles; re-extract the slide or drop it from the labels")
    bad = ~np.isfinite(arr[:, 3:]).all(axis=1)
    if bad.any():
        raise CohortError(
            sid, f"features contain NaN/Inf in {int(bad.sum())} of {arr.shape[0]} tiles; re-extract the slide"
        )


def _check_dims(ids: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
    dims = Counter(int(a.shape[1] - 3) for a in arrays)
    if len(dims) <= 1:
        return
    main, count = dims.most_common(1)[0]
    odd = [(s, a.shape[1] - 3) for s, a in zip(ids, arrays, strict=True) if a.shape[1] - 3 != main]
    listed = ", ".join(f"{s} (d={d})" for s, d in odd[:10])
    raise CohortError(
        odd[0][0],
        f"feature dimension differs across slides: {count} slides have d={main} but {len(odd)} do not: "
        f"{listed}; use features from a single encoder",
    )


def _encode_labels(task: str, sids: list[str], raw: list[object]) -> tuple[np.ndarray, tuple[str, ...]]:
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


def _read_label_table(
    labels_csv: str | os.PathLike[str],
    task: str,
    slide_column: str,
    patient_column: str | None,
    label_column: str,
    time_column: str | None,
    event_column: str | None,
) -> tuple[dict[str, tuple[str, object]], list[Exclusion]]:
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


def load_cohort(
    features_dir: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    task: str,
    *,
    slide_column: str = "slide_id",
    patient_column: str | None = "patient_id",
    label_column: str = "label",
    time_column: str | None = None,
    event_column: str | None = None,
) -> SlideCohort:
    """Join the feature files under ``features_dir`` with ``labels_csv``.

    Only labelled slides are read. Labelled slides without a feature file and
    feature files without a label become :class:`Exclusion` records. For
    survival, pass either a signed-time ``label_column`` (reference
    convention) or ``time_column`` + ``event_column`` (event 1 = death).

    Raises
    ------
    CohortError
        Missing columns, duplicate slides, NaN/Inf or empty features, mixed
        feature dimensions, non-positive survival times, a single class.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: pass one of {TASKS}")
    if (time_column is None) != (event_column is None):
        raise ValueError("pass both time_column and event_column, or neither (signed-time label column)")
    table, excluded = _read_label_table(
        labels_csv, task, slide_column, patient_column, label_column, time_column, event_column
    )
    files = discover_features(features_dir)
    alias = {_strip_ext(k): k for k in files if _strip_ext(k) != k}
    used: set[str] = set()
    matched: list[tuple[str, Path]] = []
    for sid in table:
        key = sid if sid in files else alias.get(sid)
        if key is None:
            excluded.append(Exclusion(sid, "labelled, but no feature file found"))
            continue
        used.add(key)
        matched.append((sid, files[key]))
    excluded.extend(Exclusion(k, "feature file has no row in the labels CSV") for k in files if k not in used)
    slides = [(sid, read_features(path)) for sid, path in matched]
    return make_cohort(slides, {sid: table[sid] for sid, _ in matched}, task, exclusions=excluded)


def make_cohort(
    slides: Sequence[tuple[str, SlideFeatures]],
    labels: dict[str, tuple[str, object]],
    task: str,
    exclusions: Sequence[Exclusion] = (),
) -> SlideCohort:
    """Build a cohort from in-memory slides and ``{slide_id: (patient_id, label)}``."""
    sids, arrays = [], []
    for sid, sf in slides:
        arr = sf.as_histossl_array()
        _check_slide(sid, arr)
        sids.append(sid)
        arrays.append(np.ascontiguousarray(arr, dtype=np.float32))
    if not sids:
        raise CohortError(None, f"no slide has both features and a label ({len(exclusions)} exclusions)")
    _check_dims(sids, arrays)
    encoded, names = _encode_labels(task, sids, [labels[s][1] for s in sids])
    return SlideCohort(
        task=task,
        slide_ids=tuple(sids),
        patient_ids=tuple(labels[s][0] for s in sids),
        labels=encoded,
        features=tuple(arrays),
        class_names=names,
        exclusions=tuple(exclusions),
    )


def sample_tiles(arr: np.ndarray, n_tiles: int | None, rng: np.random.Generator, mode: str) -> np.ndarray:
    """Pick at most ``n_tiles`` tiles of one slide.

    ``mode='random'``: a random subset in random order (drawn from ``rng``).
    ``mode='first'``: the reference's effective behaviour - ``preload_features``
    keeps the first ``n_tiles`` rows of ``features.npy`` and the dataset only
    permutes them (``rl_benchmarks/utils/features.py``, ``core.py``).
    """
    n = arr.shape[0]
    if mode == "first":
        keep = min(n, n_tiles) if n_tiles is not None else n
        return arr[rng.permutation(keep)]
    if n_tiles is None or n <= n_tiles:
        return arr[rng.permutation(n)]
    return arr[rng.choice(n, size=n_tiles, replace=False)]


def pad_batch(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad slides to the longest one: ``x`` (B, N, F) and ``mask`` (B, N, 1), True = padded.

    Reference: ``rl_benchmarks/utils/features.py`` (``pad_collate_fn``).
    """
    longest = max(a.shape[0] for a in arrays)
    x = torch.zeros(len(arrays), longest, arrays[0].shape[1])
    mask = torch.ones(len(arrays), longest, 1, dtype=torch.bool)
    for i, a in enumerate(arrays):
        x[i, : a.shape[0]] = torch.from_numpy(a)
        mask[i, : a.shape[0]] = False
    return x, mask
