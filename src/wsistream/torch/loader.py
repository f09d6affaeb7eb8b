"""``make_loader``: a checked, resumable DataLoader for a :class:`WsiStreamDataset`."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

from wsistream.torch.collate import collate_patches
from wsistream.torch.dataset import WsiStreamDataset


def start_method(multiprocessing_context: Any = None) -> str:
    """Return the start method DataLoader workers will use (``"fork"``, ``"spawn"`` or ``"forkserver"``)."""
    if multiprocessing_context is None:
        # allow_none=True: asking must not fix the global start method as a side effect
        method = multiprocessing.get_start_method(allow_none=True)
        return method or multiprocessing.get_all_start_methods()[0]  # the first is the platform default
    if isinstance(multiprocessing_context, str):
        return multiprocessing_context
    return str(multiprocessing_context.get_start_method())


def make_loader(
    dataset: WsiStreamDataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    multiprocessing_context: Any = None,
    drop_last: bool = False,
    stateful: bool = True,
    snapshot_every_n_steps: int = 1,
    **kwargs: Any,
) -> DataLoader[Any]:
    """Build a ``StatefulDataLoader`` (or a plain ``DataLoader``) after checking the combination.

    Everything that can be known before training is checked here, with a
    message that says what to change: too many shards for the slides, a
    pipeline or factory that cannot be pickled for ``spawn``/``forkserver``
    workers, ``persistent_workers``/``prefetch_factor`` without workers.

    Parameters
    ----------
    dataset : WsiStreamDataset
        The sharded stream.
    batch_size : int
        Patches per batch.
    num_workers, pin_memory, persistent_workers, prefetch_factor, multiprocessing_context, drop_last
        As for :class:`torch.utils.data.DataLoader`.
    collate_fn : callable, optional
        Default :data:`~wsistream.torch.collate_patches`.
    stateful : bool
        Return ``torchdata.stateful_dataloader.StatefulDataLoader`` (exact resume
        through ``state_dict()``); False gives a plain ``DataLoader``.
    snapshot_every_n_steps : int
        StatefulDataLoader's state transfer interval (1: a checkpoint may be taken after any batch).
    **kwargs
        Passed to the loader (``timeout``, ``worker_init_fn``, ``in_order``, ...).
    """
    if not isinstance(dataset, WsiStreamDataset):
        raise TypeError(f"make_loader takes a WsiStreamDataset, got {type(dataset).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset.validate_workers(num_workers)
    if num_workers == 0 and (persistent_workers or prefetch_factor is not None):
        raise ValueError("persistent_workers and prefetch_factor need num_workers >= 1")
    if num_workers > 0 and start_method(multiprocessing_context) != "fork":
        dataset.check_picklable()
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "collate_fn": collate_fn or collate_patches,
        "pin_memory": pin_memory,
        "drop_last": drop_last,
        **kwargs,
    }
    if num_workers > 0:
        options.update(persistent_workers=persistent_workers, multiprocessing_context=multiprocessing_context)
        if prefetch_factor is not None:
            options["prefetch_factor"] = prefetch_factor
    if not stateful:
        return DataLoader(dataset, **options)
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError as exc:  # pragma: no cover - torchdata is part of the torch extra
        raise ImportError(
            "exact resume needs torchdata (pip install 'wsistream[torch]'), or pass stateful=False"
        ) from exc
    with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch API on construction
        warnings.filterwarnings("ignore", message=".*set_vital.*deprecated", category=UserWarning)
        loader: DataLoader[Any] = StatefulDataLoader(dataset, snapshot_every_n_steps=snapshot_every_n_steps, **options)
        return loader
