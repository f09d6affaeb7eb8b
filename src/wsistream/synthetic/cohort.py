"""A directory of distinct synthetic slides, cached on disk between runs.

Benchmarks need the same few gigapixel slides on every run; writing them costs tens of seconds each.
The file name carries a hash of every argument that changes the pixels or the metadata (and a generator
version), so an existing file is reused exactly when it would be rewritten identically, and a changed
argument or generator never serves a stale slide.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsistream.synthetic.aperio import write_aperio_svs

#: Bump when the generator's output changes for the same arguments; invalidates every cached slide.
GENERATOR_VERSION = 1


def _slide_seed(seed: int, index: int) -> int:
    """Seed of slide ``index`` of a cohort: mixed, so cohort seeds 0 and 1 share no slide."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _cache_key(params: dict[str, Any]) -> str:
    """Short stable hash of JSON-serialisable writer arguments."""
    text = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_synthetic_cohort(
    directory: str | os.PathLike[str],
    n: int,
    *,
    width: int,
    height: int,
    mpp: float | None = 0.5,
    app_mag: float | None = 20,
    seed: int = 0,
    **kwargs: Any,
) -> list[Path]:
    """Write (or reuse) ``n`` distinct synthetic Aperio slides in ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    n : int
        Number of slides (>= 1).
    width, height : int
        Level-0 size of every slide.
    mpp, app_mag : float or None
        Resolution and objective power; the defaults describe a 20x scan (0.5 µm/px), the resolution
        most foundation models train at.
    seed : int
        Cohort seed; slide *i* gets its own seed mixed from ``(seed, i)``.
    **kwargs
        Any other :func:`~wsistream.synthetic.write_aperio_svs` argument (``downsamples``,
        ``photometric``, ``quality``, …), applied to every slide.

    Returns
    -------
    list of pathlib.Path
        The slide paths in cohort order, named ``synth-{i:03d}-{width}x{height}-{hash}.svs``.

    Examples
    --------
    >>> from wsistream.synthetic import write_synthetic_cohort
    >>> paths = write_synthetic_cohort("cache/", 4, width=8000, height=8000)  # doctest: +SKIP
    >>> paths = write_synthetic_cohort("cache/", 4, width=8000, height=8000)  # doctest: +SKIP  (instant)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if "seed" in kwargs or "path" in kwargs:
        raise TypeError("write_synthetic_cohort sets each slide's path and seed itself")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index in range(n):
        slide_seed = _slide_seed(seed, index)
        params: dict[str, Any] = {
            "width": width,
            "height": height,
            "mpp": mpp,
            "app_mag": app_mag,
            "seed": slide_seed,
            **kwargs,
        }
        path = directory / f"synth-{index:03d}-{width}x{height}-{_cache_key(params)}.svs"
        if not path.exists():
            write_aperio_svs(path, **params)
        paths.append(path)
    return paths
