"""Bad-input policy of a MIL cohort: which slides are used, which are left out, and why.

Every check runs on the rows training will read (with ``first_rows_only``,
the first ``n_tiles`` rows only, as the HistoSSLscaling reference never reads
further) and before anything is trained. A slide is *bad* when its file
cannot be read, holds no tile, has NaN/Inf tiles (unless they are dropped),
has fewer than ``min_tiles`` tiles, or has another feature dimension than
the cohort's majority. ``bad_slides="error"`` (default) refuses with one
:class:`CohortError` that lists every bad slide with its reason and says
what to pass; ``"exclude"`` leaves them out as :class:`Exclusion` records.
A slide with fewer tiles than ``n_tiles`` is used with all its tiles (the
reference's ``indices[:n_tiles]``) and reported as a :class:`Notice`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from wsistream.mil.records import CohortError, Exclusion, Notice
from wsistream.mil.sources import LazyRows

#: One slide's rows: in memory, or read on access.
Rows = np.ndarray | LazyRows
BAD_SLIDES = ("error", "exclude")
_HINT = (
    "pass bad_slides='exclude' (--bad-slides exclude) to leave such slides out (recorded), "
    "drop_nan_tiles=True (--drop-nan-tiles) to drop only NaN/Inf tiles, or re-extract the slides"
)


@dataclass(frozen=True)
class CohortOptions:
    """How slides are read and screened.

    Attributes
    ----------
    n_tiles : int or None
        Tiles a slide contributes per step; a slide with fewer gets a notice.
    first_rows_only : bool
        Keep only the first ``n_tiles`` rows of each file (the ``histossl``
        protocol, reference ``preload_features``); later rows are never read.
    bad_slides : str
        ``error`` (refuse before training) or ``exclude`` (leave out, recorded).
    drop_nan_tiles : bool
        Drop NaN/Inf tiles (noticed per slide) instead of treating the slide as bad.
    min_tiles : int
        Slides with fewer usable tiles are bad (default 1: an empty slide is bad).
    memory_gb : float
        Hold the usable rows in RAM when they fit in this many GiB (as fast
        as in-memory arrays); otherwise read each batch's rows from disk, so
        peak memory is bounded by a batch. ``0`` = always lazy, ``inf`` = always in RAM.
    """

    n_tiles: int | None = None
    first_rows_only: bool = False
    bad_slides: str = "error"
    drop_nan_tiles: bool = False
    min_tiles: int = 1
    memory_gb: float = 1.0

    def __post_init__(self) -> None:
        if self.bad_slides not in BAD_SLIDES:
            raise ValueError(f"bad_slides={self.bad_slides!r}: pass one of {BAD_SLIDES}")
        if self.min_tiles < 1:
            raise ValueError(f"min_tiles={self.min_tiles}: pass at least 1")
        if self.memory_gb < 0:
            raise ValueError(f"memory_gb={self.memory_gb}: pass a size in GiB >= 0 (0 = always read lazily)")
        if self.first_rows_only and self.n_tiles is None:
            raise ValueError("first_rows_only needs n_tiles (how many first rows to keep)")


def _nonfinite_rows(rows: Rows) -> np.ndarray:
    if isinstance(rows, LazyRows):
        parts = [~np.isfinite(c[:, 3:]).all(axis=1) for c in rows.chunks()]
        return np.concatenate(parts) if parts else np.zeros(0, bool)
    return np.asarray(~np.isfinite(rows[:, 3:]).all(axis=1))


def _restrict(rows: Rows, keep: np.ndarray) -> Rows:
    if isinstance(rows, LazyRows):
        rows.keep_rows(np.flatnonzero(keep))
        return rows
    kept: np.ndarray = rows[keep]
    return kept


def screen_slide(sid: str, rows: Rows, opts: CohortOptions) -> tuple[Rows | None, str | None, Notice | None]:
    """``(rows to use, None, notice)`` for a usable slide, ``(None, reason, None)`` for a bad one."""
    if opts.first_rows_only:
        if isinstance(rows, LazyRows):
            rows.keep_first(opts.n_tiles)
        else:
            rows = rows[: opts.n_tiles]
    n = len(rows)
    if n == 0:
        return None, "feature file holds no tiles", None
    where = f"the first {n} rows" if opts.first_rows_only else f"{n} tiles"
    notes = []
    bad = _nonfinite_rows(rows)
    if bad.any():
        if not opts.drop_nan_tiles:
            return None, f"features contain NaN/Inf in {int(bad.sum())} of {where}", None
        rows = _restrict(rows, ~bad)
        notes.append(f"dropped {int(bad.sum())} NaN/Inf tiles of {where}")
        n = len(rows)
    if n < opts.min_tiles:
        return None, f"{n} usable tiles, fewer than min_tiles={opts.min_tiles}", None
    if opts.n_tiles is not None and n < opts.n_tiles:
        notes.append(f"{n} tiles, fewer than n_tiles={opts.n_tiles}: all {n} are used")
    return rows, None, (Notice(sid, "; ".join(notes)) if notes else None)


def refuse_or_exclude(bad: list[tuple[str, str]], opts: CohortOptions) -> list[Exclusion]:
    """Raise one :class:`CohortError` listing ``bad`` (policy ``error``), or return them as exclusions."""
    if not bad:
        return []
    if opts.bad_slides == "exclude":
        return [Exclusion(sid, reason) for sid, reason in bad]
    if len(bad) == 1:
        raise CohortError(bad[0][0], f"{bad[0][1]}; {_HINT}")
    listed = "; ".join(f"{sid}: {reason}" for sid, reason in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    raise CohortError(None, f"{len(bad)} slides cannot be used: {listed}{more}; {_HINT}")


def odd_dimensions(ids: list[str], rows: list[Rows], opts: CohortOptions) -> list[tuple[str, str]]:
    """Slides whose feature dimension differs from the majority, with reasons.

    Under ``bad_slides="error"`` (or when no dimension is a strict majority)
    this raises one :class:`CohortError` naming the odd slides.
    """
    dims = [int(r.shape[1] - 3) for r in rows]
    counts = Counter(dims).most_common()
    if len(counts) <= 1:
        return []
    (main, count), tie = counts[0], counts[1][1] == counts[0][1]
    odd = [(s, d) for s, d in zip(ids, dims, strict=True) if d != main]
    if opts.bad_slides == "error" or tie:
        listed = ", ".join(f"{s} (d={d})" for s, d in odd[:10])
        what = "no dimension is held by most slides; " if tie else ""
        raise CohortError(
            odd[0][0],
            f"feature dimension differs across slides: {count} slides have d={main} but {len(odd)} do not: "
            f"{listed}; {what}use features from a single encoder"
            + ("" if tie else ", or pass bad_slides='exclude' (--bad-slides exclude) to leave the odd ones out"),
        )
    return [(s, f"feature dimension d={d} differs from the cohort's d={main} ({count} slides)") for s, d in odd]
