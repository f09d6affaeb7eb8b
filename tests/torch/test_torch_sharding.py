"""Slide partitioning across ranks × workers, rank discovery, and the checks made before training."""

from __future__ import annotations

import doctest

import pytest
from torch_helpers import grid_pipeline, random_pipeline

import wsistream.torch.sharding as sharding
from wsistream.torch import WsiStreamDataset, make_loader, partition_slides_by_rank, resolve_rank_world, shard_indices


@pytest.mark.parametrize("policy", ["strided", "contiguous"])
@pytest.mark.parametrize("seed", [None, (7, 3)])
@pytest.mark.parametrize(("n", "world", "workers"), [(5, 2, 2), (8, 2, 2), (13, 3, 2), (4, 1, 4), (100, 4, 3)])
def test_partition_is_disjoint_and_covers(n, world, workers, policy, seed):
    slides = [f"s{i}" for i in range(n)]
    parts = [
        partition_slides_by_rank(slides, r, world, w, workers, policy=policy, seed=seed)
        for r in range(world)
        for w in range(workers)
    ]
    flat = [s for p in parts for s in p]
    assert sorted(flat) == sorted(slides)  # every slide once: disjoint and complete
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_partition_depends_only_on_shard_count():
    slides = list(range(11))
    two_by_two = [partition_slides_by_rank(slides, r, 2, w, 2) for r in range(2) for w in range(2)]
    one_by_four = [partition_slides_by_rank(slides, 0, 1, w, 4) for w in range(4)]
    assert two_by_two == one_by_four


def test_more_shards_than_slides():
    with pytest.raises(ValueError, match="3 slides cannot be split over 4 shards"):
        shard_indices(3, 0, 4)
    assert [shard_indices(3, s, 4, wrap=True) for s in range(4)] == [[0], [1], [2], [0]]
    with pytest.raises(ValueError, match="policy"):
        shard_indices(3, 0, 2, policy="random")
    with pytest.raises(ValueError, match="worker_id"):
        partition_slides_by_rank([1, 2], 0, 1, worker_id=2, num_workers=2)


def test_docstring_examples():
    assert doctest.testmod(sharding).failed == 0


def test_rank_world_from_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_rank_world() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_rank_world() == (1, 2)
    assert resolve_rank_world(rank=0) == (0, 2)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="set both"):
        resolve_rank_world()
    with pytest.raises(ValueError, match="rank must be in"):
        resolve_rank_world(3, 2)


def test_invalid_combinations_raise_before_training(cohort):
    slides = cohort[:3]
    with pytest.raises(ValueError, match="DDP step would hang"):
        WsiStreamDataset(grid_pipeline(slides), rank=0, world_size=2)
    with pytest.raises(ValueError, match="3 slides cannot be split over 4 rank"):
        WsiStreamDataset(random_pipeline(slides), rank=0, world_size=4)
    ds = WsiStreamDataset(random_pipeline(slides), rank=0, world_size=2)
    with pytest.raises(ValueError, match="use num_workers <= 1"):
        make_loader(ds, batch_size=4, num_workers=2)
    with pytest.raises(ValueError, match="pass patches_per_rank >= 2"):
        make_loader(WsiStreamDataset(random_pipeline(slides), patches_per_rank=1), batch_size=4, num_workers=2)
    with pytest.raises(ValueError, match="need num_workers >= 1"):
        make_loader(WsiStreamDataset(random_pipeline(slides)), batch_size=4, persistent_workers=True)
    with pytest.raises(TypeError, match="PatchPipeline"):
        WsiStreamDataset(lambda: 3)
    with pytest.raises(ValueError, match="patches_per_rank must be >= 1"):
        WsiStreamDataset(random_pipeline(slides), patches_per_rank=0)


def test_unpicklable_factory_under_spawn_raises_before_training(cohort):
    ds = WsiStreamDataset(lambda: random_pipeline(cohort[:2]))
    with pytest.raises(ValueError, match=r"cannot be pickled.*module-level function"):
        make_loader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    make_loader(ds, batch_size=4, num_workers=1, multiprocessing_context="fork")  # fork needs no pickling
