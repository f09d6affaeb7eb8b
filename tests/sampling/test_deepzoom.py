"""Phikon's tiling streamed: the pixels of DeepZoomGenerator.get_tile, addressed as (tile_level, col, row)."""

import numpy as np
import pytest
from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import DeepZoomSampler


@pytest.mark.parametrize("backend", [OpenSlideBackend(), TiffSlideBackend()], ids=lambda b: b.name)
@pytest.mark.parametrize("slide_name", ["CMU-1-Small-Region.svs", "synthetic-40x.svs"])
def test_deepzoom_tiles_equal_get_tile(backend, slide_name, shared_slide):
    path = shared_slide(slide_name)
    sampler = DeepZoomSampler(tile_size=224, target_mpp=0.5, tissue_threshold=0.5)
    pipe = PatchPipeline(slide_paths=[path], sampler=sampler, backend=backend, patches_per_slide=-1)
    results = list(pipe)
    assert len(results) > 5
    with OpenSlide(path) as osr:
        dz = DeepZoomGenerator(osr, tile_size=224, overlap=0, limit_bounds=False)
        props = results[0].slide_metadata.properties
        for r in results[:12]:
            level, col, row = sampler.address(r.coordinate, props)
            expected = np.asarray(dz.get_tile(level, (col, row)).convert("RGB"))
            np.testing.assert_array_equal(r.image, expected)
            assert abs(r.coordinate.mpp - 0.5) / 0.5 < 0.02
    coords = [(r.coordinate.x0, r.coordinate.y0) for r in results]
    assert len(coords) == len(set(coords))


def test_deepzoom_level_on_a_40x_slide(synthetic_40x_svs):
    pipe = PatchPipeline(slide_paths=[synthetic_40x_svs], sampler=DeepZoomSampler(), patches_per_slide=3)
    c = next(iter(pipe)).coordinate
    # 0.252 µm/px x 2 = 0.504: DeepZoom's power-of-two level, read as 448 level-0 px -> 224
    assert (c.level, c.read_size, c.patch_size) == (0, 448, 224) and c.mpp == pytest.approx(0.504)
    assert c.x0 % 448 == 0 and c.y0 % 448 == 0
