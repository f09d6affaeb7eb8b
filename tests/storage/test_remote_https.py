"""https:// (and http://) against a Range-honouring server on loopback: same patches as local, named errors."""

from __future__ import annotations

import ssl
import time

import numpy as np
import pytest

from wsistream.backends import TiffSlideBackend
from wsistream.errors import RemoteNotFoundError, RemoteStorageError, SlideNotFoundError, SlideOpenError
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.storage.loopback_http import RangeFileServer

SVS = ("CMU-1-Small-Region.svs", "synthetic-40x.svs")


def _urls(base, names=SVS):
    return [f"{base}/cohort/{n}" for n in names]


@pytest.fixture
def web_storage(web_proxy, storage_for):
    return storage_for({})


def test_single_urls_and_a_list_file_stream_the_local_patches(web_server, web_proxy, web_storage, shared_slide, seeded):
    local = [shared_slide(n) for n in SVS]
    remote = _urls(web_proxy.endpoint_url)
    listed = web_server.put("lists/cohort.txt", ("# two slides\n" + "\n".join(remote) + "\n").encode())
    assert resolve_slide_paths(listed.replace(web_server.endpoint_url, web_proxy.endpoint_url), web_storage) == remote
    assert resolve_slide_paths(remote[0], web_storage) == remote[:1]  # https names one object: never listed
    with TiffSlideBackend(storage=web_storage).open(remote[0]) as handle:
        assert handle.uses_fast_tiles
    before = web_server.ranged_requests
    assert seeded(remote, TiffSlideBackend(storage=web_storage)) == seeded(local, TiffSlideBackend())
    assert web_server.ranged_requests > before  # tiles came over ranged GETs


def test_https_with_a_self_signed_certificate(shared_slide, storage_for, seeded):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    local = [shared_slide(n) for n in SVS]
    with RangeFileServer(ssl_context=server_context) as web:
        remote = web.upload(local, prefix="cohort/")
        assert remote[0].startswith("https://127.0.0.1:")
        storage = storage_for({"https": {"ssl": client_context}})  # passed to every aiohttp request
        assert seeded(remote, TiffSlideBackend(storage=storage)) == seeded(local, TiffSlideBackend())
        untrusted = storage_for({})
        with pytest.raises(RemoteStorageError, match=r"https://127\.0\.0\.1:\d+/cohort/CMU-1-\S+: .*[Cc]ertificate"):
            TiffSlideBackend(storage=untrusted).open(remote[0])


def test_a_missing_url_is_a_named_not_found_error(web_proxy, web_storage):
    url = f"{web_proxy.endpoint_url}/cohort/absent.svs"
    with pytest.raises(RemoteNotFoundError, match=r"/cohort/absent\.svs: open: object does not exist") as info:
        TiffSlideBackend(storage=web_storage).open(url)
    assert isinstance(info.value, SlideNotFoundError)


def test_a_truncated_object_is_refused_at_open(web_server, web_proxy, web_storage, cmu_svs):
    with open(cmu_svs, "rb") as fh:
        web_server.put("broken/truncated.svs", fh.read()[:300_000])
    with pytest.raises(SlideOpenError, match=r"broken/truncated\.svs: tiffslide cannot open it"):
        TiffSlideBackend(storage=web_storage).open(f"{web_proxy.endpoint_url}/broken/truncated.svs")


@pytest.mark.parametrize("kind", ["reset", "truncate", "503"])
def test_faults_are_retried_then_raised_as_a_named_error(web_proxy, web_storage, cmu_svs, kind):
    url = _urls(web_proxy.endpoint_url)[0]
    expected = TiffSlideBackend().open(cmu_svs).read_region(700, 900, 0, (224, 224))
    with TiffSlideBackend(storage=web_storage).open(url) as handle:
        web_proxy.inject(kind, 1)
        np.testing.assert_array_equal(handle.read_region(700, 900, 0, (224, 224)), expected)
        before = web_proxy.requests
        web_proxy.inject(kind, 100)
        with pytest.raises(RemoteStorageError, match=r"/cohort/CMU-1-Small-Region\.svs: .*after 3 attempts"):
            handle.read_region(1200, 100, 0, (224, 224))
        assert web_proxy.requests - before <= 2 * 2 * (web_storage.retries + 1)  # as for S3 (test_faults.py)


def test_a_503_at_open_is_retried_not_taken_for_a_missing_object(web_proxy, web_storage):
    # fsspec's HTTP filesystem raises FileNotFoundError for any failed metadata request
    web_proxy.inject("503", 2, ranged_only=False)  # its HEAD, then its GET fallback
    TiffSlideBackend(storage=web_storage).open(_urls(web_proxy.endpoint_url)[0]).close()


def test_the_loopback_servers_add_no_delayed_ack_stall(web_server, web_proxy):
    """Keep-alive GETs answered in two writes (headers, body) must not wait for the client's delayed ACK.

    With Nagle's algorithm on the server socket every response's body waited ~40 ms for the ACK of its
    headers, so the benchmark's "20 ms" latency was ~60 ms per request. 20 sequential GETs, direct and
    through the fault proxy: ~1-2 ms each without the stall, >= 40 ms each with it.
    """
    import http.client

    for endpoint in (web_server.endpoint_url, web_proxy.endpoint_url):
        host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        start = time.perf_counter()
        for i in range(20):
            conn.request(
                "GET", "/cohort/CMU-1-Small-Region.svs", headers={"Range": f"bytes={i * 1000}-{i * 1000 + 59_999}"}
            )
            response = conn.getresponse()
            assert response.status == 206 and len(response.read()) == 60_000
        conn.close()
        assert time.perf_counter() - start < 0.4, endpoint  # 20 x 40 ms = 0.8 s with the stall
