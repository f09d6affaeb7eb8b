"""Slide cohorts for the MIL benchmark: feature files + a labels CSV.

The reference (``rl_benchmarks/datasets/__init__.py``,
``SlideClassificationDataset``) merges feature paths with clinical labels and
silently drops slides without features (``dropna``). Here every slide that is
labelled but has no features, or has features but no label, is kept as an
:class:`Exclusion` with its reason and reported; unusable data (unreadable
files, NaN features, mixed feature dimensions, empty slides) is screened
before training by :mod:`wsistream.mil.screen` (refuse, or exclude and
record); bad labels raise a :class:`CohortError` naming the slide.

Slides are ordered by slide id, whatever the order of the labels CSV or of
the file listing. Their rows are held in RAM when they fit in
``CohortOptions.memory_gb`` and read from disk per batch otherwise
(:mod:`wsistream.mil.sources`).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wsistream.features.formats import FeatureFileError, SlideFeatures
from wsistream.mil.labels import encode_labels, read_label_table
from wsistream.mil.records import CohortError, Exclusion, FoldError, Notice
from wsistream.mil.screen import CohortOptions, Rows, odd_dimensions, refuse_or_exclude, screen_slide
from wsistream.mil.sources import LazyRows, open_rows
from wsistream.pipeline.paths import SLIDE_EXTENSIONS

__all__ = [
    "TASKS",
    "CohortError",
    "CohortOptions",
    "Exclusion",
    "FoldError",
    "Notice",
    "SlideCohort",
    "discover_features",
    "load_cohort",
    "make_cohort",
    "pad_batch",
    "sample_tiles",
]

Task = Literal["binary", "multiclass", "survival"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "survival")


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
    features : tuple of np.ndarray or LazyRows
        Per slide (N_i, 3 + d) float32 ``[tile_level, x, y, f...]``, in
        memory or read per access (:class:`~wsistream.mil.sources.LazyRows`).
    class_names : tuple of str
        Original label values in class-index order (empty for survival).
    exclusions : tuple of Exclusion
        Slides left out, with reasons.
    notices : tuple of Notice
        Slides kept with a caveat (fewer tiles than requested, dropped NaN tiles).
    """

    task: str
    slide_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    labels: np.ndarray
    features: tuple[Rows, ...]
    class_names: tuple[str, ...] = ()
    exclusions: tuple[Exclusion, ...] = field(default=())
    notices: tuple[Notice, ...] = field(default=())

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
    def in_memory(self) -> bool:
        """Whether every slide's rows are held in RAM (else read from disk per batch)."""
        return not any(isinstance(f, LazyRows) for f in self.features)

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
    for ext in SLIDE_EXTENSIONS:
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
    options: CohortOptions | None = None,
) -> SlideCohort:
    """Join the feature files under ``features_dir`` with ``labels_csv``.

    Only labelled slides are opened. Labelled slides without a feature file
    and feature files without a label become :class:`Exclusion` records. For
    survival, pass either a signed-time ``label_column`` (reference
    convention) or ``time_column`` + ``event_column`` (event 1 = death).
    ``options`` sets which rows are read, the bad-slide policy and the
    memory budget (:class:`~wsistream.mil.screen.CohortOptions`).

    Raises
    ------
    CohortError
        Missing columns, duplicate slides, non-positive survival times, a
        single class; bad slides under ``bad_slides="error"``.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: pass one of {TASKS}")
    if (time_column is None) != (event_column is None):
        raise ValueError("pass both time_column and event_column, or neither (signed-time label column)")
    table, excluded = read_label_table(
        labels_csv, task, slide_column, patient_column, label_column, time_column, event_column
    )
    files = discover_features(features_dir)
    alias = {_strip_ext(k): k for k in files if _strip_ext(k) != k}
    used: set[str] = set()
    matched: list[tuple[str, Path]] = []
    for sid in sorted(table):
        key = sid if sid in files else alias.get(sid)
        if key is None:
            excluded.append(Exclusion(sid, "labelled, but no feature file found"))
            continue
        used.add(key)
        matched.append((sid, files[key]))
    excluded.extend(Exclusion(k, "feature file has no row in the labels CSV") for k in files if k not in used)
    slides: list[tuple[str, Rows]] = []
    unreadable: list[tuple[str, str]] = []
    for sid, path in matched:
        try:
            slides.append((sid, open_rows(path)))
        except FeatureFileError as exc:
            unreadable.append((sid, f"cannot read {path}: {exc.reason}"))
    opts = options or CohortOptions()
    excluded.extend(refuse_or_exclude(unreadable, opts))
    return _build(slides, {sid: table[sid] for sid, _ in matched}, task, excluded, opts)


def make_cohort(
    slides: Sequence[tuple[str, SlideFeatures]],
    labels: dict[str, tuple[str, object]],
    task: str,
    exclusions: Sequence[Exclusion] = (),
    options: CohortOptions | None = None,
) -> SlideCohort:
    """Build a cohort from in-memory slides and ``{slide_id: (patient_id, label)}`` (order kept)."""
    arrays = [(sid, np.ascontiguousarray(sf.as_histossl_array(), dtype=np.float32)) for sid, sf in slides]
    return _build(arrays, labels, task, list(exclusions), options or CohortOptions())


def _build(
    slides: Sequence[tuple[str, Rows]],
    labels: dict[str, tuple[str, object]],
    task: str,
    exclusions: list[Exclusion],
    opts: CohortOptions,
) -> SlideCohort:
    """Screen ``slides`` (policy of ``opts``), encode labels, hold rows in RAM if they fit the budget."""
    kept: list[tuple[str, Rows]] = []
    bad: list[tuple[str, str]] = []
    notices: list[Notice] = []
    for sid, rows in slides:
        use, reason, notice = screen_slide(sid, rows, opts)
        if use is None:
            bad.append((sid, str(reason)))
            continue
        kept.append((sid, use))
        if notice is not None:
            notices.append(notice)
    exclusions.extend(refuse_or_exclude(bad, opts))
    odd = odd_dimensions([s for s, _ in kept], [r for _, r in kept], opts)
    exclusions.extend(refuse_or_exclude(odd, opts))
    odd_ids = {s for s, _ in odd}
    kept = [(s, r) for s, r in kept if s not in odd_ids]
    if not kept:
        raise CohortError(None, f"no slide has both usable features and a label ({len(exclusions)} exclusions)")
    if sum(r.nbytes for _, r in kept) <= opts.memory_gb * 2**30:
        kept = [(s, r.load() if isinstance(r, LazyRows) else r) for s, r in kept]
    sids = [s for s, _ in kept]
    used = set(sids)
    encoded, names = encode_labels(task, sids, [labels[s][1] for s in sids])
    return SlideCohort(
        task=task,
        slide_ids=tuple(sids),
        patient_ids=tuple(labels[s][0] for s in sids),
        labels=encoded,
        features=tuple(r for _, r in kept),
        class_names=names,
        exclusions=tuple(exclusions),
        notices=tuple(n for n in notices if n.slide_id in used),
    )


def sample_tiles(arr: Rows, n_tiles: int | None, rng: np.random.Generator, mode: str) -> np.ndarray:
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
