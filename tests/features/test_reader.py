"""The extraction reader: pixels of DeepZoomGenerator.get_tile, each stored tile decoded once, bad tiles named."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import openslide
import pytest
import torch
from openslide.deepzoom import DeepZoomGenerator
from torch.utils.data import DataLoader

from wsistream.backends import OpenSlideBackend
from wsistream.errors import TileDecodeError
from wsistream.features import DeepZoomTiling, GridTiling, SlideTileDataset
from wsistream.features.reader import grid_batches, interleave_bands
from wsistream.synthetic import write_aperio_svs

# Every layout the direct JPEG path accepts (tests/backends/test_fast_tiles.py), with edge tiles:
# 1001 x 761 and 240-px tiles leave a 41-px last column and row; odd sizes give reads Pillow thumbnails
# with a changed aspect ratio (those stay on Pillow).
LAYOUTS = {
    "rgb": dict(photometric="rgb"),
    "ycbcr444": dict(photometric="ycbcr", subsampling=(1, 1)),
    "ycbcr420": dict(photometric="ycbcr", subsampling=(2, 2)),
}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def layout_40x(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("reader-layouts")
    path = root / f"{request.param}.svs"
    return str(
        write_aperio_svs(path, width=1001, height=761, mpp=0.252, downsamples=(1, 4), seed=5, **LAYOUTS[request.param])
    )


def _dz_reference(slide: str, tiles) -> np.ndarray:
    dz = DeepZoomGenerator(openslide.OpenSlide(slide), tile_size=224, overlap=0)
    out = np.zeros((len(tiles), 224, 224, 3), np.uint8)
    for i, (level, col, row) in enumerate(tiles.coords.astype(int)):
        ref = np.asarray(dz.get_tile(int(level), (int(col), int(row))))
        out[i, : ref.shape[0], : ref.shape[1]] = ref
    return out


def _through_device_path(ds: SlideTileDataset, batch_size: int = 4) -> np.ndarray:
    from wsistream.features.lanczos import render_batch

    got = np.zeros((len(ds), 224, 224, 3), np.uint8)
    for batch in ds.batches(batch_size):
        items = torch.stack([ds[i][0] for i in batch])
        size = ds.device_size(batch[0])
        got[batch] = (render_batch(items, size, 224) if size is not None else items).numpy()
    return got


def test_every_fast_layout_matches_get_tile_exactly_on_both_resize_paths(layout_40x):
    """A 40x slide: every 0.5 µm/px tile is a 448² read thumbnailed with LANCZOS, border tiles included."""
    with OpenSlideBackend().open(layout_40x) as handle:
        tiles = DeepZoomTiling(keep_partial=True, tissue_threshold=0.0).tiles(handle)
    ref = _dz_reference(layout_40x, tiles)
    ds = SlideTileDataset(tiles, OpenSlideBackend(), device_resize=True)
    assert ds.reader.fast is not None  # served by the direct JPEG path
    assert any(ds.device_size(i) is None for i in range(len(ds)))  # odd border shapes stay on Pillow
    np.testing.assert_array_equal(_through_device_path(ds), ref)
    np.testing.assert_array_equal(np.stack([ds.read(i) for i in range(len(ds))]), ref)
    ds.close()


def _touched(tiles) -> set[tuple[int, int]]:
    """``(col, row)`` of the 240-px stored level-0 tiles the reads of ``tiles`` cover."""
    touched = set()
    for x, y, w, h in zip(tiles.x0, tiles.y0, tiles.read_w, tiles.read_h, strict=True):
        touched |= {
            (c, r) for r in range(y // 240, (y + h - 1) // 240 + 1) for c in range(x // 240, (x + w - 1) // 240 + 1)
        }
    return touched


def test_each_stored_tile_is_decoded_once_per_slide(feat_slides):
    slide = feat_slides["40x"]  # 1600 x 1200, 240-px tiles
    with OpenSlideBackend().open(slide) as handle:
        tiles = DeepZoomTiling(keep_partial=True, tissue_threshold=0.0).tiles(handle)
    ds = SlideTileDataset(tiles, OpenSlideBackend(), device_resize=True)
    for batch in ds.batches(8):
        for i in batch:
            ds[i]
    assert ds.reader.fast.tiles_decoded == len(_touched(tiles)) == 35  # 7 x 5 stored tiles, none twice
    ds.close()


def test_off_grid_origins_go_to_the_library(tmp_path):
    """Level 1 of a 1001-px-wide slide has downsample 4.0004: OpenSlide blends there, so the reader defers to it."""
    slide = str(write_aperio_svs(tmp_path / "odd.svs", width=2001, height=1601, mpp=0.125, downsamples=(1, 4), seed=3))
    with OpenSlideBackend().open(slide) as handle:
        tiles = GridTiling(patch_size=224, target_mpp=0.5, tissue_threshold=0.0, n_tiles=6, seed=1).tiles(handle)
    assert tiles.level == 1 and (tiles.x0 > 0).any()
    ds = SlideTileDataset(tiles, OpenSlideBackend())
    got = [ds.read(i) for i in range(len(ds))]
    assert ds.reader.library_reads == int(((tiles.x0 > 0) | (tiles.y0 > 0)).sum())
    with openslide.OpenSlide(slide) as osr:
        for i, tile in enumerate(got):
            size = (int(tiles.read_w[i]), int(tiles.read_h[i]))
            ref = np.asarray(osr.read_region((int(tiles.x0[i]), int(tiles.y0[i])), 1, size))[..., :3]
            np.testing.assert_array_equal(tile, ref)
    ds.close()


def test_corrupt_tile_is_a_named_decode_error(feat_slides, tmp_path):
    args = dict(width=1600, height=1200, mpp=0.252, downsamples=(1, 4), seed=1)  # feat_slides["40x"] + one bad tile
    slide = str(write_aperio_svs(tmp_path / "bad tile.svs", corrupt_tile=(3, 2), **args))
    with OpenSlideBackend().open(feat_slides["40x"]) as handle:  # the overview of the bad slide reads the bad tile
        tiles = dataclasses.replace(DeepZoomTiling(tissue_threshold=0.0).tiles(handle), slide_path=slide)
    ds = SlideTileDataset(tiles, OpenSlideBackend(), device_resize=True)
    errors = []
    for i in range(len(ds)):
        try:
            ds[i]
        except TileDecodeError as exc:
            errors.append(str(exc))
    assert errors and all("bad tile.svs" in e and "tile (3, 2)" in e for e in errors)
    assert len(errors) < len(ds)  # the other tiles read
    ds.close()


def test_grid_batches_keep_shapes_apart_and_give_each_worker_a_band():
    yx = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [2, 0], [2, 1]])
    shape = np.zeros((8, 1), np.int64)
    shape[2] = 1  # an odd border tile
    order = np.random.default_rng(0).permutation(8)
    batches = grid_batches(yx[order], shape[order], 2, num_workers=1)
    assert [[tuple(yx[order][i]) for i in b] for b in batches] == [
        [(0, 0), (0, 1)],
        [(0, 2)],
        [(1, 0), (1, 1)],
        [(1, 2), (2, 0)],
        [(2, 1)],
    ]
    two = grid_batches(yx[order], shape[order], 2, num_workers=2)
    assert two[0::2] == batches[:3] and two[1::2] == batches[3:]  # worker 0: band 0, worker 1: band 1
    with pytest.raises(ValueError, match="batch_size"):
        grid_batches(yx, shape, 0, 1)


@pytest.mark.parametrize("workers", [2, 3, 4, 5])
@pytest.mark.parametrize("n_batches", [1, 3, 7, 8, 9, 13])
def test_position_i_of_the_interleaved_list_lies_in_band_i_mod_workers(n_batches, workers):
    """DataLoader gives sampler position i to worker i % W: each worker must see one contiguous, ordered band."""
    batches = [[b] for b in range(n_batches)]
    got = interleave_bands(batches, workers)
    assert sorted(got) == batches
    seen = [[b[0] for b in got[w::workers]] for w in range(workers)]
    flat = [b for band in seen for b in band]
    assert flat == list(range(n_batches))  # band w follows band w-1: contiguous and in grid order
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


class _CountingTiles(SlideTileDataset):
    """Items carry the worker's pid and its reader's running count of decoded stored tiles."""

    def __getitem__(self, i):
        tile, index = super().__getitem__(i)
        return tile, index, os.getpid(), self.reader.fast.tiles_decoded


def _decodes_per_worker(tiles, batches, workers: int) -> list[int]:
    ds = _CountingTiles(tiles, OpenSlideBackend(), device_resize=True)
    last: dict[int, int] = {}
    for _, _, pid, decoded in DataLoader(ds, batch_sampler=batches, num_workers=workers):
        for p, d in zip(pid.tolist(), decoded.tolist(), strict=True):
            last[p] = max(last.get(p, 0), d)
    return sorted(last.values())


def test_two_workers_decode_each_stored_tile_once_but_for_one_band_boundary(tmp_path):
    """Two DataLoader workers on their grid bands decode about what one does; plain round-robin would not."""
    slide = str(write_aperio_svs(tmp_path / "w.svs", width=4000, height=3000, mpp=0.252, downsamples=(1, 4), seed=6))
    with OpenSlideBackend().open(slide) as handle:
        tiles = DeepZoomTiling(keep_partial=True, tissue_threshold=0.0).tiles(handle)
    probe = SlideTileDataset(tiles, OpenSlideBackend(), device_resize=True)
    one = _decodes_per_worker(tiles, probe.batches(4, 1), 1)
    two = _decodes_per_worker(tiles, probe.batches(4, 2), 2)
    lv = probe.reader.fast.levels[tiles.level]
    boundary_row = lv.tiles_across * (-(-int(tiles.read_h.max()) // lv.tile_height) + 1)  # stored tiles of a row
    assert one == [len(_touched(tiles))]  # each stored tile once
    assert len(two) == 2 and min(two) > 0.4 * one[0]  # both workers did half the work
    assert one[0] <= sum(two) <= one[0] + boundary_row
    naive = _decodes_per_worker(tiles, probe.batches(4, 1), 2)  # grid order, batches alternating
    assert sum(naive) > one[0] + boundary_row
    probe.close()


def test_corrupt_tile_mid_slide_fails_that_slide_only_and_leaves_no_file(phikon, feat_slides, tmp_path):
    """The overview (level 1) is clean, so the bad level-0 tile is met mid-extraction, in a worker."""
    from wsistream.features import ExtractionConfig, extract_cohort, read_manifest

    bad = write_aperio_svs(
        tmp_path / "mid.svs", width=4000, height=3000, mpp=0.252, downsamples=(1, 4), corrupt_tile=(8, 6), seed=4
    )
    config = ExtractionConfig(device="cpu", num_workers=1, batch_size=8)
    tiling = DeepZoomTiling(tissue_threshold=0.0)
    report = extract_cohort(
        [str(bad), feat_slides["40x"]], tmp_path / "out", phikon, tiling=tiling, config=config, progress=False
    )
    records = {Path(k).name: v for k, v in read_manifest(report.root).items()}
    assert records["mid.svs"]["status"] == "failed" and "TileDecodeError" in records["mid.svs"]["error"]
    assert "mid.svs" in records["mid.svs"]["error"] and "tile (8, 6)" in records["mid.svs"]["error"]
    assert records["a40x.svs"]["status"] == "done"
    assert not (report.root / "mid.svs").exists() or not list((report.root / "mid.svs").iterdir())  # nothing half


@pytest.mark.parametrize("fmt", ["histossl", "h5"])
def test_one_and_two_workers_write_identical_files(phikon, feat_slides, tmp_path, fmt):
    """Same batches, other workers: the features and coordinates written are the same bytes."""
    import h5py

    from wsistream.features import ExtractionConfig, extract_cohort

    roots = []
    for workers in (1, 2):
        config = ExtractionConfig(device="cpu", num_workers=workers, batch_size=2)
        out = tmp_path / f"w{workers}"
        tiling = DeepZoomTiling(keep_partial=True, tissue_threshold=0.0)
        report = extract_cohort(feat_slides["40x"], out, phikon, tiling=tiling, config=config, fmt=fmt, progress=False)
        assert report.ok and report.tiles_encoded > 6  # batches of 2: more batches than workers
        roots.append(report.root)
    if fmt == "histossl":
        for name in ("features.npy", "coords.npy", "extraction.json"):
            assert (roots[0] / "a40x.svs" / name).read_bytes() == (roots[1] / "a40x.svs" / name).read_bytes()
    else:
        with h5py.File(roots[0] / "a40x.h5") as one, h5py.File(roots[1] / "a40x.h5") as two:
            for key in ("features", "coords"):
                assert one[key][()].tobytes() == two[key][()].tobytes()
