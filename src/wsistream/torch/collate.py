"""Batches of uint8 tensors for the GPU, and the on-device normaliser that turns them into floats."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import get_worker_info

from wsistream.torch._shard import StreamItem, WorkerStats
from wsistream.types import FailureRecord

#: ImageNet channel statistics (RGB, on [0, 1] pixels), the default of :class:`GpuNormalizer`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INT_FIELDS = ("x0", "y0", "level", "read_size", "patch_size")
_ITEM_FIELDS = ("slide_index", "shard", "epoch", "index")


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it is allocated in shared memory.

    A worker's batch crosses to the main process through shared memory: a tensor that is not already
    there is copied into a fresh segment when it is sent (``default_collate`` allocates in shared
    memory for the same reason).  Allocating there directly saves that copy.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)  # type: ignore[no-untyped-call]
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def _stacked(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-shape arrays → one tensor ``N×...`` of their dtype, stacked straight into :func:`_empty`."""
    out = _empty((len(arrays), *arrays[0].shape), torch.from_numpy(arrays[0][:0]).dtype)
    np.stack(arrays, out=out.numpy())
    return out


def _images(arrays: Sequence[np.ndarray], channels_last: bool) -> torch.Tensor:
    """N×H×W×3 uint8 arrays → N×3×H×W uint8 tensor (NCHW-contiguous, or channels-last strides).

    One copy per patch, straight into the output: ``cv2.split`` writes the three planes of an H×W×3
    patch in one pass (≈ 5× faster than a strided NumPy/torch transpose, identical values), where
    stacking and then making the permuted stack contiguous copied every pixel twice.
    """
    height, width, channels = arrays[0].shape
    if channels_last:
        stacked = _empty((len(arrays), height, width, channels), torch.uint8)
        np.stack(arrays, out=stacked.numpy())
        return stacked.permute(0, 3, 1, 2)
    out = _empty((len(arrays), channels, height, width), torch.uint8)
    planes = out.numpy()
    for i, array in enumerate(arrays):
        if array.shape != (height, width, channels) or array.dtype != np.uint8:
            raise ValueError(
                f"patch {i} of the batch is {array.dtype} {array.shape}; every patch must be uint8 "
                f"{(height, width, channels)} like the first"
            )
        if channels == 3 and array.flags.c_contiguous:
            cv2.split(array, list(planes[i]))
        else:
            np.copyto(planes[i], array.transpose(2, 0, 1))
    return out


