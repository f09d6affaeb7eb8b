"""Named evaluation protocols of ``mil-cv``: which tiles a slide contributes.

The MIL models, the folds, the grid, the selection and the refit are the
HistoSSLscaling ones under every protocol (the :class:`NestedCVConfig`
defaults); a protocol fixes the tile sampling, the one place where the
reference *code* and a plain reading of the paper differ:

* ``histossl`` (default) - what ``rl_benchmarks`` does at commit 73f1d191:
  ``SlideClassificationDataset`` calls ``preload_features(fpaths,
  n_tiles=1000)`` with ``shuffle=False``, which keeps the **first 1000 rows**
  of each ``features.npy``; ``SlideFeaturesDataset.__getitem__`` then only
  permutes those rows at every access, for training and validation/test
  alike (``rl_benchmarks/utils/features.py``,
  ``rl_benchmarks/datasets/slides_classification/core.py``). Tiles after row
  1000 are never seen, so the result depends on the row order the feature
  extractor wrote.
* ``random-tiles`` - a fresh random subset of ``n_tiles`` of *all* tiles per
  slide per training step, and one fixed seeded subset per slide for
  scoring. Every tile can contribute; numbers are not comparable with the
  paper's tables.

The protocol name, its tile sampling and every setting that differs from
the protocol's (``deviations``) are recorded in ``cv_results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """A named ``mil-cv`` protocol."""

    name: str
    tile_sampling: str
    description: str


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "histossl",
            "first",
            "HistoSSLscaling (rl_benchmarks 73f1d191): the first n_tiles rows of each features file, "
            "shuffled at every pass, for training and scoring",
        ),
        Protocol(
            "random-tiles",
            "random",
            "a fresh random subset of n_tiles of all tiles per training step; a fixed seeded subset for scoring",
        ),
    )
}

DEFAULT_PROTOCOL = "histossl"


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; raises ``ValueError`` naming the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"protocol={name!r}: pass one of {tuple(PROTOCOLS)}") from None
