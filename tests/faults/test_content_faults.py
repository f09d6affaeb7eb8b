"""Slides that open but cannot be streamed as asked (µm/px, size, tissue), and odd-but-valid slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsistream.backends import OpenSlideBackend
from wsistream.synthetic import write_aperio_svs
from wsistream.tissue import OtsuTissueDetector

from .helpers import GOOD_SIZE, assert_named, check_fault, failures_of, make_pipe, run_stream

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
W, H = GOOD_SIZE


def _write(tmp: Path, name: str, **kw) -> str:
    kw.setdefault("width", W)
    kw.setdefault("height", H)
    kw.setdefault("downsamples", (1, 4))
    kw.setdefault("mpp", 0.5)
    return str(write_aperio_svs(tmp / name, seed=7, **kw))


CASES = {
    # case: (writer kwargs, error type, stage, message fragment)
    "mpp-missing": ({"mpp": None}, "MissingMppError", "plan", "missing or implausible"),
    "mpp-zero": ({"mpp_text": "0"}, "MissingMppError", "plan", "missing or implausible"),
    "mpp-nan": ({"mpp_text": "nan"}, "MissingMppError", "plan", "missing or implausible"),
    "smaller-than-patch": ({"width": 100, "height": 80, "downsamples": (1,)}, "SlideTooSmallError", "plan", "128-px"),
    "all-background": ({"background_only": True}, "NoTissueError", "tissue", "found no tissue"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["grid", "random"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unusable_slide(case, mode, good_slides, reference, tmp_path):
    kwargs, error_type, stage, fragment = CASES[case]
    bad = _write(tmp_path, f"{case}.svs", **kwargs)
    got = check_fault([bad], good_slides, mode, reference(mode))
    [record] = failures_of(got, bad)
    assert (record.error_type, record.stage, record.retired) == (error_type, stage, True)
    assert fragment in record.message
    assert_named(record, bad)


@pytest.mark.timeout(60)
def test_missing_mpp_streams_with_an_explicit_fallback(good_slides, reference, tmp_path):
    bad = _write(tmp_path, "nompp.svs", mpp=None)
    got = check_fault([bad], good_slides, "grid", reference("grid"), may_yield=True, mpp_fallback=0.5)
    assert got.counts[bad] > 0 and not got.failures
    stream = iter(make_pipe([bad], mpp_fallback=0.5))
    assert next(stream).slide_metadata.properties.mpp_source == "fallback"
    stream.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["grid", "random"])
def test_one_level_slide_streams_like_any_other(mode, good_slides, reference, tmp_path):
    one = _write(tmp_path, "one-level.svs", downsamples=(1,))
    with OpenSlideBackend().open(one) as handle:
        assert handle.properties.level_count == 1
    got = check_fault([one], good_slides, mode, reference(mode), may_yield=True)
    assert not got.failures
    alone = run_stream([one], mode)
    assert got.counts[one] == alone.counts[one] > 0
    if mode == "grid":
        assert got.coords[one] == alone.coords[one]


@pytest.mark.timeout(60)
def test_fluorescence_dark_background_is_not_tissue(good_slides, reference):
    """DAPI on black: saturation noise over a near-zero value must not become tissue wholesale."""
    dapi = str(SHARED / "test3-DAPI-2.ndpi")
    got = check_fault([dapi], good_slides, "random", reference("random"), may_yield=True)
    assert got.counts[dapi] > 0 and not got.failures
    pipe = make_pipe([dapi], "random", patches_per_slide=20)
    with OpenSlideBackend().open(dapi) as handle:
        overview, _ = handle.read_overview(512)
        mask = pipe.tissue_mask(handle, handle.properties)
        unguarded = make_pipe([dapi], tissue_detector=OtsuTissueDetector(min_brightness=0))
        assert unguarded.tissue_mask(handle, handle.properties).tissue_fraction > 0.95  # what the guard prevents
    dark = overview.max(axis=2) < 30
    assert dark.mean() > 0.5  # the background really is dark
    assert 0.05 < mask.tissue_fraction < 0.6
    cells = np.asarray(
        __import__("cv2").resize(mask.mask.astype(np.uint8), overview.shape[1::-1], interpolation=0), bool
    )
    assert dark[cells].mean() < dark[~cells].mean()  # tissue cells are the bright ones
    bright = [float((r.image.max(axis=2) >= 30).mean()) for r in pipe]
    assert len(bright) == 20 and min(bright) > 0.1 and np.mean(bright) > 0.4


@pytest.mark.timeout(60)
def test_view_finer_than_a_slide_retires_that_slide_only(good_slides, tmp_path):
    """A 0.25 µm/px view on a cohort with one 20x (0.5 µm/px) slide: that slide, not the run, must fail."""
    from wsistream.views import ViewConfig

    fine = [_write(tmp_path, f"40x-{i}.svs", mpp=0.25, width=768, height=512) for i in range(2)]
    views = [ViewConfig("global_0"), ViewConfig("fine", mpp_override=0.25)]
    ref = run_stream(fine, "random", views=views)
    coarse = good_slides[0]  # 0.5 µm/px: cannot give a 0.25 µm/px view without upsampling
    got = check_fault([coarse], fine, "random", ref, views=views)
    [record] = failures_of(got, coarse)
    assert record.error_type == "ResolutionUnavailableError" and record.retired
    assert_named(record, coarse)
