"""Cohorts: distinct slides, cached on disk by their parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from wsistream.synthetic import write_synthetic_cohort

from .helpers import read_level


def test_cohort_is_distinct_and_cached(tmp_path: Path) -> None:
    kw = {"width": 960, "height": 720, "downsamples": (1, 4)}
    paths = write_synthetic_cohort(tmp_path, 2, **kw)
    assert len(paths) == 2 and all(p.exists() for p in paths)
    slides = [openslide.OpenSlide(p) for p in paths]
    assert all(s.properties["openslide.objective-power"] == "20" for s in slides)
    assert all(float(s.properties["openslide.mpp-x"]) == 0.5 for s in slides)
    assert not np.array_equal(read_level(slides[0], 1), read_level(slides[1], 1))

    stamps = [p.stat().st_mtime_ns for p in paths]
    assert write_synthetic_cohort(tmp_path, 2, **kw) == paths  # cache hit: same files, not rewritten
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    # A prefix of a larger cohort is the same slides.
    assert write_synthetic_cohort(tmp_path, 1, **kw) == paths[:1]

    changed = write_synthetic_cohort(tmp_path, 1, **{**kw, "quality": 70})
    assert changed[0] != paths[0]
    assert len(list(tmp_path.glob("*.svs"))) == 3


def test_cohort_rejects_per_slide_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="seed"):
        write_synthetic_cohort(tmp_path, 1, width=480, height=480, seed=0, **{"path": "x"})
    with pytest.raises(ValueError, match="n must be >= 1"):
        write_synthetic_cohort(tmp_path, 0, width=480, height=480)
