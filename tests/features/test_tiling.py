"""DeepZoom addresses of our tiles read the same pixels as openslide's DeepZoomGenerator.get_tile."""

from __future__ import annotations

import dataclasses

import numpy as np
import openslide
import pytest
import torch
from openslide.deepzoom import DeepZoomGenerator

from wsistream.backends import OpenSlideBackend
from wsistream.errors import MissingMppError, NoTissueError, ResolutionUnavailableError
from wsistream.features import DeepZoomGrid, DeepZoomTiling, GridTiling, SlideTileDataset
from wsistream.sampling import GridSampler, plan_read
from wsistream.sampling.deepzoom_grid import render_tile
from wsistream.tissue import OtsuTissueDetector


def _check_against_dzg(slide: str, tiles) -> None:
    dz = DeepZoomGenerator(openslide.OpenSlide(slide), tile_size=224, overlap=0)
    ds = SlideTileDataset(tiles, OpenSlideBackend())
    for i in range(len(tiles)):
        level, col, row = (int(v) for v in tiles.coords[i])
        (x, y), slide_level, (w, h) = dz.get_tile_coordinates(level, (col, row))
        assert (x, y, slide_level, w, h) == (tiles.x0[i], tiles.y0[i], tiles.level, tiles.read_w[i], tiles.read_h[i])
        ref = np.asarray(dz.get_tile(level, (col, row)))
        got = ds.read(i)
        assert got.shape == (224, 224, 3)
        np.testing.assert_array_equal(got[: ref.shape[0], : ref.shape[1]], ref)
        assert not got[ref.shape[0] :].any() and not got[:, ref.shape[1] :].any()  # zero padding (TilesMap)
    ds.close()


def test_deepzoom_tiles_match_get_tile_on_the_real_slide(cmu_svs: str):
    with OpenSlideBackend().open(cmu_svs) as handle:
        tiles = DeepZoomTiling(keep_partial=True, tissue_threshold=0.3).tiles(handle)
    dz = DeepZoomGenerator(openslide.OpenSlide(cmu_svs), tile_size=224, overlap=0)
    assert tiles.attrs["tile_level"] == dz.level_count - 1  # 0.499 µm/px: the full-resolution DeepZoom level
    assert any(tiles.out_w < 224) or any(tiles.out_h < 224)  # border tiles are part of the check
    _check_against_dzg(cmu_svs, tiles)


def test_deepzoom_downsampled_level_matches_get_tile(feat_slides):
    slide = feat_slides["40x"]  # 0.252 µm/px: the 0.5 µm/px DeepZoom level is a LANCZOS-thumbnailed 2x read
    with OpenSlideBackend().open(slide) as handle:
        tiles = DeepZoomTiling(keep_partial=True, tissue_threshold=0.2).tiles(handle)
    assert tiles.resize == "deepzoom" and (tiles.read_w > tiles.out_w).all()
    assert tiles.attrs["mpp"] == pytest.approx(0.504)
    _check_against_dzg(slide, tiles)


def test_deepzoom_grid_geometry_on_every_level(cmu_svs: str):
    props = OpenSlideBackend().open(cmu_svs).properties
    grid = DeepZoomGrid.from_properties(props, 224)
    dz = DeepZoomGenerator(openslide.OpenSlide(cmu_svs), tile_size=224, overlap=0)
    assert grid.level_dimensions == dz.level_dimensions
    for level in range(dz.level_count):
        assert grid.level_tiles(level) == dz.level_tiles[level]
        cols, rows = np.meshgrid(*(np.arange(n) for n in dz.level_tiles[level]))
        reads = grid.tile_reads(level, cols.ravel(), rows.ravel())
        for i, (c, r) in enumerate(zip(cols.ravel(), rows.ravel(), strict=True)):
            (x, y), sl, (w, h) = dz.get_tile_coordinates(level, (int(c), int(r)))
            assert (x, y, sl, w, h) == (
                reads["x0"][i],
                reads["y0"][i],
                reads["slide_level"],
                reads["read_w"][i],
                reads["read_h"][i],
            )
            assert (reads["z_w"][i], reads["z_h"][i]) == dz.get_tile_dimensions(level, (int(c), int(r)))
    with pytest.raises(ValueError, match=r"outside"):
        grid.tile_reads(dz.level_count - 1, np.array([99]), np.array([0]))


def test_render_tile_pads_only_when_asked():
    region = np.full((100, 60, 3), 200, np.uint8)
    assert render_tile(region, (60, 100), 224, pad=False).shape == (100, 60, 3)
    padded = render_tile(region, (60, 100), 224, pad=True)
    assert padded.shape == (224, 224, 3) and padded[:100, :60].min() == 200 and padded[100:].max() == 0


