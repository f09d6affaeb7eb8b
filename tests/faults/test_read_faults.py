"""Faults that appear while reading: a corrupt tile, an undecodable file, a file deleted mid-stream."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.sampling import RandomSampler
from wsistream.synthetic import write_aperio_svs

from .helpers import (
    FOOTPRINT,
    GOOD_SIZE,
    Run,
    assert_good_untouched,
    assert_named,
    check_fault,
    collect,
    failures_of,
    make_pipe,
    run_stream,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
TILE = 240  # the writer's JPEG tile edge


@pytest.fixture(scope="module")
def corrupt_pair(tmp_path_factory):
    """A clean slide and the same slide with one level-0 JPEG tile replaced by garbage.

    The corrupt tile is the one under the first qualifying grid patch, so the
    grid touches it; the overview (level 1) is unaffected, so both slides get
    the same tissue mask and the same grid.
    """
    folder = tmp_path_factory.mktemp("corrupt")
    width, height = GOOD_SIZE
    clean = str(
        write_aperio_svs(folder / "clean.svs", width=width, height=height, mpp=0.5, downsamples=(1, 4), seed=42)
    )
    first = next(iter(make_pipe([clean])))
    col, row = first.coordinate.x0 // TILE, first.coordinate.y0 // TILE
    corrupt = folder / "corrupt.svs"
    write_aperio_svs(corrupt, width=width, height=height, mpp=0.5, downsamples=(1, 4), seed=42, corrupt_tile=(col, row))
    return clean, str(corrupt), (col, row)


def _touches(coord, tile) -> bool:
    x0, y0 = coord[0], coord[1]
    tx, ty = tile[0] * TILE, tile[1] * TILE
    return x0 < tx + TILE and tx < x0 + FOOTPRINT and y0 < ty + TILE and ty < y0 + FOOTPRINT


def _check_corrupt_tile(backend, corrupt_pair, good_slides):
    clean, corrupt, tile = corrupt_pair
    ref = run_stream([clean], backend=backend)
    expected = {c: n for c, n in ref.coords[clean].items() if not _touches(c, tile)}
    n_bad = sum(ref.coords[clean].values()) - sum(expected.values())
    assert 0 < n_bad < 8
    got = run_stream([good_slides[0], corrupt, *good_slides[1:]], backend=backend, max_read_errors=50)
    # exactly the reads that touch the corrupt tile fail, as non-retiring region failures ...
    records = failures_of(got, corrupt)
    assert [(f.error_type, f.stage, f.retired) for f in records] == [("TileDecodeError", "read", False)] * n_bad
    for record in records:
        assert_named(record, corrupt)
    # ... and the slide goes on: every other tile is delivered, at the same coordinates
    assert dict(got.coords[corrupt]) == expected
    assert_good_untouched(got, run_stream(good_slides, backend=backend), good_slides, "grid")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", [OpenSlideBackend(), TiffSlideBackend()], ids=lambda b: b.name)
def test_corrupt_tile_fails_one_region_only(backend, corrupt_pair, good_slides):
    """Opens; exactly the reads touching the bad tile fail (OpenSlide: the handle is reopened after an error)."""
    _check_corrupt_tile(backend, corrupt_pair, good_slides)


@pytest.mark.timeout(60)
def test_undecodable_shared_slide(good_slides):
    """``bad/unreadable.svs`` opens (16×16) but no tile decodes: retired at the tissue stage (overview read)."""
    bad = str(SHARED / "bad" / "unreadable.svs")
    sampler = RandomSampler(patch_size=8, level=0, tissue_threshold=0.0)
    ref = run_stream(good_slides, "random", sampler=sampler)
    got = check_fault([bad], good_slides, "random", ref, sampler=sampler)
    [record] = failures_of(got, bad)
    assert (record.error_type, record.stage, record.retired) == ("TileDecodeError", "tissue", True)
    assert "cannot decode region" in record.message
    assert_named(record, bad)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", [OpenSlideBackend(), TiffSlideBackend()], ids=lambda b: b.name)
def test_file_deleted_before_it_is_opened(backend, good_slides, tmp_path):
    victim = str(tmp_path / "victim.svs")
    shutil.copy(good_slides[0], victim)
    pipe = make_pipe([good_slides[0], victim, *good_slides[1:]], pool_size=1, backend=backend)
    stream = iter(pipe)
    got = collect(pipe, 2, stream)  # streaming good_0; the victim is not open yet
    os.remove(victim)
    collect(pipe, None, stream, got)  # the same stream goes on
    [record] = failures_of(got, victim)
    assert (record.error_type, record.stage, record.retired) == ("SlideNotFoundError", "open", True)
    assert_named(record, victim)
    assert_good_untouched(got, run_stream(good_slides, backend=backend), good_slides, "grid")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "backend",
    [OpenSlideBackend(), OpenSlideBackend(fast_tiles=False), TiffSlideBackend()],
    ids=["openslide", "openslide-library-reads", "tiffslide"],
)
def test_file_deleted_while_open(backend, good_slides, tmp_path):
    """Deleted while open: the stream must go on with the other slides and record the failure once.

    TiffSlide holds the file open and keeps reading the unlinked file until the
    visit ends; OpenSlide re-reads by path, so reads of tiles it has not cached
    fail (``TileDecodeError``, not retiring).  Either way the next epoch's reopen
    records ``SlideNotFoundError`` once and the slide is not tried again.
    """
    victim = str(tmp_path / "victim.svs")
    shutil.copy(good_slides[0], victim)
    pipe = make_pipe(
        [victim, *good_slides[1:]], "random", pool_size=1, patches_per_slide=3, cycle=True, backend=backend
    )
    stream = iter(pipe)
    order = [r.coordinate.slide_path for r in itertools.islice(stream, 1)]
    os.remove(victim)
    order += [r.coordinate.slide_path for r in itertools.islice(stream, 20)]
    stream.close()
    assert len(order) == 21
    n_victim = order.count(victim)  # its visit: 3 attempts, of which the reads after the deletion may fail
    assert order[:n_victim] == [victim] * n_victim
    assert order[n_victim : n_victim + 6] == [good_slides[1]] * 3 + [good_slides[2]] * 3
    records = failures_of(Run(failures=pipe.failures), victim)
    assert [(f.error_type, f.stage, f.retired) for f in records[: 3 - n_victim]] == [
        ("TileDecodeError", "read", False)
    ] * (3 - n_victim)
    assert [(f.error_type, f.stage, f.retired) for f in records[3 - n_victim :]] == [
        ("SlideNotFoundError", "open", True)
    ]
    for record in records:
        assert_named(record, victim)
    if backend.name == "tiffslide":
        assert n_victim == 3
