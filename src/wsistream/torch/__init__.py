"""PyTorch integration: a sharded, exactly resumable IterableDataset and GPU-ready batches.

>>> from wsistream.torch import WsiStreamDataset, make_loader, GpuNormalizer  # doctest: +SKIP
>>> ds = WsiStreamDataset(pipeline)                      # ranks from torchrun / torch.distributed
>>> loader = make_loader(ds, batch_size=256, num_workers=8, pin_memory=True)  # a StatefulDataLoader
>>> norm = GpuNormalizer(channels_last=True).to("cuda")
>>> for batch in loader:
...     x = norm(batch["image"])                         # uint8 on the wire, float on the GPU

See ``docs/torch.md``.
"""

from wsistream.torch._shard import ShardUnusableError, StreamItem, WorkerStats
from wsistream.torch.bench import benchmark_throughput
from wsistream.torch.collate import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GpuNormalizer,
    PatchCollator,
    collate_patches,
    to_device,
)
from wsistream.torch.dataset import STATE_FORMAT, PipelineSource, WsiStreamDataset
from wsistream.torch.device_views import DeviceViews
from wsistream.torch.loader import make_loader
from wsistream.torch.monitor import MonitoredLoader
from wsistream.torch.sharding import (
    partition_slides_by_rank,
    resolve_rank_world,
    shard_indices,
    shard_seed,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STATE_FORMAT",
    "DeviceViews",
    "GpuNormalizer",
    "MonitoredLoader",
    "PatchCollator",
    "PipelineSource",
    "ShardUnusableError",
    "StreamItem",
    "WorkerStats",
    "WsiStreamDataset",
    "benchmark_throughput",
    "collate_patches",
    "make_loader",
    "partition_slides_by_rank",
    "resolve_rank_world",
    "shard_indices",
    "shard_seed",
    "to_device",
]
