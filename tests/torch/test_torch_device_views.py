"""DeviceViews replays planned views on torch with the CPU path's numerics (run here on CPU torch)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch_helpers import random_pipeline

from wsistream.torch import DeviceViews, WsiStreamDataset, collate_patches
from wsistream.torch import _device_ops as ops
from wsistream.transforms import (
    ColorJitter,
    GaussianBlur,
    HEDJitter,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomRotate90,
    RandomSolarize,
    RandomVerticalFlip,
)
from wsistream.views import (
    CenterCrop,
    RandomResizedCrop,
    Resize,
    ViewConfig,
    dinov2_multicrop,
    plan_views,
    render_views,
)


@pytest.fixture(scope="module")
def real_patches(cmu_svs):
    """Six 224-px patches of the real Aperio H&E slide (OpenSlide)."""
    import openslide

    with openslide.OpenSlide(cmu_svs) as slide:
        return [
            np.ascontiguousarray(np.asarray(slide.read_region((250 + 260 * i, 300 + 150 * i), 0, (224, 224)))[..., :3])
            for i in range(6)
        ]


def render_both(patches, views, seed=0):
    """CPU render_views and DeviceViews(plan_views) for the same per-patch seeds."""
    cpu = [render_views(p, views, np.random.default_rng([seed, i])) for i, p in enumerate(patches)]
    plans = [plan_views(views, *p.shape[:2], np.random.default_rng([seed, i])) for i, p in enumerate(patches)]
    images = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).contiguous()
    stacked = {k: torch.from_numpy(np.stack([p[k] for p in plans])) for k in plans[0]}
    device = DeviceViews(views)(images, stacked)
    return cpu, device


def assert_close(cpu, device, max_diff=2, max_frac=0.001):
    assert list(device) == list(cpu[0])
    for key, out in device.items():
        assert out.dtype == torch.uint8
        ours = out.permute(0, 2, 3, 1).numpy().astype(int)
        ref = np.stack([c[key] for c in cpu]).astype(int)
        assert ours.shape == ref.shape, key
        diff = np.abs(ours - ref)
        assert diff.max() <= max_diff, (key, diff.max())
        assert (diff > 0).mean() <= max_frac, (key, (diff > 0).mean())


@pytest.mark.parametrize("released_blur", [False, True])
def test_dinov2_multicrop_on_device_equals_the_cpu_views(real_patches, released_blur):
    cpu, device = render_both(real_patches, dinov2_multicrop(released_blur=released_blur, resize="opencv"))
    assert set(device) == {"global_0", "global_1", *(f"local_{i}" for i in range(8))}
    assert device["global_0"].shape == (6, 3, 224, 224) and device["local_3"].shape == (6, 3, 96, 96)
    assert_close(cpu, device)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("antialias", [True, False])
def test_crops_match_opencv(real_patches, interpolation, antialias):
    views = [
        ViewConfig("up", RandomResizedCrop(160, scale=(0.1, 0.5), interpolation=interpolation, antialias=antialias)),
        ViewConfig("down", RandomResizedCrop(64, scale=(0.3, 1.0), interpolation=interpolation, antialias=antialias)),
        ViewConfig("centre", CenterCrop(100, interpolation=interpolation)),
        ViewConfig("resize", Resize(150, interpolation=interpolation, antialias=antialias)),
    ]
    cpu, device = render_both(real_patches, views, seed=3)
    # OpenCV's uint8 bilinear uses 11-bit fixed-point weights: off by one on a few percent of values
    assert_close(cpu, device, max_diff=1, max_frac=0.1 if interpolation == "bilinear" else 0.01)


def test_every_photometric_op_fired_matches(real_patches):
    crop = RandomResizedCrop(128, scale=(0.3, 1.0))
    views = [
        ViewConfig("flip", crop, [RandomHorizontalFlip(p=1.0), RandomVerticalFlip(p=1.0)]),
        ViewConfig("jitter", crop, [ColorJitter(0.4, 0.4, 0.2, 0.1, p=1.0)], count=4),
        ViewConfig("strong", crop, [ColorJitter(0.9, 0.9, 0.9, 0.5, p=1.0)], count=2),
        ViewConfig("gray", crop, [RandomGrayscale(p=1.0), RandomSolarize(threshold=100, p=1.0)]),
        ViewConfig("blur", crop, [GaussianBlur(p=1.0, radius_min=0.1, radius_max=3.0)], count=2),
        ViewConfig("whole", None, [ColorJitter(brightness=0.5, p=1.0), GaussianBlur(p=1.0)]),
        ViewConfig("rot", crop, [RandomRotate90(p=1.0), RandomHorizontalFlip(p=0.5)], count=4),
        ViewConfig("hed", crop, [HEDJitter(sigma=0.2, p=1.0)], count=2),
        ViewConfig("hed_skimage", crop, [HEDJitter(sigma=0.05, units="skimage", p=1.0)]),
    ]
    cpu, device = render_both(real_patches, views, seed=7)
    assert_close(cpu, device, max_diff=3, max_frac=0.002)


def test_hsv_kernels_are_opencvs():
    img = np.random.default_rng(0).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)
    h, s, v = ops._rgb_to_hsv8(torch.from_numpy(img).permute(0, 3, 1, 2).float())
    ref = cv2.cvtColor(img[0], cv2.COLOR_RGB2HSV_FULL)
    for i, channel in enumerate((h, s, v)):
        np.testing.assert_array_equal(channel[0].numpy(), ref[..., i])
    hsv = img[0]
    back = ops._hsv8_to_rgb(*(torch.from_numpy(hsv[..., i].astype(np.int64))[None] for i in range(3)))
    diff = np.abs(back[0].permute(1, 2, 0).numpy() - cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_the_pipeline_streams_plans_that_render_to_its_cpu_views(cohort):
    views = [
        ViewConfig(
            "g",
            RandomResizedCrop(24, scale=(0.4, 1.0)),
            [RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8)],
            count=2,
        ),
        ViewConfig("l", RandomResizedCrop(12, scale=(0.1, 0.4)), [GaussianBlur(p=0.5), RandomSolarize(p=0.2)], count=3),
    ]

    def batch(rendering):
        ds = WsiStreamDataset(random_pipeline(cohort[:2], views=views, view_rendering=rendering))
        it = iter(ds)
        return collate_patches([next(it) for _ in range(12)])

    cpu, dev = batch("cpu"), batch("device")
    assert "view_plans" not in cpu and "views" not in dev
    assert torch.equal(cpu["image"], dev["image"]) and torch.equal(cpu["x0"], dev["x0"])  # same stream
    assert dev["view_plans"]["g_1"].dtype == torch.float64 and dev["view_plans"]["g_1"].shape[0] == 12
    rendered = DeviceViews(views)(dev["image"], dev["view_plans"])
    for key, ref in cpu["views"].items():
        diff = (rendered[key].int() - ref.int()).abs()
        assert diff.max() <= 3 and (diff > 0).float().mean() < 0.01, key


def test_validation(cohort):
    with pytest.raises(ValueError, match="view_rendering='device' needs views"):
        random_pipeline(cohort[:1], view_rendering="device")
    with pytest.raises(ValueError, match="view_rendering must be 'cpu' or 'device'"):
        random_pipeline(cohort[:1], views=dinov2_multicrop(32, 16), view_rendering="gpu")
    from wsistream.transforms import MacenkoNormalizer

    with pytest.raises(ValueError, match="MacenkoNormalizer cannot be replayed"):
        random_pipeline(
            cohort[:1], views=[ViewConfig("v", RandomResizedCrop(16), [MacenkoNormalizer()])], view_rendering="device"
        )
    with pytest.raises(ValueError, match="resize='pil' \\(Pillow's resampler\\) has no device kernel"):
        DeviceViews(dinov2_multicrop(n_local=0))
    with pytest.raises(ValueError, match="interpolation='area' cannot enlarge"):
        DeviceViews([ViewConfig("v", RandomResizedCrop(16, interpolation="area"))])
    render = DeviceViews([ViewConfig("v", RandomResizedCrop(16))])
    images = torch.zeros((2, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="lack view keys"):
        render(images, {})
    with pytest.raises(ValueError, match="expected \\(2, 4\\)"):
        render(images, {"v_0": torch.zeros((2, 5))})
    with pytest.raises(ValueError, match="uint8 N×3×H×W"):
        render(images.float(), {"v_0": torch.zeros((2, 4))})


def test_channels_last_and_autocast_render_the_same(real_patches):
    views = dinov2_multicrop(n_local=2, resize="opencv")
    plans = [plan_views(views, 224, 224, np.random.default_rng(i)) for i in range(2)]
    stacked = {k: torch.from_numpy(np.stack([p[k] for p in plans])) for k in plans[0]}
    nhwc = torch.from_numpy(np.stack(real_patches[:2])).permute(0, 3, 1, 2)  # PatchCollator(channels_last=True)
    render = DeviceViews(views)
    a, b = render(nhwc.contiguous(), stacked), render(nhwc, stacked)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a training loop's autocast region changes nothing
        c = render(nhwc, stacked)
    assert all(torch.equal(a[k], c[k]) for k in a)
