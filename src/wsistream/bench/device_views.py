"""Benchmark rows for :class:`~wsistream.torch.DeviceViews`: its cost and its agreement with CPU rendering.

Run on a GPU machine, ``wsistream bench`` then reports what the views cost the
accelerator (batch 256) and checks the CUDA numerics against the CPU views of
the same draws (``render_plan``); without a GPU both run on CPU torch (batch
32), which only shows the path works.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from wsistream.pipeline import PatchPipeline
from wsistream.torch import DeviceViews
from wsistream.views import ViewPlanner, render_plan

_WORKLOAD = "20x pool (8 slides)"


def device_views_rows(make: Callable[[], PatchPipeline]) -> list[dict[str, Any]]:
    """Time one batch through ``DeviceViews`` and compare it with ``render_plan`` of the same plans."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 256 if device == "cuda" else 32
    pipeline = make()
    stream = iter(pipeline)
    results = list(itertools.islice(stream, n))
    stream.close()
    images = torch.from_numpy(np.stack([r.image for r in results])).permute(0, 3, 1, 2).contiguous().to(device)
    keys = list(results[0].view_plans or {})
    plans = {k: torch.from_numpy(np.stack([r.view_plans[k] for r in results])).to(device) for k in keys}  # type: ignore[index]
    render = DeviceViews(pipeline.views or [])
    render(images, plans)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    rendered = render(images, plans)
    _sync(device)
    per_patch_ms = (time.perf_counter() - t0) / len(results) * 1e3

    planner = ViewPlanner(pipeline.views or [])
    worst, differing, total = 0, 0, 0
    for i, r in enumerate(results[:16]):  # the CPU reference of 16 patches
        cpu = render_plan(r.image, planner, r.view_plans or {})
        for key, view in cpu.items():
            diff = np.abs(rendered[key][i].permute(1, 2, 0).cpu().numpy().astype(np.int16) - view.astype(np.int16))
            worst, differing, total = max(worst, int(diff.max())), differing + int((diff > 0).sum()), total + diff.size
    return [
        {"workload": _WORKLOAD, "row": f"DeviceViews replay on {device} (torch, batch {n})",
         "value": round(per_patch_ms, 3), "unit": "ms/patch"},
        {"workload": _WORKLOAD, "row": f"DeviceViews on {device} vs CPU views: max |diff|",
         "value": float(worst), "unit": "grey levels", "fraction_differing": differing / total},
    ]  # fmt: skip


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
