"""The decoded-tile cache's hit and miss counts, as ``wsistream bench`` reads them (``tile_cache_counts``)."""

from __future__ import annotations

from wsistream.backends import OpenSlideBackend
from wsistream.backends._tile_cache import tile_cache_counts


def test_a_repeated_read_is_all_hits_and_decodes_nothing(written_20x):
    # 240-px tiles: a 300² read at (100, 100) of level 0 covers tiles (0..1, 0..1), four lookups
    with OpenSlideBackend().open(written_20x) as handle:
        before = tile_cache_counts()
        first = handle.read_region(100, 100, 0, (300, 300))
        middle = tile_cache_counts()
        again = handle.read_region(100, 100, 0, (300, 300))
        after = tile_cache_counts()
    assert (middle[0] - before[0], middle[1] - before[1]) == (0, 4)
    assert (after[0] - middle[0], after[1] - middle[1]) == (4, 0)
    assert (first == again).all()


def test_counts_never_fall_when_a_slide_closes(written_20x):
    # closing a reader drops its tiles from the shared cache, not the counts: bench deltas stay >= 0
    handle = OpenSlideBackend().open(written_20x)
    handle.read_region(0, 0, 0, (240, 240))
    during = tile_cache_counts()
    handle.close()
    assert tile_cache_counts() == during
