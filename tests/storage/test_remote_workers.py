"""Forked DataLoader workers over S3 exit cleanly: no inherited event loop or session left to fail."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_SCRIPT = """
import gc, sys
gc.set_threshold(20)  # frequent collections, so one runs on a worker's event-loop thread (the failing case)
from wsistream.backends import TiffSlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import RandomSampler
from wsistream.storage import StorageConfig
from wsistream.torch import WsiStreamDataset, make_loader

url, cache = sys.argv[1], sys.argv[2]
backend = TiffSlideBackend(storage=StorageConfig(cache_dir=cache))
with backend.open(url) as handle:  # the parent has a filesystem, a session and an event loop thread
    handle.read_region(0, 0, 0, (64, 64))
pipeline = PatchPipeline(
    slide_paths=[url, url.replace("synthetic-40x", "CMU-1-Small-Region")],
    sampler=RandomSampler(patch_size=224, target_mpp=0.5),
    backend=backend, pool_size=1, patches_per_slide=8, cycle=False, seed=3,
)
n = sum(len(batch["x0"]) for batch in make_loader(WsiStreamDataset(pipeline), batch_size=4, num_workers=2))
print(n)
"""


def test_two_forked_workers_over_s3_leave_no_traceback(s3_slides, proxy, tmp_path):
    pytest.importorskip("torch")
    env = {
        **os.environ,
        "FSSPEC_S3_ENDPOINT_URL": proxy.endpoint_url,
        "FSSPEC_S3_KEY": "testing",
        "FSSPEC_S3_SECRET": "testing",
    }
    url = s3_slides["synthetic-40x.svs"][1]
    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT, url, str(tmp_path / "cache")], env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "16"  # 8 patches of each slide
    assert "Traceback" not in run.stderr and "different loop" not in run.stderr, run.stderr[-3000:]
