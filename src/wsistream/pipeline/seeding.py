"""Named random streams derived from the pipeline seed.

Every random decision is drawn from ``np.random.default_rng([seed, stream,
*keys])`` (a ``SeedSequence`` over the tuple), so it depends only on the seed
and on *what* is decided (which epoch, which slide assignment, which patch) —
not on wall-clock, process start method, or how many other decisions came
before it.  That is what makes the stream reproducible and exactly resumable
from a few counters.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class RngStream(IntEnum):
    """What a generator is used for; part of its seed key."""

    SLIDE_ORDER = 0  # keys: (epoch,)
    POSITIONS = 1  # keys: (assignment,)
    PATCH = 2  # keys: (assignment, attempt): transforms and views of one patch
    GRID_ORDER = 3  # keys: (slide index, pass): without-replacement tile orders


def stream_rng(seed: int, stream: RngStream, *keys: int) -> np.random.Generator:
    """The generator for ``stream`` at ``keys`` under ``seed``."""
    return np.random.default_rng([int(seed), int(stream), *(int(k) for k in keys)])


def fresh_seed() -> int:
    """A random 63-bit seed (used when the user passes ``seed=None``; recorded on the pipeline)."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
