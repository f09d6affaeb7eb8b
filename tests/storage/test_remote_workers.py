"""Forked DataLoader workers over s3://, gs:// and https:// exit cleanly and stream every patch.

Each protocol's client (s3fs/aiobotocore + urllib3, gcsfs/aiohttp, fsspec-http/aiohttp) runs an
event loop thread in the parent before the fork; a child inheriting it must open its own and must
not fail when the parent's session is garbage-collected there. The workers' patches must be the
ones the main process streams from local copies (same seed, same slides).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wsistream.storage.loopback import s3_options
from wsistream.storage.loopback_http import gcs_options

_SCRIPT = """
import gc, json, sys
gc.set_threshold(20)  # frequent collections, so one runs on a worker's event-loop thread (the failing case)
import numpy as np
from wsistream.backends import TiffSlideBackend
from wsistream.pipeline import PatchPipeline
from wsistream.sampling import RandomSampler
from wsistream.storage import StorageConfig
from wsistream.torch import WsiStreamDataset, make_loader

urls, cache, options, out = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
backend = TiffSlideBackend(storage=StorageConfig(options=options, cache_dir=cache))
with backend.open(urls[0]) as handle:  # the parent has a filesystem, a session and an event loop thread
    handle.read_region(0, 0, 0, (64, 64))
pipeline = PatchPipeline(
    slide_paths=urls, sampler=RandomSampler(patch_size=224, target_mpp=0.5),
    backend=backend, pool_size=1, patches_per_slide=8, cycle=False, seed=3,
)
batches = list(make_loader(WsiStreamDataset(pipeline), batch_size=4, num_workers=2))
keys = [
    f"{p.rsplit('/', 1)[-1]}:{x}:{y}"
    for b in batches for p, x, y in zip(b["slide_path"], b["x0"].tolist(), b["y0"].tolist())
]
images = np.concatenate([b["image"].numpy() for b in batches])
np.savez(out, keys=np.asarray(keys), images=images)
print(len(keys))
"""

SVS = ("synthetic-40x.svs", "CMU-1-Small-Region.svs")


def _run_workers(urls, options, tmp_path, name):
    out = tmp_path / f"{name}.npz"
    args = [json.dumps(urls), str(tmp_path / f"cache-{name}"), json.dumps(options), str(out)]
    run = subprocess.run([sys.executable, "-c", _SCRIPT, *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "different loop" not in run.stderr, run.stderr[-3000:]
    data = np.load(out)
    return dict(zip(data["keys"].tolist(), data["images"], strict=True))


@pytest.fixture(scope="module")
def local_patches(shared_slide, tmp_path_factory):
    """Every patch of the same pipeline over the local copies, keyed by slide file name and level-0 x, y."""
    return _run_workers([shared_slide(n) for n in SVS], {}, tmp_path_factory.mktemp("local"), "local")


@pytest.mark.parametrize("protocol", ["s3", "gs", "https"])
def test_two_forked_workers_stream_the_local_patches_and_leave_no_traceback(protocol, request, local_patches, tmp_path):
    pytest.importorskip("torch")
    if protocol == "s3":
        urls = [request.getfixturevalue("s3_slides")[n][1] for n in SVS]
        options = s3_options(request.getfixturevalue("proxy").endpoint_url)
    elif protocol == "gs":
        urls = [request.getfixturevalue("gcs_slides")[n][1] for n in SVS]
        options = gcs_options(request.getfixturevalue("gcs_server").endpoint_url)
    else:  # plain http here; TLS is covered in test_remote_https.py
        base = request.getfixturevalue("web_proxy").endpoint_url
        urls, options = [f"{base}/cohort/{n}" for n in SVS], {}
    remote = _run_workers(urls, options, tmp_path, protocol)
    assert len(remote) == 16  # 8 patches of each slide, each exactly once
    assert remote.keys() == local_patches.keys()
    for key, image in remote.items():
        np.testing.assert_array_equal(image, local_patches[key], err_msg=key)
