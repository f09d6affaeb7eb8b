"""Every fault at once: one cohort, one failure log, a restarted run that quarantines, a cycling stream."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from wsistream.errors import NoUsableSlidesError
from wsistream.synthetic import write_aperio_svs

from .helpers import GOOD_SIZE, assert_good_untouched, assert_named, make_pipe, run_stream

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

#: slide name -> (error type, stage) of its one failure under the suite's stream configuration
EXPECTED = {
    "empty.svs": ("SlideOpenError", "open"),
    "truncated.svs": ("SlideOpenError", "open"),
    "notes.svs": ("SlideOpenError", "open"),
    "missing.svs": ("SlideNotFoundError", "open"),
    "unopenable.tiff": ("SlideOpenError", "open"),
    "unreadable.svs": ("SlideTooSmallError", "plan"),  # 16x16: too small before it is too broken
    "nompp.svs": ("MissingMppError", "plan"),
    "zerompp.svs": ("MissingMppError", "plan"),
    "nanmpp.svs": ("MissingMppError", "plan"),
    "tiny.svs": ("SlideTooSmallError", "plan"),
    "glass.svs": ("NoTissueError", "tissue"),
}


@pytest.fixture(scope="module")
def bad_slides(tmp_path_factory, good_slides) -> list[str]:
    folder = tmp_path_factory.mktemp("bad")
    w, h = GOOD_SIZE
    (folder / "empty.svs").write_bytes(b"")
    data = Path(good_slides[0]).read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 2])
    (folder / "notes.svs").write_text("not a slide\n" * 100)
    common = {"width": w, "height": h, "downsamples": (1, 4), "seed": 9}
    write_aperio_svs(folder / "nompp.svs", mpp=None, **common)
    write_aperio_svs(folder / "zerompp.svs", mpp_text="0", **common)
    write_aperio_svs(folder / "nanmpp.svs", mpp_text="nan", **common)
    write_aperio_svs(folder / "glass.svs", mpp=0.5, background_only=True, **common)
    write_aperio_svs(folder / "tiny.svs", width=100, height=80, mpp=0.5, downsamples=(1,), seed=9)
    slides = [str(folder / name) for name in EXPECTED if (folder / name).exists()]
    slides += [
        str(folder / "missing.svs"),
        str(SHARED / "bad" / "unopenable.tiff"),
        str(SHARED / "bad" / "unreadable.svs"),
    ]
    assert len(slides) == len(EXPECTED)
    return slides


def _interleave(bad: list[str], good: list[str]) -> list[str]:
    """Bad slides spread before, between and after the good ones."""
    out, chunks = [], [bad[i::4] for i in range(4)]
    for chunk, g in itertools.zip_longest(chunks, good):
        out += chunk
        if g:
            out.append(g)
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["grid", "random"])
def test_whole_bad_cohort_then_quarantine(mode, bad_slides, good_slides, reference, tmp_path):
    log = tmp_path / "failures.jsonl"
    slides = _interleave(bad_slides, good_slides)
    got = run_stream(slides, mode, failure_log=log, pool_size=3)
    assert_good_untouched(got, reference(mode), good_slides, mode)
    assert not set(got.counts) - set(good_slides)
    by_slide = {f.slide_path: f for f in got.failures}
    assert len(got.failures) == len(by_slide) == len(bad_slides)  # each recorded once
    for slide in bad_slides:
        record = by_slide[slide]
        assert (record.error_type, record.stage) == EXPECTED[Path(slide).name], record
        assert record.retired
        assert_named(record, slide)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(d["slide_path"] for d in lines) == sorted(bad_slides)
    assert all({"time", "slide_path", "stage", "error_type", "message", "retired"} <= set(d) for d in lines)
    summary = got.pipeline.failure_summary()
    assert sum(summary.values()) == len(bad_slides)
    # a restarted run skips every listed slide up front and records nothing new
    again = run_stream(slides, mode, skip_known_failures=log, pool_size=3)
    assert sorted(again.pipeline.quarantined) == sorted(bad_slides)
    assert again.failures == [] and again.pipeline.failure_summary() == {"quarantined": len(bad_slides)}
    assert_good_untouched(again, reference(mode), good_slides, mode)


@pytest.mark.timeout(60)
def test_cycling_stream_never_retries_permanent_failures(bad_slides, good_slides):
    slides = _interleave(bad_slides, good_slides)
    pipe = make_pipe(slides, "random", pool_size=3, patches_per_slide=4, cycle=True, slide_sampling="random")
    stream = iter(pipe)
    results = list(itertools.islice(stream, 120))  # several epochs
    stream.close()
    assert len(results) == 120 and {r.coordinate.slide_path for r in results} == set(good_slides)
    assert stream.epoch >= 3
    assert sorted(f.slide_path for f in pipe.failures) == sorted(bad_slides)  # once each, not once per epoch


@pytest.mark.timeout(60)
def test_all_bad_cohort_raises_quickly_naming_every_slide(bad_slides):
    for cycle in (False, True):
        t0 = time.perf_counter()
        with pytest.raises(NoUsableSlidesError) as err:
            next(iter(make_pipe(bad_slides, "random", cycle=cycle, pool_size=4)))
        assert time.perf_counter() - t0 < 20
        assert len(err.value.failures) == len(bad_slides)
        for slide in bad_slides:
            assert slide in str(err.value)
