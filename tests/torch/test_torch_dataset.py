"""Coverage across ranks × workers, the equal-length policy, failures from workers, start methods."""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from torch_helpers import digest, grid_pipeline, random_pipeline, small_views, tile_keys

from wsistream.errors import NoUsableSlidesError
from wsistream.tissue import OtsuTissueDetector
from wsistream.torch import MonitoredLoader, WsiStreamDataset, make_loader


def _all_tiles(slides) -> Counter:
    """Every tile of the cohort, from one unsharded pass in this process."""
    return Counter((r.coordinate.slide_path, r.coordinate.x0, r.coordinate.y0) for r in grid_pipeline(slides))


def _rank_batches(pipeline, rank, world, workers, **ds_kw):
    ds = WsiStreamDataset(pipeline, rank=rank, world_size=world, **ds_kw)
    return list(make_loader(ds, batch_size=8, num_workers=workers))


def test_two_ranks_two_workers_cover_every_tile_exactly_once(cohort):
    slides = cohort[:7]  # uneven: shards get 2, 2, 2, 1 slides
    pipeline = grid_pipeline(slides)
    expected = _all_tiles(slides)
    seen: Counter = Counter()
    slides_of_shard: dict[int, set] = {}
    for rank in range(2):
        for batch in _rank_batches(pipeline, rank, 2, 2, allow_uneven=True):
            seen.update(tile_keys(batch))
            for shard, path in zip(batch["shard"].tolist(), batch["slide_path"]):
                slides_of_shard.setdefault(shard, set()).add(path)
    assert seen == expected  # same tiles, each exactly once
    assert max(seen.values()) == 1
    assert sorted(slides_of_shard) == [0, 1, 2, 3]
    sets = list(slides_of_shard.values())
    assert all(a.isdisjoint(b) for i, a in enumerate(sets) for b in sets[i + 1 :])
    assert set().union(*sets) == set(slides)


def test_equal_length_policy_gives_every_rank_the_same_batches(cohort):
    # 3 slides over 2 ranks × 2 workers: one shard wraps (shares a slide); 70 patches per rank is
    # more than a one-slide shard has tiles, so it also wraps around with fresh passes
    pipeline = grid_pipeline(cohort[:3])
    counts = []
    for rank in range(2):
        ds = WsiStreamDataset(pipeline, rank=rank, world_size=2, patches_per_rank=70)
        batches = _rank_batches(pipeline, rank, 2, 2, patches_per_rank=70)
        counts.append((len(batches), sum(len(b["slide_path"]) for b in batches)))
        assert len(batches) == ds.num_batches(batch_size=8, num_workers=2)
    assert counts[0] == counts[1] == (10, 70)


def test_equal_length_policy_with_more_ranks_than_slides(cohort):
    pipeline = random_pipeline(cohort[:2], cycle=False)
    lengths = {len(_rank_batches(pipeline, r, 3, 1, patches_per_rank=20)) for r in range(3)}
    assert lengths == {3}


def test_cycling_stream_is_endless_and_per_worker_deterministic(cohort):
    pipeline = random_pipeline(cohort[:4])
    loader = make_loader(WsiStreamDataset(pipeline), batch_size=8, num_workers=2)
    it = iter(loader)
    first = [digest(next(it)) for _ in range(12)]  # 96 patches from 4 slides visited 6 at a time
    it2 = iter(make_loader(WsiStreamDataset(pipeline), batch_size=8, num_workers=2))
    assert [digest(next(it2)) for _ in range(12)] == first