@dataclass(frozen=True)
class PatchCollator:
    """Collate :class:`~wsistream.torch.StreamItem` s into a dict of tensors.

    The batch holds (``N`` patches):

    * ``image``: uint8 ``N×3×H×W``; ``views``: ``{name: uint8 N×3×h×w}`` when the pipeline has views,
      or ``view_plans``: ``{name: float64 N×P}`` with ``view_rendering="device"`` (render them with
      :class:`~wsistream.torch.DeviceViews`);
    * ``x0``, ``y0``, ``level``, ``read_size``, ``patch_size``: int64 ``N`` (level-0 / read-level pixels);
    * ``mpp`` (NaN when unknown), ``level_downsample``, ``tissue_fraction``: float64 ``N``;
    * ``slide_index``, ``shard``, ``epoch``, ``index``: int64 ``N`` (``(shard, epoch, index)`` is unique);
    * ``slide_path``, ``dataset_name``, ``patient_id``: lists of ``N`` strings;
    * ``failures``: list of :class:`~wsistream.types.FailureRecord` recorded by the producing
      worker since its previous item, and ``worker_stats``: the latest
      :class:`~wsistream.torch.WorkerStats` of each worker in the batch.

    A batch made only of failure notices has ``N = 0`` (``image`` is ``0×3×P×P``).

    Parameters
    ----------
    channels_last : bool
        Return images with channels-last strides (a view of the stacked
        H×W×3 patches, no copy) instead of NCHW-contiguous.
    pin_memory : bool
        Pin the tensors (main process only, and only when an accelerator is
        present; with ``num_workers > 0`` pass ``pin_memory=True`` to the
        DataLoader instead: workers must not touch the accelerator).
    """

    channels_last: bool = False
    pin_memory: bool = False

    def __call__(self, items: Sequence[StreamItem]) -> dict[str, Any]:
        """Collate one batch."""
        if not items:
            raise ValueError("cannot collate an empty list of items")
        if not isinstance(items[0], StreamItem):
            raise TypeError(
                f"collate_patches expects StreamItem (from WsiStreamDataset), got {type(items[0]).__name__}"
            )
        if self.pin_memory and get_worker_info() is not None:
            raise ValueError(
                "PatchCollator(pin_memory=True) runs in a DataLoader worker here; pass pin_memory=True "
                "to the DataLoader instead (it pins in the main process)"
            )
        patches = [it for it in items if it.result is not None]
        results = [it.result for it in patches]
        batch: dict[str, Any] = {}
        if results:
            batch["image"] = _images([r.image for r in results], self.channels_last)  # type: ignore[union-attr]
            names = results[0].views  # type: ignore[union-attr]
            if names is not None:
                batch["views"] = {
                    key: _images([r.views[key] for r in results], self.channels_last)  # type: ignore[union-attr,index]
                    for key in names
                }
            plans = results[0].view_plans  # type: ignore[union-attr]
            if plans is not None:
                batch["view_plans"] = {key: _stacked([r.view_plans[key] for r in results]) for key in plans}  # type: ignore[union-attr,index]
        else:
            size = items[0].patch_size
            batch["image"] = torch.empty((0, 3, size, size), dtype=torch.uint8)
        coords = [r.coordinate for r in results]  # type: ignore[union-attr]
        ints = _empty((len(_INT_FIELDS) + len(_ITEM_FIELDS), len(patches)), torch.int64)
        columns = ints.numpy()
        for k, name in enumerate(_INT_FIELDS):
            columns[k] = [getattr(c, name) for c in coords]
        for k, name in enumerate(_ITEM_FIELDS, start=len(_INT_FIELDS)):
            columns[k] = [getattr(it, name) for it in patches]
        floats = _empty((3, len(patches)), torch.float64)
        floats.numpy()[:] = [
            [math.nan if c.mpp is None else c.mpp for c in coords],
            [c.level_downsample for c in coords],
            [r.tissue_fraction for r in results],  # type: ignore[union-attr]
        ]
        # Rows of two buffers, not 12 tensors: each tensor a worker sends costs a shared-memory segment
        # and a file-descriptor hand-off on both sides.
        batch.update(zip((*_INT_FIELDS, *_ITEM_FIELDS), ints, strict=True))
        batch.update(zip(("mpp", "level_downsample", "tissue_fraction"), floats, strict=True))
        batch["slide_path"] = [c.slide_path for c in coords]
        batch["dataset_name"] = [r.slide_metadata.dataset_name for r in results]  # type: ignore[union-attr]
        batch["patient_id"] = [r.slide_metadata.patient_id or "" for r in results]  # type: ignore[union-attr]
        failures: list[FailureRecord] = []
        latest: dict[int, WorkerStats] = {}
        for it in items:
            failures.extend(it.failures)
            latest[it.shard] = it.worker
        batch["failures"] = failures
        batch["worker_stats"] = list(latest.values())
        if self.pin_memory and _accelerator_available():
            batch = _map_tensors(batch, lambda t: t.pin_memory())
        return batch


#: The default collate for :class:`~wsistream.torch.WsiStreamDataset` (NCHW uint8, no pinning).
collate_patches = PatchCollator()


def _map_tensors(obj: Any, fn: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    return obj


def to_device(batch: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Move every tensor of a (nested) batch to ``device``; other values are returned as they are."""
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


class GpuNormalizer(nn.Module):
    """uint8 ``N×3×H×W`` (any device) → normalised float on this module's device.

    ``(x / 255 - mean) / std``, computed in float32 as one fused multiply-add
    and cast to ``dtype``, so workers ship 1 byte per channel and the float
    conversion happens on the accelerator.  Move the module with ``.to(device)``.

    Parameters
    ----------
    mean, std : sequence of float
        Per-channel statistics of ``[0, 1]`` pixels.  Default ImageNet.
    channels_last : bool
        Return ``torch.channels_last`` memory format (faster convolutions with AMP).
    dtype : torch.dtype
        Output dtype (``torch.float32``, ``torch.bfloat16``, ``torch.float16``).
    non_blocking : bool
        Asynchronous host→device copy (effective for pinned inputs).
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        non_blocking: bool = True,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(f"mean and std need one value per channel, got {mean_t.numel()} and {std_t.numel()}")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be > 0 for every channel, got {tuple(std_t.tolist())}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating (e.g. torch.float32, torch.bfloat16), got {dtype}")
        self.channels_last = channels_last
        self.dtype = dtype
        self.non_blocking = non_blocking
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch ``N×C×H×W`` (or one image ``C×H×W``)."""
        if x.dim() not in (3, 4) or x.shape[-3] != self.scale.shape[1]:
            raise ValueError(f"expected N×C×H×W or C×H×W with C={self.scale.shape[1]}, got shape {tuple(x.shape)}")
        single = x.dim() == 3
        x = x.to(self.scale.device, non_blocking=self.non_blocking)
        if single:
            x = x.unsqueeze(0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = torch.addcmul(self.shift, x.to(torch.float32), self.scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        out = out.to(self.dtype)
        return out[0] if single else out

    def extra_repr(self) -> str:
        """Options shown by ``repr``."""
        return f"channels_last={self.channels_last}, dtype={self.dtype}"
