"""Collate to uint8 tensors, the on-device normaliser, and device transfer."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch_helpers import PATCH, grid_pipeline, random_pipeline, small_views

from wsistream.torch import GpuNormalizer, PatchCollator, StreamItem, WsiStreamDataset, collate_patches, to_device
from wsistream.types import FailureRecord


@pytest.fixture(scope="module")
def items(cohort):
    ds = WsiStreamDataset(random_pipeline(cohort[:2], views=small_views()))
    it = iter(ds)
    return [next(it) for _ in range(5)]


def test_collate_shapes_dtypes_and_values(items):
    batch = collate_patches(items)
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (5, 3, PATCH, PATCH)
    assert batch["image"].is_contiguous()
    np.testing.assert_array_equal(batch["image"][2].permute(1, 2, 0).numpy(), items[2].result.image)
    assert set(batch["views"]) == {"global_0", "global_1", "local_0", "local_1"}
    assert batch["views"]["local_1"].shape == (5, 3, 12, 12) and batch["views"]["global_0"].dtype == torch.uint8
    np.testing.assert_array_equal(
        batch["views"]["local_1"][4].permute(1, 2, 0).numpy(), items[4].result.views["local_1"]
    )
    for key in ("x0", "y0", "level", "read_size", "patch_size", "slide_index", "shard", "epoch", "index"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (5,)
    assert batch["x0"].tolist() == [it.result.coordinate.x0 for it in items]
    assert batch["mpp"].dtype == torch.float64 and math.isclose(batch["mpp"][0].item(), 2.0, rel_tol=1e-3)
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]
    assert batch["slide_path"] == [it.result.coordinate.slide_path for it in items]
    assert batch["failures"] == [] and len(batch["worker_stats"]) == 1


def test_channels_last_is_a_view_of_the_stacked_patches(items):
    batch = PatchCollator(channels_last=True)(items)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch["image"], collate_patches(items)["image"])


def test_every_numeric_field_equals_its_item(items):
    batch = collate_patches(items)
    for key in ("x0", "y0", "level", "read_size", "patch_size"):
        assert batch[key].tolist() == [getattr(it.result.coordinate, key) for it in items], key
    for key in ("slide_index", "shard", "epoch", "index"):
        assert batch[key].tolist() == [getattr(it, key) for it in items], key
    assert batch["level_downsample"].tolist() == [it.result.coordinate.level_downsample for it in items]
    assert batch["tissue_fraction"].tolist() == [it.result.tissue_fraction for it in items]
    assert batch["mpp"].tolist() == [it.result.coordinate.mpp for it in items]


def _collate_and_report_sharing(items):
    batch = collate_patches(items)
    flags = {k: v.is_shared() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return batch, flags, {k: v.is_shared() for k, v in batch["views"].items()}


class _ItemsOnce(torch.utils.data.IterableDataset):
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        yield self.items


def test_a_worker_collates_into_shared_memory_with_the_same_values(items):
    """In a worker, tensors are allocated in shared memory (no copy when sent); values are unchanged."""
    loader = torch.utils.data.DataLoader(
        _ItemsOnce(items), batch_size=None, num_workers=1, collate_fn=_collate_and_report_sharing
    )
    batch, flags, view_flags = next(iter(loader))
    assert all(flags.values()) and all(view_flags.values()), (flags, view_flags)
    here = collate_patches(items)
    assert not here["image"].is_shared()  # in the main process: ordinary memory
    for key, value in here.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[key], value), key
    for key, view in here["views"].items():
        assert torch.equal(batch["views"][key], view), key


def test_collate_refuses_patches_that_are_not_uint8_like_the_first(items):
    bad = items[1].result.image.astype(np.float32)
    wrong = [items[0], dataclasses.replace(items[1], result=dataclasses.replace(items[1].result, image=bad))]
    with pytest.raises(ValueError, match="must be uint8"):
        collate_patches(wrong)


def test_a_non_contiguous_patch_is_copied_exactly(items):
    flipped = np.ascontiguousarray(items[1].result.image)[:, ::-1]  # a strided view
    mixed = [items[0], dataclasses.replace(items[1], result=dataclasses.replace(items[1].result, image=flipped))]
    np.testing.assert_array_equal(collate_patches(mixed)["image"][1].permute(1, 2, 0).numpy(), flipped)


def test_a_batch_of_failure_notices_is_empty_but_carries_the_failures(items):
    record = FailureRecord("x.svs", "open", "SlideOpenError", "boom")
    notice = StreamItem(None, 1, 0, -1, -1, (record,), items[0].worker, PATCH)
    batch = collate_patches([notice])
    assert batch["image"].shape == (0, 3, PATCH, PATCH) and batch["x0"].shape == (0,)
    assert batch["failures"] == [record]
    mixed = collate_patches([items[0], notice])
    assert mixed["image"].shape[0] == 1 and mixed["failures"] == [record]


def test_collate_rejects_foreign_items():
    with pytest.raises(TypeError, match="StreamItem"):
        collate_patches([np.zeros((2, 2, 3), np.uint8)])


def test_pinning_inside_a_worker_is_refused(cohort):
    from wsistream.torch import make_loader

    ds = WsiStreamDataset(grid_pipeline(cohort[:2]))
    loader = make_loader(ds, batch_size=4, num_workers=1, collate_fn=PatchCollator(pin_memory=True))
    with pytest.raises(ValueError, match="pass pin_memory=True to the DataLoader"):
        next(iter(loader))
    batch = next(iter(make_loader(ds, batch_size=4, collate_fn=PatchCollator(pin_memory=True))))  # main: ok
    assert batch["image"].shape[0] == 4


def test_gpu_normalizer_matches_the_formula():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (x.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    norm = GpuNormalizer()
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm(x[0]), expected[0], rtol=1e-5, atol=1e-5)
    cl = GpuNormalizer(channels_last=True, dtype=torch.bfloat16)(x)
    assert cl.dtype == torch.bfloat16 and cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.float(), expected, rtol=2e-2, atol=2e-2)
    assert GpuNormalizer(mean=(0.5,), std=(0.5,))(x[:, :1]).shape == (2, 1, 8, 8)
    assert "scale" not in norm.state_dict()  # constants, not checkpoint content


def test_gpu_normalizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="std must be > 0"):
        GpuNormalizer(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="one value per channel"):
        GpuNormalizer(mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="floating"):
        GpuNormalizer(dtype=torch.int32)
    with pytest.raises(ValueError, match="C=3"):
        GpuNormalizer()(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))


def test_to_device_moves_nested_tensors_only(items):
    batch = to_device(collate_patches(items), "cpu")
    assert batch["views"]["global_0"].device.type == "cpu" and isinstance(batch["slide_path"], list)
