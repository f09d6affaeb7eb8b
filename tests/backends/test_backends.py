import numpy as np
import pytest

from wsistream.backends import OpenSlideBackend, TiffSlideBackend, plausible_mpp
from wsistream.errors import SlideNotFoundError, SlideOpenError, TileDecodeError, WsiStreamError

BACKENDS = [OpenSlideBackend(), TiffSlideBackend()]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_aperio_properties(backend, cmu_svs):
    with backend.open(cmu_svs) as h:
        p = h.properties
        assert p.vendor == "aperio"
        assert p.mpp_level0 == pytest.approx(0.499)
        assert p.mpp_source == "slide"
        assert p.objective_power == 20
        assert p.level_dimensions[0] == (2220, 2967)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_ndpi_properties(backend, shared_slide):
    with backend.open(shared_slide("test3-DAPI-2.ndpi")) as h:
        assert h.properties.vendor == "hamamatsu"
        assert h.properties.mpp_level0 == pytest.approx(0.22817, rel=1e-3)
        assert h.properties.level_downsamples[:4] == (1.0, 2.0, 4.0, 8.0)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_generic_tiff_72dpi_mpp_is_not_used(backend, shared_slide):
    # boxes.tiff stores the 72-dpi default resolution (352.8 µm/px): implausible, so missing
    with backend.open(shared_slide("boxes.tiff")) as h:
        assert h.properties.mpp_level0 is None
        assert h.properties.mpp_source == "none"
        assert float(h.raw_mpp) > 300


def test_plausible_mpp():
    assert plausible_mpp("0.25") == 0.25
    for bad in (None, "", "0", "nan", "inf", "352.7", -1):
        assert plausible_mpp(bad) is None


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_read_region_is_contiguous_uint8_rgb_and_equal_across_backends(backend, cmu_svs):
    with backend.open(cmu_svs) as h, OpenSlideBackend().open(cmu_svs) as ref:
        region = h.read_region(500, 700, 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8 and region.flags.c_contiguous
        np.testing.assert_array_equal(region, ref.read_region(500, 700, 0, (64, 48)))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_outside_the_slide_is_white_not_black(backend, cmu_svs):
    with backend.open(cmu_svs) as h:
        region = h.read_region(-20, -10, 0, (40, 30))
        assert (region[:10, :] == 255).all() and (region[:, :20] == 255).all()
        inside = h.read_region(0, 0, 0, (20, 20))
        np.testing.assert_array_equal(region[10:, 20:], inside)
        w, hgt = h.properties.level_dimensions[0]
        beyond = h.read_region(w - 5, hgt - 5, 0, (10, 10))
        assert (beyond[5:, :] == 255).all() and (beyond[:, 5:] == 255).all()


def test_overview_reads_a_low_level_not_level0(synthetic_40x_svs):
    with OpenSlideBackend().open(synthetic_40x_svs) as h:
        # 8000x6000 with levels 1/4/16 (2000x1500, 500x375): level 1 serves a 2048 overview,
        # level 2 a 1024 one (500 >= 0.45 x 1024), never level 0
        assert h.overview_level(2048) == 1
        assert h.overview_level(1024) == 2
        assert h.overview_level(4096) == 1
        overview, (dsx, dsy) = h.read_overview(1024)
        assert overview.shape[:2] == (375, 500)  # level 2 as it is, never upsampled
        assert max(h.read_overview(1800)[0].shape[:2]) == 1800  # level 1 area-resampled
        assert dsx == pytest.approx(8000 / overview.shape[1]) and dsy == pytest.approx(6000 / overview.shape[0])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_missing_file(backend, tmp_path):
    with pytest.raises(SlideNotFoundError) as err:
        backend.open(tmp_path / "nope.svs")
    assert "nope.svs" in str(err.value) and err.value.slide_path.endswith("nope.svs")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_unopenable_tiff(backend, shared_slide):
    path = shared_slide("bad/unopenable.tiff")
    with pytest.raises(SlideOpenError) as err:
        backend.open(path)
    assert "unopenable.tiff" in str(err.value) and err.value.__cause__ is not None


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_undecodable_slide_opens_then_fails_with_named_decode_error(backend, shared_slide):
    path = shared_slide("bad/unreadable.svs")
    with backend.open(path) as h, pytest.raises(TileDecodeError) as err:
        h.read_region(0, 0, 0, (16, 16))
    assert "unreadable.svs" in str(err.value) and "level=0" in str(err.value)
    assert isinstance(err.value, WsiStreamError)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_empty_and_garbage_files(backend, tmp_path):
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage slide 😐.svs"
    garbage.write_bytes(b"this is not a tiff" * 100)
    for path in (empty, garbage):
        with pytest.raises(SlideOpenError) as err:
            backend.open(path)
        assert path.name in str(err.value)


def test_errors_pickle_with_their_slide():
    import pickle

    err = pickle.loads(pickle.dumps(TileDecodeError("/x/a.svs", "bad tile")))
    assert isinstance(err, TileDecodeError) and err.slide_path == "/x/a.svs" and str(err) == "/x/a.svs: bad tile"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_one_corrupt_tile_costs_one_region(backend, tmp_path):
    from wsistream.synthetic import write_aperio_svs

    path = write_aperio_svs(
        tmp_path / "corrupt.svs",
        width=960,
        height=720,
        mpp=0.5,
        app_mag=20,
        downsamples=(1, 4),
        tile_size=240,
        corrupt_tile=(1, 1),
        seed=5,
    )
    with backend.open(path) as h:
        good_before = h.read_region(0, 0, 0, (100, 100))
        with pytest.raises(TileDecodeError, match=r"corrupt\.svs"):
            h.read_region(250, 250, 0, (50, 50))  # inside tile (1, 1)
        # the handle keeps working after the error (OpenSlide's handle is reopened)
        np.testing.assert_array_equal(h.read_region(0, 0, 0, (100, 100)), good_before)
        assert h.read_region(500, 500, 0, (50, 50)).shape == (50, 50, 3)


def test_errors_survive_one_argument_reraise():
    # torch's DataLoader re-raises a worker's exception as type(exc)(message)
    from wsistream.errors import NoUsableSlidesError

    err = TileDecodeError("worker 1: /x/a.svs: bad tile")
    assert str(err) == "worker 1: /x/a.svs: bad tile" and err.slide_path is None
    err = NoUsableSlidesError("worker 0: no usable slides")
    assert "no usable slides" in str(err) and err.failures == []
