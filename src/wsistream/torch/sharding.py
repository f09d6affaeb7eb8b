"""Which slides a (rank, worker) streams, and the seed it streams them with.

A *shard* is one DataLoader worker of one rank: shard ``s = rank · num_workers
+ worker_id`` of ``S = world_size · num_workers``.  Slides are split between
shards before any is opened, so no two workers or ranks ever hold the same
slide (unless the ``wrap`` policy is asked for, see
:func:`partition_slides_by_rank`), and the split depends only on ``S``: two
ranks of two workers stream exactly what one rank of four workers would.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np

T = TypeVar("T")

PartitionPolicy = Literal["strided", "contiguous"]

#: Salt of the per-epoch partition shuffle (distinct from the per-shard seeds).
_PARTITION_SALT = 0x5EED_0001
#: Salt of the per-shard pipeline seeds.
_SHARD_SALT = 0x5EED_0002


def resolve_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Return the ``(rank, world_size)`` of this process.

    Explicit arguments win; otherwise :mod:`torch.distributed` when it is
    initialised; otherwise the ``RANK`` / ``WORLD_SIZE`` environment variables
    that ``torchrun`` sets; otherwise ``(0, 1)``.

    Raises
    ------
    ValueError
        Only one of ``RANK`` / ``WORLD_SIZE`` is set, a value is not an
        integer, or ``rank`` is outside ``[0, world_size)``.
    """
    if rank is None or world_size is None:
        found = _from_distributed() or _from_env()
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    rank, world_size = int(rank), int(world_size)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


def _from_distributed() -> tuple[int, int] | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _from_env() -> tuple[int, int]:
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return 0, 1
    if rank is None or world is None:
        raise ValueError(
            f"RANK={rank!r} and WORLD_SIZE={world!r}: set both (torchrun does) or pass rank= and world_size="
        )
    try:
        return int(rank), int(world)
    except ValueError:
        raise ValueError(f"RANK={rank!r} and WORLD_SIZE={world!r} must be integers") from None


def shard_indices(
    n_items: int,
    shard: int,
    n_shards: int,
    *,
    policy: PartitionPolicy = "strided",
    seed: int | Sequence[int] | None = None,
    wrap: bool = False,
) -> list[int]:
    """Return the indices (into a list of ``n_items``) that belong to ``shard`` of ``n_shards``.

    Parameters
    ----------
    n_items : int
        Number of slides.
    shard, n_shards : int
        This shard and the total; ``0 <= shard < n_shards``.
    policy : {"strided", "contiguous"}
        ``"strided"``: items ``shard, shard + S, shard + 2S, ...``;
        ``"contiguous"``: one block of consecutive items per shard.  Shard
        sizes differ by at most one either way.
    seed : int or sequence of int, optional
        Permute the items with this seed before splitting (every shard must
        pass the same seed; the split stays disjoint).
    wrap : bool
        When ``n_shards > n_items``, give shard ``s`` the single item
        ``s mod n_items`` instead of raising (the item is then streamed by
        several shards at once).

    Raises
    ------
    ValueError
        ``n_shards > n_items`` without ``wrap``, or an invalid argument.
    """
    if n_items < 1:
        raise ValueError("no slides to partition; pass at least one slide")
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, n_shards={n_shards}), got {shard}")
    if policy not in ("strided", "contiguous"):
        raise ValueError(f"policy={policy!r}; pass 'strided' or 'contiguous'")
    order = np.arange(n_items)
    if seed is not None:
        key = [_PARTITION_SALT, *([seed] if isinstance(seed, (int, np.integer)) else seed)]
        order = np.random.default_rng([int(k) for k in key]).permutation(n_items)
    if n_shards > n_items:
        if not wrap:
            raise ValueError(
                f"{n_items} slides cannot be split over {n_shards} shards (ranks × DataLoader workers) "
                "without leaving some empty; use fewer workers or ranks, add slides, or pass "
                "patches_per_rank=N to WsiStreamDataset (its equal-length policy lets shards share slides)"
            )
        return [int(order[shard % n_items])]
    if policy == "strided":
        picked = order[shard::n_shards]
    else:
        base, extra = divmod(n_items, n_shards)
        start = shard * base + min(shard, extra)
        picked = order[start : start + base + (1 if shard < extra else 0)]
    return [int(i) for i in picked]


def partition_slides_by_rank(
    slides: Sequence[T],
    rank: int,
    world_size: int,
    worker_id: int = 0,
    num_workers: int = 1,
    *,
    policy: PartitionPolicy = "strided",
    seed: int | Sequence[int] | None = None,
    wrap: bool = False,
) -> list[T]:
    """Return the slides that DataLoader worker ``worker_id`` of ``rank`` streams.

    Disjoint across all ``world_size × num_workers`` (rank, worker) pairs and
    together covering every slide; see :func:`shard_indices` for ``policy``,
    ``seed`` and ``wrap``.

    Examples
    --------
    >>> partition_slides_by_rank(list("abcde"), rank=1, world_size=2, worker_id=0, num_workers=2)
    ['c']
    >>> partition_slides_by_rank(list("abcde"), rank=0, world_size=2, worker_id=0, num_workers=2)
    ['a', 'e']
    """
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise ValueError(f"worker_id must be in [0, num_workers={num_workers}), got {worker_id}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    shard = rank * num_workers + worker_id
    idx = shard_indices(len(slides), shard, world_size * num_workers, policy=policy, seed=seed, wrap=wrap)
    return [slides[i] for i in idx]


def shard_seed(seed: int, shard: int, n_shards: int, epoch: int, pass_no: int = 0) -> int:
    """Return the pipeline seed of one shard for one epoch (and wrap-around pass), 63 bits.

    Derived with :class:`numpy.random.SeedSequence`, so shards, epochs and
    passes draw independent streams from one user seed.
    """
    key = [_SHARD_SALT, int(seed), int(shard), int(n_shards), int(epoch), int(pass_no)]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def slides_fingerprint(slides: Sequence[str]) -> int:
    """CRC-32 of the ordered slide list (a checkpoint refuses a different list)."""
    crc = 0
    for path in slides:
        crc = zlib.crc32(path.encode("utf-8", "surrogateescape") + b"\0", crc)
    return crc
