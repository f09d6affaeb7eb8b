"""A real S3 server (moto, server mode) on loopback with the shared slides, behind a fault proxy."""

from __future__ import annotations

import itertools

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
    return _uploaded(s3_server, shared_slide)


def _uploaded(server, shared_slide):
    """name -> (local path, URL) of :data:`SLIDES` uploaded to ``server`` under ``cohort/``."""
    local = [shared_slide(name) for name in SLIDES]
    urls = server.upload(local, prefix="cohort/")
    return {name: (path, url) for name, path, url in zip(SLIDES, local, urls)}


@pytest.fixture(scope="session")
def _session_proxy(s3_server):
    with FaultProxy(s3_server.endpoint_url, stall_s=3.0) as proxy:
        yield proxy


@pytest.fixture
def proxy(_session_proxy):
    """The fault proxy, with no faults pending before and after the test."""
    yield from _cleared(_session_proxy)


def _cleared(proxy):
    proxy.clear()
    yield proxy
    proxy.clear()


@pytest.fixture
def storage(proxy, tmp_path):
    """Short timeouts and backoff so fault tests take well under a second each; a fresh IFD cache."""
    return fast_faults(s3_options(proxy.endpoint_url), tmp_path)


@pytest.fixture(scope="session")
def gcs_server():
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("gcsfs")
    from wsistream.storage.loopback_http import LoopbackGCS

    with LoopbackGCS() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_slides(gcs_server, shared_slide):
    """name -> (local path, gs URL) of the shared slides uploaded under ``cohort/``."""
    return _uploaded(gcs_server, shared_slide)


@pytest.fixture(scope="session")
def web_server(shared_slide):
    """A plain-HTTP Range server on loopback with the shared slides under ``cohort/``."""
    from wsistream.storage.loopback_http import RangeFileServer

    with RangeFileServer() as server:
        server.upload([shared_slide(name) for name in SLIDES], prefix="cohort/")
        yield server


@pytest.fixture(scope="session")
def _web_proxy(web_server):
    with FaultProxy(web_server.endpoint_url, stall_s=3.0) as proxy:
        yield proxy


@pytest.fixture
def web_proxy(_web_proxy):
    """The fault proxy in front of :func:`web_server`, with no faults pending before and after the test."""
    yield from _cleared(_web_proxy)


def fast_faults(options, tmp_path):
    return StorageConfig(options=options, timeout_s=1.0, retries=2, backoff_s=0.01, cache_dir=str(tmp_path / "c"))


@pytest.fixture
def storage_for(tmp_path):
    """``storage_for(options)``: short timeouts and backoff (a fault test takes < 1 s); a fresh IFD cache."""
    return lambda options: fast_faults(options, tmp_path)


@pytest.fixture(scope="session")
def seeded_pipeline():
    """``seeded_pipeline(slides, backend, **kw)``: the fixed-seed random pool the remote tests compare."""
    return _seeded_pipeline


def _seeded_pipeline(slides, backend, **kw):
    from wsistream.pipeline import PatchPipeline
    from wsistream.sampling import RandomSampler

    return PatchPipeline(
        slide_paths=slides,
        sampler=RandomSampler(patch_size=224, target_mpp=0.5),
        backend=backend,
        pool_size=2,
        patches_per_slide=6,
        patches_per_visit=2,
        slide_sampling="random",
        cycle=True,
        seed=7,
        **kw,
    )


@pytest.fixture(scope="session")
def seeded():
    """``seeded(slides, backend)``: the patches of a fixed-seed random pool (compare remote with local)."""
    return _seeded_stream


def _seeded_stream(slides, backend, n=12):
    """``n`` (name, x0, y0, level, read_size, image) of a fixed-seed random pool over ``slides``."""
    out = []
    for r in itertools.islice(_seeded_pipeline(slides, backend), n):
        c = r.coordinate
        out.append((c.slide_path.rsplit("/", 1)[-1], c.x0, c.y0, c.level, c.read_size, r.image.tobytes()))
    return out
