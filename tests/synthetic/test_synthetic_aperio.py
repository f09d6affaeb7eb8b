"""The written file is an Aperio SVS to OpenSlide, TiffSlide and tifffile alike."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile
import tiffslide

from wsistream.synthetic import write_aperio_svs

from .helpers import HEIGHT, WIDTH, read_rgb

LEVELS = ((WIDTH, HEIGHT), (WIDTH // 4, HEIGHT // 4), (WIDTH // 16, HEIGHT // 16))


def test_openslide_sees_aperio_pyramid(rgb_svs: Path) -> None:
    slide = openslide.OpenSlide(rgb_svs)
    props = slide.properties
    assert props["openslide.vendor"] == "aperio"
    assert float(props["openslide.mpp-x"]) == 0.252
    assert float(props["openslide.mpp-y"]) == 0.252
    assert props["openslide.objective-power"] == "40"
    assert slide.level_count == 3
    assert slide.level_downsamples == (1.0, 4.0, 16.0)
    assert slide.level_dimensions == LEVELS
    assert int(props["openslide.level[0].tile-width"]) == 240
    assert slide.associated_images["thumbnail"].size == (1024, 768)


def test_tiffslide_sees_the_same_pyramid(rgb_svs: Path) -> None:
    slide = tiffslide.TiffSlide(rgb_svs)
    props = slide.properties
    assert props["tiffslide.vendor"] == "aperio"
    assert props["tiffslide.mpp-x"] == pytest.approx(0.252)
    assert props["tiffslide.mpp-y"] == pytest.approx(0.252)
    assert float(props["tiffslide.objective-power"]) == 40
    assert slide.level_dimensions == LEVELS
    assert slide.level_downsamples == (1.0, 4.0, 16.0)


def test_tiffslide_and_openslide_decode_identical_pixels(rgb_svs: Path) -> None:
    ref = read_rgb(openslide.OpenSlide(rgb_svs), (300, 200), 0, (700, 500))
    got = np.asarray(tiffslide.TiffSlide(rgb_svs).read_region((300, 200), 0, (700, 500)))[..., :3]
    assert np.array_equal(ref, got)


def _jpeg_markers(stream: bytes) -> list[int]:
    """Markers from SOI up to and including SOS."""
    markers, pos = [], 2
    while True:
        marker = stream[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        pos += 2 + int.from_bytes(stream[pos + 2 : pos + 4], "big")


def test_page_layout_and_tiles_match_real_aperio(rgb_svs: Path) -> None:
    with tifffile.TiffFile(rgb_svs) as tif:
        pages = list(tif.pages)
        assert len(pages) == 4  # level 0, thumbnail, level 1, level 2
        level0, thumb = pages[0], pages[1]
        assert level0.description.startswith("Aperio Image Library v12.0.15 \r\n2048x1536 [0,0 2048x1536] (240x240)")
        assert "JPEG/RGB Q=80|AppMag = 40|MPP = 0.2520|" in level0.description
        assert [p.is_tiled for p in pages] == [True, False, True, True]
        assert thumb.rowsperstrip == 16
        assert " -> 1024x768 - |" in thumb.description
        assert all(p.photometric == tifffile.PHOTOMETRIC.RGB for p in pages)
        assert all(p.compression == tifffile.COMPRESSION.JPEG for p in pages)
        tables = level0.jpegtables
        assert tables is not None and len(tables) == 289  # one DQT + two DHT, as in CMU-1-Small-Region.svs
        assert all(p.jpegtables == tables for p in pages)
        fh = tif.filehandle
        fh.seek(level0.dataoffsets[5])
        tile = fh.read(level0.databytecounts[5])
    # Abbreviated stream: SOI, SOF0, SOS only; no JFIF (APP0) or Adobe (APP14) marker; ids 0, 1, 2.
    assert _jpeg_markers(tile) == [0xC0, 0xDA]
    assert tile[2 + 4 + 6 : 2 + 4 + 15 : 3] == bytes((0, 1, 2))
    # The Aperio colour trap is reproduced: a marker-guessing decoder reads YCbCr and gets it wrong ...
    whole = tables[:-2] + tile[2:]
    guessed = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    truth = read_rgb(openslide.OpenSlide(rgb_svs), (5 * 240, 0), 0, (240, 240))
    assert np.abs(guessed.astype(int) - truth).mean() > 20
    # ... while decoding as RGB with the shared tables is pixel-exact against OpenSlide (NOTES.md).
    exact = imagecodecs.jpeg8_decode(tile, tables=tables, colorspace="RGB", outcolorspace="RGB")
    assert np.array_equal(exact, truth)


def test_ycbcr_pages_declare_subsampling(ycbcr420_svs: Path) -> None:
    with tifffile.TiffFile(ycbcr420_svs) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.YCBCR
        assert page.subsampling == (2, 2)
        assert "JPEG/YCbCr" in page.description


def test_single_level_slide(tmp_path: Path) -> None:
    path = write_aperio_svs(tmp_path / "one.svs", width=1000, height=700, downsamples=(1,))
    slide = openslide.OpenSlide(path)
    assert slide.level_count == 1
    assert slide.level_dimensions == ((1000, 700),)
    assert slide.associated_images["thumbnail"].size == (1000, 700)
    assert tiffslide.TiffSlide(path).level_count == 1


def test_level_sizes_are_floored_like_aperio(tmp_path: Path) -> None:
    path = write_aperio_svs(tmp_path / "odd.svs", width=1001, height=750, downsamples=(1, 4))
    slide = openslide.OpenSlide(path)
    assert slide.level_dimensions == ((1001, 750), (250, 187))
    # Only exact when 4 divides both sides; OpenSlide averages the two axis ratios.
    assert slide.level_downsamples[1] == pytest.approx((1001 / 250 + 750 / 187) / 2)


def test_missing_mpp_and_magnification_are_omitted(tmp_path: Path) -> None:
    path = write_aperio_svs(tmp_path / "bare.svs", width=512, height=512, mpp=None, app_mag=None, downsamples=(1,))
    props = openslide.OpenSlide(path).properties
    assert props["openslide.vendor"] == "aperio"
    assert "openslide.mpp-x" not in props and "aperio.MPP" not in props
    assert "openslide.objective-power" not in props
    ts_props = tiffslide.TiffSlide(path).properties
    assert ts_props["tiffslide.mpp-x"] is None
    assert ts_props["tiffslide.objective-power"] is None


@pytest.mark.parametrize("text", ["0", "nan"])
def test_raw_mpp_text_is_written_verbatim(tmp_path: Path, text: str) -> None:
    path = write_aperio_svs(tmp_path / f"mpp {text}.svs", width=512, height=512, mpp_text=text, downsamples=(1,))
    props = openslide.OpenSlide(path).properties
    assert props["aperio.MPP"] == text
    assert f"|MPP = {text}|" in props["openslide.comment"]
    if text == "0":
        assert props["openslide.mpp-x"] == "0"  # OpenSlide passes a zero through ...
    else:
        assert "openslide.mpp-x" not in props  # ... but drops NaN
    mpp = tiffslide.TiffSlide(path).properties["tiffslide.mpp-x"]
    assert mpp == 0 if text == "0" else math.isnan(float(mpp))


def test_path_with_space_and_unicode(tmp_path: Path) -> None:
    folder = tmp_path / "dir with spaces"
    folder.mkdir()
    path = write_aperio_svs(folder / "slide ü 😐.svs", width=480, height=480, downsamples=(1, 2))
    assert path.exists() and not list(folder.glob(".*partial"))
    assert openslide.OpenSlide(path).properties["openslide.vendor"] == "aperio"
    assert tiffslide.TiffSlide(path).level_count == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"downsamples": (2, 4)}, "start with 1"),
        ({"downsamples": (1, 4, 4)}, "strictly increasing"),
        ({"downsamples": (1, 1024)}, "empty level"),
        ({"tile_size": 250}, "multiple of 16"),
        ({"subsampling": (2, 2)}, "needs photometric='ycbcr'"),
        ({"photometric": "lab"}, "photometric"),
        ({"quality": 0}, "quality"),
        ({"mpp": 0.0}, "mpp_text"),
        ({"corrupt_tile": (3, 0)}, "outside"),
        ({"width": 0}, "width must be >= 1, got 0"),
    ],
)
def test_invalid_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"width": 480, "height": 480, **kwargs}
    with pytest.raises(ValueError, match=match):
        write_aperio_svs(tmp_path / "bad.svs", **args)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
