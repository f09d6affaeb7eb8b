"""Tissue masks to GeoJSON (level-0 pixels, holes as interior rings) and back, as the mask of extraction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wsistream.backends import OpenSlideBackend
from wsistream.tissue import (
    GeoJSONTissueDetector,
    OtsuTissueDetector,
    TissueAnnotationError,
    TissueMask,
    geojson_to_mask,
    mask_to_geojson,
)


def test_holes_are_interior_rings_in_level0_pixels():
    grid = np.zeros((20, 30), bool)
    grid[2:12, 3:13] = True
    grid[5:8, 6:9] = False  # a hole
    grid[15:18, 20:28] = True  # a second region
    mask = TissueMask(grid, 4.0, 2.0)
    doc = mask_to_geojson(mask)
    polys = sorted((f["geometry"]["coordinates"] for f in doc["features"]), key=len, reverse=True)
    assert [len(p) for p in polys] == [2, 1]  # outline + hole, then an outline alone
    outer, hole = (np.array(r) for r in polys[0])
    assert (outer[0] == outer[-1]).all() and (hole[0] == hole[-1]).all()  # closed rings
    # boundary-cell centres in level-0 px: columns 3..12 -> x = (c + 0.5) * 4, rows 2..11 -> y = (r + 0.5) * 2
    assert (outer[:, 0].min(), outer[:, 0].max(), outer[:, 1].min(), outer[:, 1].max()) == (14, 50, 5, 23)
    assert (hole[:, 0].min(), hole[:, 0].max()) == ((5 + 0.5) * 4, (9 + 0.5) * 4)  # tissue cells around the hole
    assert doc["features"][0]["properties"]["classification"] == {"name": "Tissue"}
    back = geojson_to_mask(json.loads(json.dumps(doc)), grid.shape, (4.0, 2.0))
    np.testing.assert_array_equal(back.mask, grid)


def test_real_slide_mask_round_trips_through_the_cli(cmu_svs: str, tmp_path: Path):
    from wsistream.cli.main import app

    out = CliRunner().invoke(app, ["tissue", cmu_svs, "--out", str(tmp_path), "--overview-side", "512"])
    assert out.exit_code == 0, out.output
    path = tmp_path / f"{Path(cmu_svs).name}.geojson"
    with OpenSlideBackend().open(cmu_svs) as handle:
        ours = OtsuTissueDetector().detect_slide(handle, handle.properties, 512)
        back = GeoJSONTissueDetector(str(tmp_path)).detect_slide(handle, handle.properties, 512)
    assert path.is_file() and not ours.is_empty
    assert back.mask.shape == ours.mask.shape and back.downsample_x == pytest.approx(ours.downsample_x, rel=1e-3)
    np.testing.assert_array_equal(back.mask, ours.mask)  # re-imported cell for cell
    missing = CliRunner().invoke(app, ["tissue", str(tmp_path / "none.svs"), "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "none.svs" in missing.output  # recorded, named, exit 1


def test_an_edited_geojson_is_the_extraction_mask(written_20x: str, tmp_path: Path):
    from wsistream.features import DeepZoomTiling

    slide = written_20x  # 3000 x 2400 at 0.5 µm/px: 224-px DeepZoom tiles at level 0
    box = [[0, 0], [460, 0], [460, 240], [0, 240], [0, 0]]  # an annotation drawn in QuPath, level-0 px
    doc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [box]}}],
    }
    (tmp_path / "w20x.geojson").write_text(json.dumps(doc))
    tiling = DeepZoomTiling(
        tissue_threshold=0.9, overview_side=512, tissue_detector=GeoJSONTissueDetector(str(tmp_path))
    )
    with OpenSlideBackend().open(slide) as handle:
        tiles = tiling.tiles(handle)
    assert sorted(map(tuple, tiles.xy.tolist())) == [(0, 0), (224, 0)]  # the two tiles inside the box
    (tmp_path / "w20x.geojson").unlink()
    with (
        OpenSlideBackend().open(slide) as handle,
        pytest.raises(TissueAnnotationError, match=r"w20x.svs.*no tissue GeoJSON"),
    ):
        tiling.tiles(handle)


def test_extract_cli_takes_the_geojson_masks(written_20x: str, tmp_path: Path):
    import torch

    from wsistream.cli.main import app
    from wsistream.features import read_features
    from wsistream.features.vit_checkpoints import PlainViT

    weights = tmp_path / "dinov2.pth"
    torch.save({"teacher": PlainViT(64, 1, 1, 32, 64, 7).state_dict()}, weights)
    masks = tmp_path / "masks"
    masks.mkdir()
    box = [[0, 0], [460, 0], [460, 240], [0, 240], [0, 0]]
    (masks / "w20x.svs.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [box]}))
    args = ["extract", "--encoder", "dinov2", "--weights", str(weights), "--slides", written_20x]
    args += [
        "--out",
        str(tmp_path / "out"),
        "--format",
        "h5",
        "--tissue-geojson",
        str(masks),
        "--tissue-threshold",
        "0.9",
    ]
    out = CliRunner().invoke(app, [*args, "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert out.exit_code == 0, out.output
    feats = read_features(tmp_path / "out" / "dinov2" / "default" / "w20x.h5")
    assert sorted(map(tuple, feats.coords[:, 1:].astype(int).tolist())) == [(0, 0), (224, 0)]
    bad = CliRunner().invoke(app, [*args[:-4], "--tissue-geojson", str(tmp_path / "nowhere"), "--device", "cpu"])
    assert bad.exit_code == 2 and "nowhere" in bad.output
