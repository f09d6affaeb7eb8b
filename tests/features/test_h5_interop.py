"""Our feature ``.h5`` opened the way TRIDENT, CLAM and TITAN open theirs, for every tiling.

The reading lines are re-implemented from the reference code (``mahmoodlab/TRIDENT``
at a91fa84, ``mahmoodlab/CLAM`` at 53e2409, the ``MahmoodLab/TITAN`` README), and the
metadata is checked against the pixels it describes: a plain OpenSlide read of the
described region, resampled as the tiling says, equals the tile that was encoded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import openslide
import pytest
from PIL import Image

from wsistream.backends import OpenSlideBackend
from wsistream.features import DeepZoomTiling, GridTiling, SlideTileDataset, read_features, write_h5
from wsistream.features.h5_attrs import nominal_magnification

CASES = {
    # slide, tiling, (level read, read side, level-0 side)
    "deepzoom-40x": ("40x", DeepZoomTiling(tissue_threshold=0.2, overview_side=512), (0, 448, 448)),
    "deepzoom-20x": ("20x", DeepZoomTiling(tissue_threshold=0.2, overview_side=512), (0, 224, 224)),
    "grid-40x": ("40x", GridTiling(tissue_threshold=0.2, overview_side=512), (0, 444, 444)),
    "grid-20x": ("20x", GridTiling(tissue_threshold=0.2, overview_side=512), (0, 224, 224)),
}


def _trident_read_coords(path: Path):
    """TRIDENT ``trident/IO.py`` ``read_coords`` (l. 576-606)."""
    with h5py.File(path, "r") as f:
        attrs = dict(f["coords"].attrs)
        coords = f["coords"][:]
    return attrs, coords


def _trident_patch_size_src(attrs) -> int:
    """TRIDENT ``WSI.extract_patch_features`` (l. 929-935) + ``WSIPatcher.__init__``: level-0 side of a tile."""
    patch_size = attrs.get("patch_size", None)
    src_mag, dst_mag = attrs.get("level0_magnification", None), attrs.get("target_magnification", None)
    if None in (patch_size, src_mag, dst_mag):
        raise KeyError("Missing attributes in coords_attrs.")
    src_pixel_size, dst_pixel_size = 10 / src_mag, 10 / dst_mag
    return round(patch_size * (dst_pixel_size / src_pixel_size))


def _titan_inputs(path: Path):
    """TITAN README: features, coords, ``coords.attrs['patch_size_level0']``; batched as TRIDENT's
    ``WSI.extract_slide_features`` does (``unsqueeze(0)``, int64 coords, ``int(patch_size_level0)``)."""
    with h5py.File(path, "r") as f:
        features = f["features"][:][None]
        coords = f["coords"][:].astype(np.int64)[None]
        patch_size_lv0 = int(f["coords"].attrs["patch_size_level0"])
    return features, coords, patch_size_lv0


def _clam_bag(path: Path):
    """CLAM ``dataset_modules/dataset_h5.py`` ``Whole_Slide_Bag_FP.__init__`` (l. 63-67)."""
    with h5py.File(path, "r") as f:
        return f["coords"].attrs["patch_level"], f["coords"].attrs["patch_size"], f["coords"][:]


@pytest.fixture(scope="module")
def written(feat_slides, tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("h5-interop")
    for name, (slide, tiling, _) in CASES.items():
        with OpenSlideBackend().open(feat_slides[slide]) as handle:
            tiles = tiling.tiles(handle)
        feats = np.random.default_rng(0).standard_normal((len(tiles), 8)).astype(np.float32)
        path = write_h5(root / f"{name}.h5", feats, tiles.xy, **tiles.attrs, encoder="tiny")
        out[name] = (feat_slides[slide], tiles, feats, path)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_layout_is_trident_s(written, case):
    _, tiles, feats, path = written[case]
    level, read_side, side_level0 = CASES[case][2]
    with h5py.File(path, "r") as f:
        assert f["features"].dtype == np.float32 and f["features"].shape == feats.shape
        assert f["coords"].dtype == np.int64 and f["coords"].shape == (len(tiles), 2)
        assert dict(f["features"].attrs) == {"name": case, "savetodir": str(path.parent), "encoder": "tiny"}
    attrs, coords = _trident_read_coords(path)
    np.testing.assert_array_equal(coords, tiles.xy)
    for key in ("patch_size", "patch_size_level0", "patch_level", "level0_magnification", "target_magnification"):
        assert isinstance(attrs[key], np.int64), key
    assert (attrs["patch_size"], attrs["patch_level"], attrs["read_size"]) == (224, level, read_side)
    assert attrs["patch_size_level0"] == side_level0 and attrs["coords_frame"] == "level0_pixels"
    assert (attrs["level0_magnification"], attrs["target_magnification"]) == (
        nominal_magnification(tiles.attrs["level0_mpp"]),
        20,
    )
    # TRIDENT re-reads the tiling from the two magnifications: exact where the tile µm/px is the
    # nominal one (DeepZoom halves 0.252 µm/px exactly); the grid's 444 px at 0.252 µm/px reads as 448.
    assert _trident_patch_size_src(attrs) == (448 if case == "grid-40x" else side_level0)


@pytest.mark.parametrize("case", list(CASES))
def test_metadata_describes_the_encoded_pixels(written, case):
    slide, tiles, _, path = written[case]
    attrs, coords = _trident_read_coords(path)
    level, read_size, ds = int(attrs["patch_level"]), int(attrs["read_size"]), attrs["downsample"]
    assert read_size * ds[0] == attrs["patch_size_level0"]
    osr = openslide.OpenSlide(slide)
    ours = SlideTileDataset(tiles, OpenSlideBackend())
    for i in np.linspace(0, len(tiles) - 1, 4).astype(int):
        region = np.asarray(osr.read_region(tuple(int(v) for v in coords[i]), level, (read_size,) * 2).convert("RGB"))
        size = int(attrs["patch_size"])
        if case.startswith("deepzoom"):  # DeepZoomGenerator.get_tile: thumbnail(LANCZOS)
            img = Image.fromarray(region)
            img.thumbnail((size, size), Image.LANCZOS)
            expected = np.asarray(img)
        else:  # the level-0 grid: cv2.INTER_AREA (core pipeline)
            expected = region if read_size == size else cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(ours.read(int(i)), expected)
    ours.close()


@pytest.mark.parametrize("case", list(CASES))
def test_titan_places_every_tile_on_its_grid(written, case):
    _, tiles, feats, path = written[case]
    features, coords, patch_size_lv0 = _titan_inputs(path)
    assert features.shape == (1, *feats.shape) and coords.shape == (1, len(tiles), 2)
    offset = coords[0] - coords[0].min(axis=0)
    assert not (offset % patch_size_lv0).any()  # tiles sit exactly on a patch_size_level0 grid
    cells = offset // patch_size_lv0
    assert len(np.unique(cells, axis=0)) == len(tiles)


def test_clam_reads_the_encoded_pixels_when_not_resampled(written):
    slide, tiles, _, path = written["grid-20x"]
    patch_level, patch_size, coords = _clam_bag(path)
    osr = openslide.OpenSlide(slide)
    ours = SlideTileDataset(tiles, OpenSlideBackend())
    for i in range(0, len(tiles), max(1, len(tiles) // 3)):  # Whole_Slide_Bag_FP.__getitem__ (l. 82-84)
        img = osr.read_region(tuple(coords[i]), patch_level, (patch_size, patch_size)).convert("RGB")
        np.testing.assert_array_equal(np.asarray(img), ours.read(i))
    ours.close()


def test_our_reader_and_trident_files(written, tmp_path):
    _, tiles, feats, path = written["deepzoom-40x"]
    back = read_features(path)
    np.testing.assert_array_equal(back.features, feats)
    assert back.attrs["coords_frame"] == "level0_pixels" and back.attrs["patch_size_level0"] == 448
    np.testing.assert_array_equal(back.coords[:, 1:], tiles.xy)
    # a file TRIDENT wrote (attributes only on coords, no root attributes) reads too
    trident = tmp_path / "slide.h5"
    with h5py.File(trident, "w") as f:
        f.create_dataset("features", data=feats)
        c = f.create_dataset("coords", data=tiles.xy)
        c.attrs.update({"patch_size": 224, "patch_size_level0": 448, "level0_magnification": 40})
    other = read_features(trident)
    assert other.attrs["patch_size_level0"] == 448 and (other.coords[:, 0] == 0).all()


def test_magnification_bins():
    assert [nominal_magnification(m) for m in (0.121, 0.252, 0.5, 0.499, 1.0, 2.0)] == [80, 40, 20, 20, 10, 5]
    with pytest.raises(ValueError, match="mpp must be > 0"):
        nominal_magnification(0)