@pytest.mark.parametrize("rendering", [None, "device"])
def test_fork_and_spawn_give_identical_batches(cohort, rendering):
    # picklable factory; "device": the workers draw view plans, which must not depend on the start method
    extra = {} if rendering is None else {"views": small_views(), "view_rendering": rendering}
    factory = functools.partial(grid_pipeline, cohort[:4], **extra)
    runs = {}
    for method in ("fork", "spawn"):
        loader = make_loader(WsiStreamDataset(factory), batch_size=8, num_workers=2, multiprocessing_context=method)
        runs[method] = [digest(b) for b in loader]
    assert runs["fork"] == runs["spawn"]
    assert len(runs["fork"]) > 5


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")
def test_persistent_workers_prefetch_pin_memory_and_set_epoch(cohort):
    ds = WsiStreamDataset(grid_pipeline(cohort[:4]))
    loader = make_loader(ds, batch_size=8, num_workers=2, persistent_workers=True, prefetch_factor=4, pin_memory=True)
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append([digest(b) for b in loader])
    assert epochs[0] != epochs[1]  # epoch 1 reshuffles (the shared epoch reached persistent workers)
    fresh = WsiStreamDataset(grid_pipeline(cohort[:4]))
    fresh.set_epoch(1)
    assert [digest(b) for b in make_loader(fresh, batch_size=8, num_workers=2)] == epochs[1]


def test_failures_reach_main_and_an_all_failed_worker_ends_cleanly(cohort, broken, tmp_path):
    # strided over 2 workers: worker 0 gets slides 0 and 2 (good), worker 1 gets 1 and 3 (both broken)
    slides = [cohort[0], broken["text"], cohort[1], broken["missing"]]
    good = _all_tiles(slides[::2])
    log = tmp_path / "failures.jsonl"
    monitor = MonitoredLoader(
        make_loader(WsiStreamDataset(grid_pipeline(slides, failure_log=log)), batch_size=8, num_workers=2),
        log_every_s=None,
    )
    seen = Counter(key for batch in monitor for key in tile_keys(batch))
    assert seen == good
    failed = {f.slide_path: f.error_type for f in monitor.failures}
    assert failed == {broken["text"]: "SlideOpenError", broken["missing"]: "SlideNotFoundError"}
    stats = monitor.stats()
    assert stats["slides_failed"] == 2 and stats["slides_opened"] == 2
    assert stats["empty_batches"] == 1  # worker 1's failure notice, consumed by the monitor
    logged = [json.loads(line)["slide_path"] for line in log.read_text().splitlines()]
    assert sorted(logged) == sorted(failed)  # the durable log, appended by the workers


def test_all_failed_shard_with_a_promised_length_raises_in_main(cohort, broken):
    slides = [cohort[0], broken["empty"]]
    ds = WsiStreamDataset(random_pipeline(slides), patches_per_rank=40)
    with pytest.raises(NoUsableSlidesError, match=r"(?s)shard 1 \(rank 0, worker 1\).*empty.svs"):
        list(make_loader(ds, batch_size=8, num_workers=2))


def test_in_process_loader_and_plain_dataloader(cohort):
    ds = WsiStreamDataset(grid_pipeline(cohort[:2]))
    in_process = [digest(b) for b in make_loader(ds, batch_size=8, num_workers=0)]
    plain = [digest(b) for b in make_loader(ds, batch_size=8, num_workers=0, stateful=False)]
    assert in_process == plain
    batch = next(iter(make_loader(ds, batch_size=8)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 32, 32)


@dataclass(frozen=True)
class _CountingOtsu(OtsuTissueDetector):
    """Otsu that counts the slides it segments in this process (instrumentation around the real detector)."""

    def detect_slide(self, handle, props, max_side):
        _SEGMENTED.append(props.slide_path)
        return super().detect_slide(handle, props, max_side)


_SEGMENTED: list[str] = []


def test_masks_are_computed_once_per_process_across_passes_and_epochs(cohort):
    """The per-pass pipeline copies share the process's mask cache: epoch 2 segments nothing."""
    slides = cohort[:3]
    ds = WsiStreamDataset(grid_pipeline(slides, tissue_detector=_CountingOtsu(), tissue_mask_cache_size=8))
    _SEGMENTED.clear()
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append(sum(1 for _ in ds))
    assert epochs[0] == epochs[1] > 0
    assert sorted(_SEGMENTED) == sorted(slides)  # once each, in epoch 0 only
    _SEGMENTED.clear()
    ds_off = WsiStreamDataset(grid_pipeline(slides, tissue_detector=_CountingOtsu(), tissue_mask_cache_size=0))
    for epoch in range(2):
        ds_off.set_epoch(epoch)
        assert sum(1 for _ in ds_off) == epochs[0]
    assert sorted(_SEGMENTED) == sorted(slides * 2)  # cache disabled: every epoch segments again
