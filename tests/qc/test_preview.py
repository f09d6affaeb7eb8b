import cv2
import numpy as np

from wsistream.qc import MASK_COLOUR, overlay_mask, preview_slide
from wsistream.recipes import build_pipeline


def test_overlay_colour_only_on_tissue():
    overview = np.full((100, 120, 3), 240, np.uint8)
    mask = np.zeros((100, 120), bool)
    mask[20:60, 30:90] = True
    out = overlay_mask(overview, mask)
    tinted = np.any(out != overview, axis=2)
    # the tint (and its contour line) stays on the tissue cells
    assert tinted[mask].mean() > 0.99 and not tinted[~mask].any()
    assert out[40, 60, 1] > out[40, 60, 0]  # green-ish where MASK_COLOUR was blended
    assert MASK_COLOUR[1] > MASK_COLOUR[0]


def test_preview_png_shows_the_stream(tmp_path, synthetic_40x_svs):
    pipeline = build_pipeline("phikon-v2", [synthetic_40x_svs], views=True, resize="opencv")
    png, results = preview_slide(pipeline, synthetic_40x_svs, tmp_path / "p.png", n_patches=6)
    image = cv2.imread(str(png))[:, :, ::-1]
    assert image.shape[0] > 500 and image.shape[1] > 1000
    assert len(results) == 6 and all(r.views for r in results)
    # the red patch boxes are drawn on the overview
    red = (image[:, :, 0] > 200) & (image[:, :, 1] < 60) & (image[:, :, 2] < 60)
    assert red.sum() > 100
    # a pipeline leaving its views to the GPU previews the same patches with the same views
    device = build_pipeline("phikon-v2", [synthetic_40x_svs], views=True, resize="opencv", view_rendering="device")
    _, same = preview_slide(device, synthetic_40x_svs, tmp_path / "d.png", n_patches=6)
    for a, b in zip(results, same, strict=True):
        assert a.coordinate == b.coordinate and all(np.array_equal(a.views[k], b.views[k]) for k in a.views)


def test_preview_exports_the_mask_it_shows_as_geojson(tmp_path, cmu_svs):
    """``wsistream preview --geojson DIR``: the recipe's own mask, re-importable cell for cell."""
    import json

    from typer.testing import CliRunner

    from wsistream.backends import OpenSlideBackend
    from wsistream.cli.main import app
    from wsistream.tissue import GeoJSONTissueDetector

    out = tmp_path / "geo"
    res = CliRunner().invoke(
        app, ["preview", cmu_svs, "--recipe", "phikon", "-o", str(tmp_path / "p.png"), "--geojson", str(out)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "CMU-1-Small-Region.svs.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and doc["features"]
    pipeline = build_pipeline("phikon", [cmu_svs])
    with OpenSlideBackend().open(cmu_svs) as handle:
        props = pipeline.mpp_policy.apply(handle.properties)
        shown = pipeline.tissue_mask(handle, props)
        back = GeoJSONTissueDetector(str(out)).detect_slide(handle, props, pipeline.overview_side)
    assert back.mask.shape == shown.mask.shape
    assert (back.mask == shown.mask).mean() > 0.99 and shown.mask.any()
