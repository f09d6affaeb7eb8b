"""Streams from S3 equal streams from a local copy; storage failures are recorded and skipped."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import GridSampler, RandomSampler

SVS = ("CMU-1-Small-Region.svs", "synthetic-40x.svs")


def _key(result):
    c = result.coordinate
    return (c.slide_path.rsplit("/", 1)[-1], c.x0, c.y0, c.level, c.read_size)


def test_same_seed_same_patches_from_s3_as_from_a_local_copy(s3_slides, storage, seeded_pipeline):
    local = [s3_slides[n][0] for n in SVS]
    remote = [s3_slides[n][1] for n in SVS]
    here = list(itertools.islice(seeded_pipeline(local, TiffSlideBackend()), 30))
    there_stream = iter(seeded_pipeline(remote, TiffSlideBackend(storage=storage)))
    there = list(itertools.islice(there_stream, 20))
    state = there_stream.state_dict()
    there += list(itertools.islice(seeded_pipeline(remote, TiffSlideBackend(storage=storage)).resume(state), 10))
    assert [_key(r) for r in here] == [_key(r) for r in there]
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_storage_failures_are_recorded_and_the_stream_continues(s3_slides, storage, proxy):
    cmu, synthetic = s3_slides["CMU-1-Small-Region.svs"][1], s3_slides["synthetic-40x.svs"][1]
    slides = ["s3://slides/cohort/absent.svs", synthetic, cmu]
    pipeline = PatchPipeline(
        slide_paths=slides,
        sampler=RandomSampler(patch_size=224, target_mpp=0.5),
        backend=TiffSlideBackend(storage=storage),
        pool_size=1,
        patches_per_slide=5,
    )
    proxy.inject("reset", 1000, key="synthetic-40x")  # every read of that slide fails
    results = list(pipeline)
    assert len(results) == 5 and {r.coordinate.slide_path for r in results} == {cmu}
    by_slide = {f.slide_path: f for f in pipeline.failures}
    assert by_slide["s3://slides/cohort/absent.svs"].error_type == "RemoteNotFoundError"
    assert by_slide[synthetic].error_type == "RemoteStorageError"
    assert "after 3 attempts" in by_slide[synthetic].message


def test_grid_pass_through_two_dataloader_workers_matches_local(s3_slides, storage):
    pytest.importorskip("torch")
    from wsistream.torch import WsiStreamDataset, make_loader

    def tiles(slides, backend):
        pipeline = PatchPipeline(
            slide_paths=slides,
            sampler=GridSampler(patch_size=224, target_mpp=2.0),
            backend=backend,
            pool_size=1,
            patches_per_slide=-1,
            overview_side=256,
        )
        loader = make_loader(WsiStreamDataset(pipeline), batch_size=8, num_workers=2)
        out = set()
        for batch in loader:
            names = [p.rsplit("/", 1)[-1] for p in batch["slide_path"]]
            out.update(zip(names, batch["x0"].tolist(), batch["y0"].tolist(), strict=True))
        return out

    local = [s3_slides[n][0] for n in SVS]
    remote = [s3_slides[n][1] for n in SVS]
    from_s3 = tiles(remote, TiffSlideBackend(storage=storage))
    assert len(from_s3) >= 10 and from_s3 == tiles(local, TiffSlideBackend())  # 12 tiles at 2 µm/px


def test_a_pipeline_with_urls_and_a_local_only_backend_fails_fast(s3_slides, seeded_pipeline):
    with pytest.raises(ValueError, match="reads local files only; pass backend=TiffSlideBackend"):
        seeded_pipeline([s3_slides[SVS[0]][1]], OpenSlideBackend())


def test_each_next_position_is_prefetched_once_and_then_read(s3_slides, storage, monkeypatch):
    """Two positions ahead after every patch, each asked for once, none past the slide's visit."""
    from wsistream.backends.base import SlideHandle

    asked = []
    original = SlideHandle.prefetch_region

    def recording(self, x0, y0, level, size):
        asked.append((x0, y0))
        original(self, x0, y0, level, size)

    monkeypatch.setattr(SlideHandle, "prefetch_region", recording)
    pipeline = PatchPipeline(
        slide_paths=[s3_slides["synthetic-40x.svs"][1]],
        sampler=RandomSampler(patch_size=224, target_mpp=0.5),
        backend=TiffSlideBackend(storage=storage),
        pool_size=1, patches_per_slide=20, cycle=False, seed=5,
    )  # fmt: skip
    read = [(r.coordinate.x0, r.coordinate.y0) for r in pipeline]
    assert len(read) == 20
    # after patch k the positions of patches k+1 and k+2 (not past the 20th): each once, in order
    assert asked == read[1:]
