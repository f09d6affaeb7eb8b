"""A real S3 server (moto, server mode) on loopback with the shared slides, behind a fault proxy."""

from __future__ import annotations

import pytest

from wsistream.storage import StorageConfig
from wsistream.storage.loopback import FaultProxy, LoopbackS3, s3_options

SLIDES = ("CMU-1-Small-Region.svs", "synthetic-40x.svs", "test3-DAPI-2.ndpi")


@pytest.fixture(scope="session")
def s3_server():
    with LoopbackS3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_slides(s3_server, shared_slide):
    """name -> (local path, s3 URL) of the shared slides uploaded under ``cohort/``."""
    local = [shared_slide(name) for name in SLIDES]
    urls = s3_server.upload(local, prefix="cohort/")
    return {name: (path, url) for name, path, url in zip(SLIDES, local, urls)}


@pytest.fixture(scope="session")
def _session_proxy(s3_server):
    with FaultProxy(s3_server.endpoint_url, stall_s=3.0) as proxy:
        yield proxy


@pytest.fixture
def proxy(_session_proxy):
    """The fault proxy, with no faults pending before and after the test."""
    _session_proxy.clear()
    yield _session_proxy
    _session_proxy.clear()


@pytest.fixture
def storage(proxy, tmp_path):
    """Short timeouts and backoff so fault tests take well under a second each; a fresh IFD cache."""
    return StorageConfig(
        options=s3_options(proxy.endpoint_url), timeout_s=1.0, retries=2, backoff_s=0.01, cache_dir=str(tmp_path / "c")
    )
