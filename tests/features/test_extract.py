"""Pipeline features equal a direct model call on the same tiles; files round-trip through the readers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import torch
from openslide.deepzoom import DeepZoomGenerator

from wsistream.errors import NoTissueError
from wsistream.features import (
    DeepZoomTiling,
    ExtractionConfig,
    GridTiling,
    TileEncoderRunner,
    extract_slide,
    extract_tile_dataset,
    iter_feature_dir,
    read_features,
    read_tile_features,
)


def _direct(encoder, tiles: np.ndarray, ref_pixels) -> np.ndarray:
    with torch.no_grad():
        return encoder.model(pixel_values=ref_pixels(tiles)).last_hidden_state[:, 0].numpy()


def _dzg_tiles(slide: str, coords: np.ndarray) -> np.ndarray:
    dz = DeepZoomGenerator(openslide.OpenSlide(slide), tile_size=224, overlap=0)
    return np.stack([np.asarray(dz.get_tile(int(lv), (int(c), int(r)))) for lv, c, r in coords])


CPU = ExtractionConfig(batch_size=2, num_workers=0, device="cpu")


def test_deepzoom_extraction_equals_direct_call_on_get_tile_pixels(phikon, cmu_svs: str, ref_pixels):
    result = extract_slide(cmu_svs, phikon, DeepZoomTiling(n_tiles=5, seed=1, overview_side=512), CPU)
    assert result.features.shape == (5, 32) and result.features.dtype == np.float32
    expected = _direct(phikon, _dzg_tiles(cmu_svs, result.tiles.coords), ref_pixels)
    np.testing.assert_allclose(result.features, expected, rtol=1e-5, atol=1e-5)
    assert result.attrs["encoder"] == "phikon" and result.attrs["tile_level"] == 12


def test_grid_extraction_equals_direct_call_and_workers_agree(phikon, feat_slides, ref_pixels):
    slide = feat_slides["40x"]
    tiling = GridTiling(tissue_threshold=0.2)
    result = extract_slide(slide, phikon, tiling, CPU)
    osr = openslide.OpenSlide(slide)
    tiles = []
    for x, y in result.tiles.xy:
        region = np.asarray(osr.read_region((int(x), int(y)), 0, (444, 444)).convert("RGB"))
        tiles.append(cv2.resize(region, (224, 224), interpolation=cv2.INTER_AREA))
    np.testing.assert_allclose(result.features, _direct(phikon, np.stack(tiles), ref_pixels), rtol=1e-5, atol=1e-5)
    with_worker = extract_slide(slide, phikon, tiling, ExtractionConfig(batch_size=3, num_workers=1, device="cpu"))
    np.testing.assert_allclose(with_worker.features, result.features, rtol=1e-6, atol=1e-6)


def test_runner_rejects_wrong_output_shape(phikon):
    runner = TileEncoderRunner(phikon, CPU)
    object.__setattr__(runner, "encoder", type(phikon)("bad", phikon.model, 7, forward=phikon.forward))
    with pytest.raises(ValueError, match=r"returned \(1, 32\), expected \(B, 7\)"):
        runner(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))


def test_empty_tissue_raises(phikon, feat_slides):
    with pytest.raises(NoTissueError, match=r"c-blank.svs"):
        extract_slide(feat_slides["blank"], phikon, DeepZoomTiling(), CPU)


def test_histossl_and_h5_round_trip(phikon, feat_slides, tmp_path: Path):
    result = extract_slide(feat_slides["20x"], phikon, DeepZoomTiling(tissue_threshold=0.2), CPU)
    n = result.n_tiles
    npy = result.write_histossl(tmp_path / "npy" / "b20x.svs")
    raw = np.load(npy)
    assert raw.shape == (n, 3 + 32) and raw.dtype == np.float32
    np.testing.assert_array_equal(np.load(npy.parent / "coords.npy"), raw[:, :3])
    back = read_features(npy.parent)
    np.testing.assert_array_equal(back.features, result.features)
    np.testing.assert_array_equal(back.coords, result.tiles.coords)
    assert back.slide_id == "b20x.svs" and back.attrs["tiling"] == "deepzoom" and back.attrs["layout"] == "histossl"
    h5 = result.write_h5(tmp_path / "h5" / "b20x.h5")
    back5 = read_features(h5)
    np.testing.assert_array_equal(back5.features, result.features)
    np.testing.assert_array_equal(back5.coords[:, 1:], result.tiles.xy)
    assert back5.attrs["encoder"] == "phikon" and back5.attrs["patch_size"] == 224 and back5.attrs["mpp"] == 0.5
    assert back5.slide_id == "b20x"
    assert sorted(f.slide_id for f in iter_feature_dir(tmp_path)) == ["b20x", "b20x.svs"]
    np.testing.assert_array_equal(back.as_histossl_array(), raw)


def test_tile_dataset_features(phikon, tmp_path: Path, ref_pixels):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {}
    for cls in ("ADI", "TUM"):
        (tmp_path / "tiles" / cls).mkdir(parents=True)
        for k in range(2):
            arr = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "tiles" / cls / f"{cls}-{k}.tif")
            images[f"{cls}-{k}"] = arr
    out = extract_tile_dataset(tmp_path / "tiles", tmp_path / "out", phikon, CPU)
    assert out.name == "tile_features.npy"
    assert np.load(tmp_path / "out" / "tile_ids.npy").shape == (4, 1)
    tf = read_tile_features(tmp_path / "out")
    assert list(tf.tile_ids) == ["ADI-0", "ADI-1", "TUM-0", "TUM-1"] and list(tf.labels) == ["ADI", "ADI", "TUM", "TUM"]
    expected = _direct(phikon, np.stack([images[i] for i in tf.tile_ids]), ref_pixels)
    np.testing.assert_allclose(tf.features, expected, rtol=1e-5, atol=1e-5)
    # rl_benchmarks saves ``image_id.values``: an (N,) object array
    np.save(tmp_path / "out" / "tile_ids.npy", np.array(["a", "b", "c", "d"], dtype=object), allow_pickle=True)
    assert list(read_tile_features(tmp_path / "out").tile_ids) == ["a", "b", "c", "d"]


def test_config_validation():
    with pytest.raises(ValueError, match=r"batch_size"):
        ExtractionConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"device="):
        ExtractionConfig(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CUDA is not available"):
            ExtractionConfig(device="cuda").resolve_device()
