"""Errors and per-slide records of the MIL benchmark (shared by the cohort, label and split code)."""

from __future__ import annotations

from dataclasses import dataclass

from wsistream.errors import WsiStreamError


class CohortError(WsiStreamError):
    """A slide or its label cannot be used; the message names the slide and the reason."""


class FoldError(WsiStreamError):
    """A cross-validation split cannot be made or evaluated (too few patients, a single-class fold)."""


@dataclass(frozen=True)
class Exclusion:
    """A slide left out of the cohort, with the reason."""

    slide_id: str
    reason: str


@dataclass(frozen=True)
class Notice:
    """A slide kept in the cohort with a caveat (fewer tiles than requested, dropped NaN tiles)."""

    slide_id: str
    message: str