def test_n_tiles_subset_is_a_seeded_permutation_prefix(cmu_svs: str):
    with OpenSlideBackend().open(cmu_svs) as handle:
        full = DeepZoomTiling(overview_side=512).tiles(handle)
        sub = DeepZoomTiling(n_tiles=5, seed=3, overview_side=512).tiles(handle)
        again = DeepZoomTiling(n_tiles=5, seed=3, overview_side=512).tiles(handle)
        first = DeepZoomTiling(n_tiles=5, random_sampling=False, overview_side=512).tiles(handle)
    order = np.random.RandomState(3).permutation(len(full))[:5]
    np.testing.assert_array_equal(sub.coords, full.coords[order])
    np.testing.assert_array_equal(again.coords, sub.coords)
    np.testing.assert_array_equal(first.coords, full.coords[:5])


def test_grid_tiling_is_the_core_grid(feat_slides):
    slide = feat_slides["40x"]
    with OpenSlideBackend().open(slide) as handle:
        tiles = GridTiling(tissue_threshold=0.2).tiles(handle)
        props = handle.properties
        overview, ds = handle.read_overview(2048)
    plan = plan_read(props, 224, target_mpp=0.5)
    mask = OtsuTissueDetector().detect(overview, ds)
    expected = GridSampler(patch_size=224, target_mpp=0.5, tissue_threshold=0.2).grid(mask, plan, props)
    assert [(p.x0, p.y0) for p in expected] == [tuple(v) for v in tiles.xy]
    assert tiles.resize == "area" and tiles.read_w[0] == plan.read_size == 444
    assert tiles.attrs["mpp"] == pytest.approx(0.5, rel=0.003)
    np.testing.assert_array_equal(tiles.coords[:, 1:], tiles.xy)


def test_unusable_slides_raise_named_errors(feat_slides):
    backend = OpenSlideBackend()
    with backend.open(feat_slides["blank"]) as handle:
        with pytest.raises(NoTissueError, match=r"c-blank.svs.*no 224-px DeepZoom tile"):
            DeepZoomTiling().tiles(handle)
        with pytest.raises(NoTissueError, match=r"c-blank.svs.*grid tile"):
            GridTiling().tiles(handle)
    with backend.open(feat_slides["20x"]) as handle:
        no_mpp = dataclasses.replace(handle.properties, mpp_level0=None, mpp_source="none")
        with pytest.raises(MissingMppError, match=r"b20x.svs"):
            DeepZoomTiling().tiles(handle, no_mpp)
        odd = dataclasses.replace(handle.properties, mpp_level0=0.35)  # DeepZoom levels at 0.35 and 0.70 µm/px
        with pytest.raises(ResolutionUnavailableError, match=r"no DeepZoom level is within 10%"):
            DeepZoomTiling().tiles(handle, odd)


def test_configs_validate():
    with pytest.raises(ValueError, match=r"n_tiles"):
        DeepZoomTiling(n_tiles=0)
    with pytest.raises(ValueError, match=r"tissue_threshold"):
        GridTiling(tissue_threshold=1.5)
    with pytest.raises(ValueError, match=r"target_mpp"):
        GridTiling(target_mpp=0)


class _ConstantTissue(torch.nn.Module):
    """Calls "tissue" everywhere (logit +10): the test is about where and how the detector runs."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1]) + self.bias


def test_tilings_run_a_model_detector_at_its_resolution_with_its_disk_cache(feat_slides, tmp_path):
    """Tilings go through ``detect_slide`` (the streaming pipeline's entry point), not ``detect`` on the overview."""
    from wsistream.tissue import ModelTissueDetector

    weights = tmp_path / "constant.pt"
    torch.save(_ConstantTissue().state_dict(), weights)
    detector = ModelTissueDetector(_ConstantTissue, weights=weights, input_mpp=4.0, tile_size=128, cache_dir=tmp_path)
    slide = feat_slides["40x"]  # 1600 x 1200 at 0.252 µm/px: 101 x 76 at 4 µm/px
    for tiling in (DeepZoomTiling(tissue_detector=detector), GridTiling(tissue_detector=detector)):
        with OpenSlideBackend().open(slide) as handle:
            tiles = tiling.tiles(handle)
        assert len(tiles) > 0
    (cached,) = tmp_path.glob("*.npz")  # written by the first tiling, read by the second
    assert np.load(cached)["mask"].shape == (76, 101)
