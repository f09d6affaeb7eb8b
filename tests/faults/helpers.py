"""One stream configuration for every fault case, and the check that good slides are untouched.

Every case streams ``[good_0, *bad, good_1, good_2]`` and compares the good
slides with a run on the good slides alone:

* ``mode="grid"``: a ``GridSampler`` without shuffle and ``patches_per_slide=-1``
  gives every qualifying tile once, whatever the seed: the coordinates of each
  good slide must be the *identical multiset*;
* ``mode="random"``: a ``RandomSampler`` with ``patches_per_slide=N``; positions
  are seeded by the order in which slides are assigned to the pool, so a bad
  slide *before* a good one shifts its seed: only the per-slide counts must
  match (exactly N).  With the bad slides *after* the good ones the assignments
  are unchanged, and the coordinates must be identical too.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wsistream.pipeline import PatchPipeline
from wsistream.sampling import GridSampler, RandomSampler
from wsistream.types import FailureRecord

GOOD_SIZE = (1024, 768)
PATCHES_PER_SLIDE = 6
#: Level-0 footprint of one patch: 64 px at 1.0 µm/px read from a 0.5 µm/px level 0.
FOOTPRINT = 128


def sampler_for(mode: str) -> Any:
    if mode == "grid":
        return GridSampler(patch_size=64, target_mpp=1.0, tissue_threshold=0.5)
    return RandomSampler(patch_size=64, target_mpp=1.0, tissue_threshold=0.5)


def make_pipe(slides: Sequence[str], mode: str = "grid", **kw: Any) -> PatchPipeline:
    kw.setdefault("sampler", sampler_for(mode))
    kw.setdefault("patches_per_slide", -1 if mode == "grid" else PATCHES_PER_SLIDE)
    kw.setdefault("pool_size", 2)
    kw.setdefault("overview_side", 512)
    kw.setdefault("seed", 0)
    return PatchPipeline(slide_paths=list(slides), **kw)


@dataclass
class Run:
    """What a stream delivered, per slide."""

    counts: Counter = field(default_factory=Counter)
    coords: dict[str, Counter] = field(default_factory=dict)
    failures: list[FailureRecord] = field(default_factory=list)
    pipeline: PatchPipeline | None = None


def collect(pipe: PatchPipeline, limit: int | None = None, stream: Any = None, run: Run | None = None) -> Run:
    """Drain ``stream`` (default: a new ``iter(pipe)``) into ``run`` (default: a new one)."""
    run = run or Run(pipeline=pipe)
    for r in itertools.islice(stream if stream is not None else iter(pipe), limit):
        c = r.coordinate
        run.counts[c.slide_path] += 1
        run.coords.setdefault(c.slide_path, Counter())[(c.x0, c.y0, c.level, c.read_size)] += 1
    run.failures = list(pipe.failures)
    return run


def run_stream(slides: Sequence[str], mode: str = "grid", **kw: Any) -> Run:
    return collect(make_pipe(slides, mode, **kw))


def failures_of(run: Run, slide: str) -> list[FailureRecord]:
    return [f for f in run.failures if f.slide_path == slide]


def assert_named(record: FailureRecord, slide: str) -> None:
    """The record and its message name the slide (a log line is actionable on its own)."""
    assert record.slide_path == slide
    assert slide in record.message, record.message


def assert_good_untouched(got: Run, ref: Run, good: Sequence[str], mode: str, exact: bool | None = None) -> None:
    """Per-slide counts equal; coordinates identical where the design guarantees it."""
    for slide in good:
        assert got.counts[slide] == ref.counts[slide] > 0, slide
        if exact if exact is not None else mode == "grid":
            assert got.coords[slide] == ref.coords[slide], slide


def check_fault(
    bad: Sequence[str], good: Sequence[str], mode: str, ref: Run, *, may_yield: bool = False, **kw: Any
) -> Run:
    """Stream the bad slides among the good ones; the good slides must deliver what they deliver alone."""
    got = run_stream([good[0], *bad, *good[1:]], mode, **kw)
    assert_good_untouched(got, ref, good, mode)
    if not may_yield:
        assert not set(got.counts) & set(bad)
    if mode == "random":  # bad slides last: the good slides keep their pool assignments and seeds
        tail = run_stream([*good, *bad], mode, **kw)
        assert_good_untouched(tail, ref, good, mode, exact=True)
    return got
