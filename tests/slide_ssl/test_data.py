"""Tile grid rule, cohort validation and recorded skips for bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from wsistream.errors import NoUsableSlidesError
from wsistream.features.formats import SlideFeatures, read_features, write_histossl
from wsistream.slide_ssl.data import SlideTokenCohort, tile_grid


def _sf(xy, **attrs):
    xy = np.asarray(xy, dtype=np.float32)
    coords = np.concatenate([np.zeros((len(xy), 1), np.float32), xy], 1)
    return SlideFeatures("s", np.zeros((len(xy), 4), np.float32), coords, {"layout": "h5", **attrs})


def test_grid_from_patch_size_times_downsample():
    grid, rule = tile_grid(_sf([[1024, 2048], [1536, 2048]], patch_size=256, downsample=2.0))
    np.testing.assert_array_equal(grid, [[2, 4], [3, 4]])
    assert "256" in rule and "downsample=2" in rule


def test_grid_prefers_argument_then_level0_size():
    sf = _sf([[0, 0], [896, 448]], patch_size=224, patch_size_level0=448)
    np.testing.assert_array_equal(tile_grid(sf)[0], [[0, 0], [2, 1]])
    np.testing.assert_array_equal(tile_grid(sf, tile_size=224)[0], [[0, 0], [4, 2]])


def test_grid_inferred_from_smallest_gap_without_attributes():
    grid, rule = tile_grid(_sf([[100, 100], [612, 100], [1124, 612]]))
    np.testing.assert_array_equal(grid, [[0, 0], [1, 0], [2, 1]])
    assert "inferred" in rule


def test_histossl_addresses_are_used_as_they_are(tmp_path):
    coords = np.array([[15, 3, 4], [15, 4, 4]], np.float32)
    write_histossl(tmp_path / "a", np.ones((2, 5), np.float32), coords)
    grid, _ = tile_grid(read_features(tmp_path / "a"))
    np.testing.assert_array_equal(grid, [[3, 4], [4, 4]])


def test_cohort_orders_tokens_row_major(feature_dir):
    cohort = SlideTokenCohort.scan(feature_dir)
    s = cohort.load(0)
    key = s.grid[:, 1] * 10_000 + s.grid[:, 0]
    assert np.all(np.diff(key) > 0)
    assert s.grid.min() == 2  # 1024 px offset / 512 px tiles


def test_bad_inputs_are_skipped_and_recorded(tmp_path, write_slide):
    root = tmp_path / "mixed"
    for i in range(3):
        write_slide(root / f"good_{i}.h5")
    write_slide(root / "nan_rows.h5", nan_rows=3)
    write_slide(root / "all_nan.h5", nan_rows=10_000)
    write_slide(root / "wrong_dim.h5", dim=12)
    write_slide(root / "tiny.h5", n_side=2)
    with h5py.File(root / "no_coords.h5", "w") as fh:
        fh.create_dataset("features", data=np.ones((20, 8), np.float32))
    (root / "garbage.h5").write_bytes(b"not an hdf5 file")
    same = root / "same_cell.h5"
    with h5py.File(same, "w") as fh:
        fh.create_dataset("features", data=np.ones((20, 8), np.float32))
        fh.create_dataset("coords", data=np.zeros((20, 2), np.int64))
    (root / "npy_no_coords").mkdir()
    np.save(root / "npy_no_coords" / "features.npy", np.random.default_rng(0).normal(size=(30, 9)).astype(np.float32))

    cohort = SlideTokenCohort.scan(root, min_tiles=8)
    assert sorted(cohort.slide_ids) == ["good_0", "good_1", "good_2", "nan_rows"]
    assert cohort.dim == 8
    reasons = {s.slide.split("/")[-1] if "/" in s.slide else s.slide: s for s in cohort.skips}
    assert "no 'coords' dataset" in reasons["no_coords.h5"].reason
    assert "cannot read .h5" in reasons["garbage.h5"].reason
    assert "non-finite" in reasons["all_nan.h5"].reason
    assert "dimension 12 != 8" in reasons["wrong_dim.h5"].reason
    assert "min_tiles=8" in reasons["tiny.h5"].reason
    assert "one position" in reasons["same_cell.h5"].reason
    assert "no coordinate columns" in reasons["features.npy"].reason
    dropped = [s for s in cohort.skips if s.action == "dropped_tiles"]
    assert len(dropped) == 1 and "dropped 3 of" in dropped[0].reason
    assert np.isfinite(cohort.load(cohort.slide_ids.index("nan_rows")).features).all()


def test_explicit_input_dim_and_no_usable_slides(tmp_path, write_slide):
    write_slide(tmp_path / "a.h5", dim=8)
    write_slide(tmp_path / "b.h5", dim=12)
    assert SlideTokenCohort.scan(tmp_path, input_dim=12).slide_ids == ["b"]
    with pytest.raises(NoUsableSlidesError, match=r"dimension 8 != 16"):
        SlideTokenCohort.scan(tmp_path, input_dim=16)


def test_lazy_cohort_reports_a_vanished_file(tmp_path, write_slide):
    from wsistream.features.formats import FeatureFileError

    write_slide(tmp_path / "a.h5")
    cohort = SlideTokenCohort.scan(tmp_path, min_tiles=4, preload=False)
    assert cohort.load(0).n_tiles > 4
    (tmp_path / "a.h5").unlink()
    with pytest.raises(FeatureFileError):
        cohort.load(0)
