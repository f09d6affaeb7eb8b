"""The JPEG tile fast path (backends/_jpeg_tiles.py) against OpenSlide's read_region, pixel for pixel."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import struct

import numpy as np
import openslide
import pytest
import tifffile

from wsistream.backends._jpeg_tiles import (
    JpegTileError,
    JpegTileReader,
    TileCache,
    check_jpeg_stream,
)
from wsistream.backends.base import SlideHandle
from wsistream.errors import TileDecodeError
from wsistream.synthetic import write_aperio_svs
from wsistream.types import SlideProperties

# 1000 x 760 with 240-px tiles: the last tile column is 40 px wide and the last row 40 px high (edge
# tiles), and levels 1/2 (500 x 380, 250 x 190) have edge tiles too.
LAYOUTS = {
    "rgb": dict(photometric="rgb"),
    "ycbcr444": dict(photometric="ycbcr", subsampling=(1, 1)),
    "ycbcr420": dict(photometric="ycbcr", subsampling=(2, 2)),
}


def _write(path, **kw):
    args = dict(width=1000, height=760, mpp=0.5, app_mag=20, downsamples=(1, 2, 4), tile_size=240, seed=11)
    args.update(kw)
    return str(write_aperio_svs(path, **args))


@pytest.fixture(scope="module")
def fast_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fast_tiles")


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def layout_slide(request, fast_dir):
    name = request.param
    return name, _write(fast_dir / f"{name}.svs", **LAYOUTS[name])


@pytest.fixture(scope="module")
def rgb_slide(fast_dir):
    return _write(fast_dir / "rgb-plain.svs")


def _open(path, **kw):
    with openslide.OpenSlide(path) as osr:
        dims, dss = osr.level_dimensions, osr.level_downsamples
    reader = JpegTileReader.try_open(path, dims, dss, **kw)
    assert reader is not None, JpegTileReader.refusal_reason(path, dims)
    return reader


def _osr_region(osr, level, x, y, w, h):
    """OpenSlide's pixels for level pixels (x, y) of ``level`` (integer downsamples: no resampling)."""
    ds = osr.level_downsamples[level]
    assert ds == int(ds)
    rgba = np.asarray(osr.read_region((int(x * ds), int(y * ds)), level, (w, h)))
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


