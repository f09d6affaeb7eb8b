"""OME-TIFF µm/px from the OME-XML PhysicalSizeX/Y and their units, through both backends."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.backends._ome import parse_ome_mpp


def _ome(path: Path, **meta) -> str:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (512, 640, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", metadata={"axes": "YXS", **meta})
    return str(path)


@pytest.mark.parametrize("backend", [OpenSlideBackend(), TiffSlideBackend()])
@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"PhysicalSizeX": 0.2527, "PhysicalSizeY": 0.2527}, 0.2527),  # unit omitted: µm (OME default)
        (
            {"PhysicalSizeX": 252.7, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 252.7, "PhysicalSizeYUnit": "nm"},
            0.2527,
        ),
        ({"PhysicalSizeX": 0.0005, "PhysicalSizeXUnit": "mm", "PhysicalSizeY": 0.0005, "PhysicalSizeYUnit": "mm"}, 0.5),
        ({"PhysicalSizeX": 0.5, "PhysicalSizeY": 1.0}, None),  # anisotropic: no single µm/px
        ({}, None),
    ],
)
def test_ome_physical_size(tmp_path: Path, backend, meta, expected):
    slide = _ome(tmp_path / "s.ome.tif", **meta)
    with backend.open(slide) as handle:
        props = handle.properties
    assert props.level_dimensions[0] == (640, 512)
    if expected is None:
        assert props.mpp_level0 is None and props.mpp_source == "none"
    else:
        assert props.mpp_level0 == pytest.approx(expected) and props.mpp_source == "slide"


def test_parse_units_and_garbage():
    ns = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'
    xml = f'<OME {ns}><Image><Pixels PhysicalSizeX="2500" PhysicalSizeXUnit="Å" PhysicalSizeY="0.25"/></Image></OME>'
    assert parse_ome_mpp(xml) == pytest.approx((0.25, 0.25))
    assert parse_ome_mpp(xml.replace("Å", "furlong")) is None
    assert parse_ome_mpp("<not xml") is None