def _random_regions(rng, level_w, level_h, tile, n, max_side=600):
    """Regions inside the level, most crossing tile borders, some touching the right/bottom edge."""
    out = []
    for i in range(n):
        w = int(rng.integers(1, min(level_w, max_side) + 1))
        h = int(rng.integers(1, min(level_h, max_side) + 1))
        if i % 5 == 0:  # flush with the bottom-right corner: edge tiles
            out.append((level_w - w, level_h - h, w, h))
            continue
        if i % 5 == 1:  # straddle a tile corner
            cx = tile * int(rng.integers(1, max(2, level_w // tile + 1)))
            cy = tile * int(rng.integers(1, max(2, level_h // tile + 1)))
            x, y = min(max(0, cx - w // 2), level_w - w), min(max(0, cy - h // 2), level_h - h)
            out.append((x, y, w, h))
            continue
        out.append((int(rng.integers(0, level_w - w + 1)), int(rng.integers(0, level_h - h + 1)), w, h))
    return out


def _assert_matches_openslide(path, reader, *, n_random, seed=0, whole_levels=True):
    rng = np.random.default_rng(seed)
    with openslide.OpenSlide(path) as osr:
        for level, (lw, lh) in enumerate(osr.level_dimensions):
            tile = reader.levels[level].tile_width
            regions = _random_regions(rng, lw, lh, tile, n_random)
            if whole_levels:
                regions.append((0, 0, lw, lh))
            for x, y, w, h in regions:
                fast = reader.read(level, x, y, w, h)
                assert fast.shape == (h, w, 3) and fast.dtype == np.uint8 and fast.flags.c_contiguous
                ref = _osr_region(osr, level, x, y, w, h)
                diff = int(np.abs(fast.astype(np.int16) - ref).max())
                assert diff == 0, f"level {level} region {(x, y, w, h)}: max abs diff {diff}"


# -- exactness ----------------------------------------------------------------------------------


def test_cmu_real_aperio_rgb_with_shared_tables_is_exact(cmu_svs):
    reader = _open(cmu_svs)
    with reader:
        lv = reader.levels[0]
        assert lv.layout == "rgb" and lv.tables is not None  # Aperio JPEG/RGB, abbreviated tiles
        # 2220 x 2967 with 240-px tiles: the last column (60 px) and row (87 px) are edge tiles
        assert lv.width % lv.tile_width and lv.height % lv.tile_height
        _assert_matches_openslide(cmu_svs, reader, n_random=40)


def test_shared_synthetic_40x_levels_0_1_2_are_exact(synthetic_40x_svs):
    reader = _open(synthetic_40x_svs)
    with reader:
        assert [lv.page for lv in reader.levels] == [0, 2, 3]  # the stripped thumbnail (page 1) is skipped
        _assert_matches_openslide(synthetic_40x_svs, reader, n_random=25, whole_levels=False)
        with openslide.OpenSlide(synthetic_40x_svs) as osr:
            for level in (1, 2):
                lw, lh = osr.level_dimensions[level]
                np.testing.assert_array_equal(reader.read(level, 0, 0, lw, lh), _osr_region(osr, level, 0, 0, lw, lh))


def test_written_layouts_are_exact_at_every_level(layout_slide):
    name, path = layout_slide
    reader = _open(path)
    with reader:
        assert {lv.layout for lv in reader.levels} == {"rgb" if name == "rgb" else "ycbcr"}
        # the tiles really are 4:4:4 / 4:2:0: the SOF's luma sampling factors say so
        raw = reader.raw_tile(0, 0, 0)
        sof = raw.find(b"\xff\xc0")
        luma_sampling = raw[sof + 11]
        assert luma_sampling == (0x22 if name == "ycbcr420" else 0x11)
        _assert_matches_openslide(path, reader, n_random=30, seed=hash(name) % 1000)


def test_strict_and_unverified_modes_give_the_same_pixels(rgb_slide):
    with (
        _open(rgb_slide, verify="structure") as a,
        _open(rgb_slide, verify="strict") as b,
        _open(rgb_slide, verify="none") as c,
    ):
        for level, lv in enumerate(a.levels):
            full = a.read(level, 0, 0, lv.width, lv.height)
            np.testing.assert_array_equal(full, b.read(level, 0, 0, lv.width, lv.height))
            np.testing.assert_array_equal(full, c.read(level, 0, 0, lv.width, lv.height))


def test_bigtiff_is_served(fast_dir):
    path = _write(fast_dir / "big.svs", width=600, height=500, downsamples=(1, 4), bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    with _open(path) as reader:
        _assert_matches_openslide(path, reader, n_random=5)


def test_tiffslide_view_of_the_pyramid_is_accepted(synthetic_40x_svs):
    import tiffslide

    with tiffslide.TiffSlide(synthetic_40x_svs) as ts:
        dims, dss = ts.level_dimensions, ts.level_downsamples
        reader = JpegTileReader.try_open(synthetic_40x_svs, dims, dss)
        assert reader is not None
        with reader:
            np.testing.assert_array_equal(
                reader.read(1, 130, 70, 300, 200), ts.read_region((130 * 4, 70 * 4), 1, (300, 200), as_array=True)
            )


# -- refusals -----------------------------------------------------------------------------------


def _dims(path):
    with openslide.OpenSlide(path) as osr:
        return osr.level_dimensions, osr.level_downsamples


def test_refuses_ndpi(shared_slide):
    path = shared_slide("test3-DAPI-2.ndpi")
    dims, dss = _dims(path)
    assert JpegTileReader.try_open(path, dims, dss) is None
    assert "ndpi" in JpegTileReader.refusal_reason(path, dims)


def test_refuses_non_jpeg_tiff(shared_slide):
    path = shared_slide("boxes.tiff")
    dims, dss = _dims(path)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != 7
    assert JpegTileReader.try_open(path, dims, dss) is None
    assert "not JPEG" in JpegTileReader.refusal_reason(path, dims)


def test_refuses_non_tiff_files_without_raising(tmp_path, shared_slide):
    text = tmp_path / "notes.svs"
    text.write_text("not a slide at all\n" * 10)
    empty = tmp_path / "empty.tiff"
    empty.write_bytes(b"")
    fake = tmp_path / "fake.tiff"
    fake.write_bytes(b"II*\x00" + b"\xff" * 100)  # TIFF magic, garbage IFD offset
    for path in (text, empty, fake, tmp_path / "missing.svs", tmp_path):
        assert JpegTileReader.try_open(path, [(100, 100)], [1.0]) is None
    assert JpegTileReader.refusal_reason(text, [(100, 100)]) == "not a TIFF file"


def test_refuses_levels_that_do_not_match_the_backend(cmu_svs, synthetic_40x_svs):
    assert JpegTileReader.try_open(cmu_svs, [(2220, 2968)], [1.0]) is None
    # the backend sees a level the file does not store as a tiled page (e.g. the thumbnail size)
    assert JpegTileReader.try_open(synthetic_40x_svs, [(8000, 6000), (1024, 768)], [1.0, 7.8]) is None
    assert JpegTileReader.try_open(synthetic_40x_svs, [(8000, 6000)], [1.0, 4.0]) is None  # count mismatch


def _patch_tag(src, dst, page, code, value):
    """Copy ``src`` to ``dst`` and overwrite the (inline SHORT/LONG) value of one tag of one page."""
    shutil.copy(src, dst)
    os.chmod(dst, 0o644)
    with tifffile.TiffFile(src) as tif:
        tag = tif.pages[page].tags[code]
        fmt = {3: "<H", 4: "<I"}[int(tag.dtype)]
        offset = tag.valueoffset
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))
    return str(dst)


@pytest.mark.parametrize(
    ("page", "code", "value", "reason"),
    [
        (0, 259, 33003, "compression 33003"),  # Aperio JPEG 2000 (YCbCr)
        (2, 259, 33005, "compression 33005"),  # Aperio JPEG 2000 (RGB) on a lower level
        (0, 262, 1, "photometric 1"),  # odd photometric
        (0, 284, 2, "interleaved"),  # planar configuration
    ],
)
def test_refuses_layouts_it_cannot_decode_exactly(rgb_slide, tmp_path, page, code, value, reason):
    path = _patch_tag(rgb_slide, tmp_path / "patched.svs", page, code, value)
    dims, dss = _dims(rgb_slide)
    assert JpegTileReader.try_open(path, dims, dss) is None
    assert reason in JpegTileReader.refusal_reason(path, dims)


def test_refuses_missing_tiles_and_offsets_past_the_end(rgb_slide, tmp_path):
    dims, dss = _dims(rgb_slide)
    with tifffile.TiffFile(rgb_slide) as tif:
        counts = tif.pages[0].tags[325]
        offsets = tif.pages[0].tags[324]
        assert int(counts.dtype) == 4 and int(offsets.dtype) == 4
        counts_at, offsets_at = counts.valueoffset, offsets.valueoffset
    for name, at, value, reason in [
        ("zero.svs", counts_at + 4 * 3, 0, "zero-length"),
        ("past.svs", offsets_at + 4 * 3, 2**31, "past the end"),
    ]:
        dst = tmp_path / name
        shutil.copy(rgb_slide, dst)
        os.chmod(dst, 0o644)
        with open(dst, "r+b") as fh:
            fh.seek(at)
            fh.write(struct.pack("<I", value))
        assert JpegTileReader.try_open(dst, dims, dss) is None
        assert reason in JpegTileReader.refusal_reason(dst, dims)


def test_ycbcr_can_be_switched_off(layout_slide):
    name, path = layout_slide
    dims, dss = _dims(path)
    reader = JpegTileReader.try_open(path, dims, dss, allow_ycbcr=False)
    assert (reader is None) == (name != "rgb")
    if reader is not None:
        reader.close()


# -- corrupt tiles ------------------------------------------------------------------------------


class _FastHandle(SlideHandle):
    """The wiring the backends use, in miniature: base-class clipping and error wrapping around the reader."""

    def __init__(self, path):
        dims, dss = _dims(path)
        props = SlideProperties(
            slide_path=path,
            level_dimensions=tuple(dims),
            level_downsamples=tuple(dss),
            mpp_level0=0.5,
            mpp_source="slide",
            objective_power=20.0,
            vendor="aperio",
            backend="fast-test",
        )
        super().__init__(path, props, "0.5")
        self.enable_fast_tiles(None)
        assert self.uses_fast_tiles

    def _read_level_region(self, x0, y0, level, width, height):
        raise AssertionError("the fast path serves every read of this handle")

    def _close_library(self):
        pass


def test_corrupt_tile_raises_and_other_tiles_still_read(fast_dir):
    path = _write(fast_dir / "corrupt.svs", corrupt_tile=(1, 1))
    with _FastHandle(path) as handle:
        with pytest.raises(JpegTileError, match=r"level 0 tile \(1, 1\)"):
            handle._fast.read(0, 250, 250, 10, 10)
        with pytest.raises(TileDecodeError, match="cannot decode region"):
            handle.read_region(200, 200, 0, (100, 100))
        # the failure is not sticky (unlike an OpenSlide handle) and is never cached
        with openslide.OpenSlide(path) as osr:
            np.testing.assert_array_equal(handle.read_region(0, 0, 0, (240, 240)), _osr_region(osr, 0, 0, 0, 240, 240))
            np.testing.assert_array_equal(handle.read_region(0, 0, 1, (500, 380)), _osr_region(osr, 1, 0, 0, 500, 380))
        with pytest.raises(TileDecodeError):
            handle.read_region(240, 240, 0, (1, 1))


def test_truncated_tile_raises_like_openslide(rgb_slide, tmp_path):
    dims, dss = _dims(rgb_slide)
    with tifffile.TiffFile(rgb_slide) as tif:
        page = tif.pages[0]
        counts_at = page.tags[325].valueoffset
        tile = 1 * 5 + 1  # column 1, row 1 of a 5-tile-wide grid
        count = int(page.databytecounts[tile])
    dst = tmp_path / "truncated.svs"
    shutil.copy(rgb_slide, dst)
    os.chmod(dst, 0o644)
    with open(dst, "r+b") as fh:
        fh.seek(counts_at + 4 * tile)
        fh.write(struct.pack("<I", count * 2 // 3))
    with openslide.OpenSlide(str(dst)) as osr, pytest.raises(openslide.OpenSlideError):
        osr.read_region((240, 240), 0, (240, 240))
    with JpegTileReader.try_open(dst, dims, dss) as reader:
        with pytest.raises(JpegTileError, match="truncated"):
            reader.read(0, 240, 240, 240, 240)
        reader.read(0, 0, 0, 240, 240)  # its neighbour is fine


def test_entropy_damage_detection_matches_openslide_in_strict_mode(rgb_slide, tmp_path):
    """Zero runs inside the scan: whenever OpenSlide raises, "strict" raises; pixels returned by both agree."""
    with tifffile.TiffFile(rgb_slide) as tif:
        page = tif.pages[0]
        tile = 1 * 5 + 1  # column 1, row 1: the region read below
        offset, count = int(page.dataoffsets[tile]), int(page.databytecounts[tile])
    rng = np.random.default_rng(3)
    dims, dss = _dims(rgb_slide)
    raised = {"openslide": 0, "structure": 0, "strict": 0}
    for trial in range(8):
        dst = tmp_path / f"damaged{trial}.svs"
        shutil.copy(rgb_slide, dst)
        os.chmod(dst, 0o644)
        with open(dst, "r+b") as fh:
            fh.seek(offset + int(rng.integers(count // 4, count - 80)))
            fh.write(b"\x00" * 64)
        results = {}
        with openslide.OpenSlide(str(dst)) as osr:
            try:
                results["openslide"] = np.asarray(osr.read_region((240, 240), 0, (240, 240)))[..., :3]
            except openslide.OpenSlideError:
                results["openslide"] = None
        for mode in ("structure", "strict"):
            with JpegTileReader.try_open(dst, dims, dss, verify=mode) as reader:
                try:
                    results[mode] = reader.read(0, 240, 240, 240, 240)
                except JpegTileError:
                    results[mode] = None
        for key, value in results.items():
            raised[key] += value is None
        assert (results["strict"] is None) == (results["openslide"] is None)
        if results["strict"] is not None:
            np.testing.assert_array_equal(results["strict"], results["openslide"])
        if results["structure"] is None:
            assert results["openslide"] is None  # the default mode never raises on what OpenSlide reads
    assert raised["openslide"] >= 4 and raised["structure"] >= 1  # the damage was really detected


def test_check_jpeg_stream_names_the_damage(rgb_slide):
    with _open(rgb_slide) as reader:
        lv = reader.levels[0]
        raw = reader.raw_tile(0, 1, 1)
    kw = dict(width=lv.tile_width, height=lv.tile_height)
    assert raw[check_jpeg_stream(raw, **kw) :] == b"\xff\xd9"
    with pytest.raises(JpegTileError, match="not a JPEG"):
        check_jpeg_stream(b"\xde\xad" + raw[2:], **kw)
    with pytest.raises(JpegTileError, match="truncated"):
        check_jpeg_stream(raw[:-2], **kw)
    with pytest.raises(JpegTileError, match="frame is 240x240"):
        check_jpeg_stream(raw, width=256, height=240)
    middle = len(raw) // 2
    with pytest.raises(JpegTileError, match="marker 0xffc4 inside the scan"):
        check_jpeg_stream(raw[:middle] + b"\xff\xc4" + raw[middle + 2 :], **kw)
    with pytest.raises(JpegTileError, match="restart marker"):
        check_jpeg_stream(raw[:middle] + b"\xff\xd0" + raw[middle + 2 :], **kw)


# -- cache, lifecycle, fork, pickle -------------------------------------------------------------


def test_cache_is_bounded_reused_and_never_handed_out(rgb_slide):
    tile_bytes = 240 * 240 * 3
    with _open(rgb_slide, cache_bytes=3 * tile_bytes) as reader:
        lv = reader.levels[0]
        reader.read(0, 0, 0, lv.width, lv.height)  # 5 x 4 tiles (edge tiles cropped) through the cache
        assert reader.tiles_decoded == 20
        assert 0 < reader.cache.nbytes <= 3 * tile_bytes and len(reader.cache) < 20
        a = reader.read(0, 965, 725, 30, 30)  # inside the last tile read (an edge tile): no decode
        assert reader.tiles_decoded == 20
        a[:] = 0  # the caller owns its array; the cached tile is untouched
        assert reader.read(0, 965, 725, 30, 30).any()
        assert reader.tiles_decoded == 20
        with pytest.raises(ValueError):
            reader.tile(0, 4, 3)[0, 0] = 1  # cached tiles are read-only
    with _open(rgb_slide, cache_bytes=0) as reader:
        reader.read(0, 0, 0, 100, 100)
        reader.read(0, 0, 0, 100, 100)
        assert reader.tiles_decoded == 2 and len(reader.cache) == 0


def test_a_shared_cache_serves_several_readers_and_close_drops_their_tiles(rgb_slide, cmu_svs):
    cache = TileCache(16 * 1024 * 1024)
    a = _open(rgb_slide, cache=cache)
    b = _open(cmu_svs, cache=cache)
    a.read(0, 0, 0, 480, 480)
    b.read(0, 0, 0, 480, 480)
    assert len(cache) == 8
    np.testing.assert_array_equal(a.read(0, 0, 0, 10, 10), _open(rgb_slide, cache_bytes=0).read(0, 0, 0, 10, 10))
    a.close()
    assert len(cache) == 4
    b.close()
    assert len(cache) == 0


def test_closed_reader_refuses_reads_and_close_is_idempotent(rgb_slide):
    reader = _open(rgb_slide)
    reader.close()
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read(0, 0, 0, 10, 10)


def test_out_of_level_regions_are_rejected(rgb_slide):
    with _open(rgb_slide) as reader:
        for region in [(-1, 0, 10, 10), (0, 0, 1001, 10), (995, 0, 10, 10), (0, 0, 0, 5)]:
            with pytest.raises(ValueError, match="not inside level 0"):
                reader.read(0, *region)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_reads_in_a_forked_child_after_reading_in_the_parent(rgb_slide):
    reader = _open(rgb_slide)
    expected = _open(rgb_slide, cache_bytes=0).read(1, 100, 100, 300, 200)
    parent_first = reader.read(0, 0, 0, 300, 300)
    fd_parent = reader._source._fd
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: new descriptor, correct pixels from cached and from new tiles
        status = 1
        try:
            os.close(read_end)
            ok = np.array_equal(reader.read(1, 100, 100, 300, 200), expected)
            ok &= np.array_equal(reader.read(0, 0, 0, 300, 300), parent_first)
            ok &= reader._source._fd != fd_parent
            reader.close()
            os.write(write_end, b"1" if ok else b"0")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert status == 0 and answer == b"1"
    # the parent's descriptor survived the child's close
    assert reader._source._fd == fd_parent
    np.testing.assert_array_equal(reader.read(1, 100, 100, 300, 200), expected)
    reader.close()


def test_pickle_round_trip_reopens_lazily(rgb_slide):
    with _open(rgb_slide) as reader:
        reader.read(0, 0, 0, 50, 50)
        clone = pickle.loads(pickle.dumps(reader))
        assert clone._source._fd is None and len(clone.cache) == 0
        np.testing.assert_array_equal(clone.read(2, 10, 20, 100, 100), reader.read(2, 10, 20, 100, 100))
        clone.close()


def test_level_origin_inverts_rounded_level0_coordinates(fast_dir):
    # 1000 x 770 with downsample 4: level 1 is 250 x 192, OpenSlide reports 4.0052 (not an integer)
    path = _write(fast_dir / "nonint.svs", width=1000, height=770, downsamples=(1, 4))
    dims, dss = _dims(path)
    ds = dss[1]
    assert ds != 4.0
    with JpegTileReader.try_open(path, dims, dss) as reader:
        floor_misses = 0
        for lx in range(0, 190):
            x0 = round(lx * ds)
            floor_misses += math.floor(x0 / ds) != lx
            assert reader.level_origin(1, x0, x0, 50, 50) == (lx, lx)
        assert floor_misses > 0  # why it rounds: floor(round(lx * ds) / ds) is lx - 1 for some lx
        # where rounding up would leave the level, it keeps floor (what SlideHandle.read_region clips with)
        assert reader.level_origin(1, 997, 760, 1, 1) == (249, 190)
        assert reader.level_origin(1, 997, 760, 2, 2) == (248, 190)


def test_shared_tile_cache_is_one_per_capacity():
    from wsistream.backends._jpeg_tiles import shared_tile_cache

    assert shared_tile_cache(1 << 20) is shared_tile_cache(1 << 20)
    assert shared_tile_cache(1 << 20) is not shared_tile_cache(2 << 20)


# -- the backends, once wired (skipped until OpenSlideBackend/TiffSlideBackend take fast_tiles) ----


def _wired(backend_cls):
    import dataclasses

    if "fast_tiles" not in {f.name for f in dataclasses.fields(backend_cls)}:
        pytest.skip(f"{backend_cls.__name__} has no fast_tiles option yet")


@pytest.mark.parametrize("backend_name", ["openslide", "tiffslide"])
def test_backends_serve_tiff_jpeg_through_the_fast_path(backend_name, synthetic_40x_svs, shared_slide, fast_dir):
    from wsistream.backends import OpenSlideBackend, TiffSlideBackend

    backend_cls = {"openslide": OpenSlideBackend, "tiffslide": TiffSlideBackend}[backend_name]
    _wired(backend_cls)
    reference = OpenSlideBackend(fast_tiles=False)
    with backend_cls().open(synthetic_40x_svs) as h, reference.open(synthetic_40x_svs) as ref:
        assert h.uses_fast_tiles
        for level, (x0, y0, size) in [(0, (1234, 2345, 448)), (1, (800, 1600, 300)), (2, (0, 0, 500))]:
            np.testing.assert_array_equal(
                h.read_region(x0, y0, level, (size, size)), ref.read_region(x0, y0, level, (size, size))
            )
        # partly outside the slide: the base class still pads with white around the fast path's pixels
        np.testing.assert_array_equal(
            h.read_region(-100, -60, 1, (200, 100)), ref.read_region(-100, -60, 1, (200, 100))
        )
    with backend_cls().open(shared_slide("test3-DAPI-2.ndpi")) as h:
        assert not h.uses_fast_tiles  # the library reads it
    with backend_cls(fast_tiles=False).open(synthetic_40x_svs) as h:
        assert not h.uses_fast_tiles
    path = _write(fast_dir / f"corrupt-{backend_name}.svs", corrupt_tile=(1, 1))
    with backend_cls().open(path) as h:
        with pytest.raises(TileDecodeError):
            h.read_region(300, 300, 0, (50, 50))
        assert h.read_region(0, 0, 0, (200, 200)).shape == (200, 200, 3)
