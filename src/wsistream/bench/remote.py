"""``wsistream bench --remote``: the 20x pool from a loopback S3 server with added latency, beside local files.

The 8 pool slides of :func:`~wsistream.bench.slides.bench_slides` are uploaded to moto's S3 server
(``moto[server]``) on 127.0.0.1; a :class:`~wsistream.storage.loopback_process.LatencyProxyProcess` in front
(a child process) adds ``latency_s`` to every request.  The same Phikon-v2 pipeline (TiffSlide
backend, direct JPEG path) streams the local files and the URLs; rows give the remote/local ratios,
time to the first patch (cold: empty directory cache; warm: cache filled), and requests / bytes per
patch once the pool is open, with bytes compared to the JPEG bytes of the tiles each patch covers.
The raw ranged-request rate of the server + proxy is measured in the same run
(:func:`_request_ceiling`): remote rates are also given as the fraction of that ceiling they use
(rate × requests per patch / ceiling).  The same pool is also served over ``https://`` by a
:class:`~wsistream.storage.loopback_process.RangeServerProcess` behind its own latency proxy: a server
that costs ~0.3 ms of CPU per GET where moto costs ~8 ms, so those rows show the client's rate when
serving is not the bottleneck of the shared 2-core box.  The servers' own CPU per ranged GET is read
from their processes (:mod:`wsistream._procstat`), and each 2-worker row says how busy the whole box
was and how many cores it would need to match local files, so a rate bound by the box says so.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wsistream._procstat import process_cpu_s
from wsistream.backends import TiffSlideBackend
from wsistream.backends._jpeg_tiles import JpegTileReader
from wsistream.bench.slides import pool_20x_slides
from wsistream.bench.workloads import rate
from wsistream.pipeline import PatchPipeline
from wsistream.recipes import build_pipeline
from wsistream.storage import StorageConfig
from wsistream.storage.loopback import LoopbackS3, s3_options
from wsistream.storage.loopback_process import LatencyProxyProcess, RangeServerProcess


def _servers_cpu_s(pids: tuple[int | None, ...]) -> float | None:
    """CPU-seconds used so far by the server processes ``pids`` together (``None`` if one is unknown)."""
    times = [None if pid is None else process_cpu_s(pid) for pid in pids]
    return None if not times or None in times else sum(t for t in times if t is not None)


def _stream(
    make: Callable[[], PatchPipeline], n: int, proxy: LatencyProxyProcess | None, servers: tuple[int | None, ...] = ()
) -> dict[str, Any]:
    """Rate, time to first patch, then the proxy's requests/bytes and the ``servers``' CPU per request."""
    pipeline = make()
    t0 = time.perf_counter()
    stream = iter(pipeline)
    results = [next(stream)]
    first = time.perf_counter() - t0
    req0, bytes0 = (proxy.ranged_requests, proxy.bytes_sent) if proxy else (0, 0)
    cpu0, server0 = time.process_time(), _servers_cpu_s(servers)
    results += list(itertools.islice(stream, n - 1))
    elapsed = time.perf_counter() - t0
    cpu_per_patch = (time.process_time() - cpu0) / max(1, len(results) - 1)
    stream.close()
    out = {"rate": rate(len(results), elapsed), "first_s": first, "results": results, "cpu_ms": cpu_per_patch * 1e3}
    if proxy is not None:
        steady = max(1, len(results) - 1)
        requests, server1 = proxy.ranged_requests - req0, _servers_cpu_s(servers)  # read together: one window
        out["requests_per_patch"] = requests / steady
        out["bytes_per_patch"] = (proxy.bytes_sent - bytes0) / steady
        if server0 is not None and server1 is not None:
            out["server_cpu_ms_per_request"] = (server1 - server0) / max(1, requests) * 1e3
    return out


def _request_ceiling(endpoint_url: str, path: str, size: int, *, n: int = 320, threads: int = 16) -> float:
    """Ranged GETs/s that the server + proxy answer: ``threads`` keep-alive connections, 128 KiB each.

    A plain ``http.client`` loop (no signing, no fsspec), so it measures the loopback server and
    the latency proxy alone: the ceiling no client can pass.  moto copies the whole object on
    every ranged GET (``FakeKey.value``), so its rate falls with the object size.
    """
    import http.client
    import threading
    from concurrent.futures import ThreadPoolExecutor

    host, port = endpoint_url.split("://", 1)[1].rsplit(":", 1)
    local = threading.local()
    span = 128 * 1024

    def one(i: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        offset = (i * 7919 * 4096) % max(1, size - span)
        conn.request("GET", path, headers={"Range": f"bytes={offset}-{offset + span - 1}"})
        response = conn.getresponse()
        response.read()
        if response.status != 206:
            raise RuntimeError(f"ceiling probe: HTTP {response.status} for {path}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0)


def _warm_up(storage: StorageConfig, url: str) -> None:
    """Pay the process's one-time costs before any timing, as the local row has them when it runs.

    Imports (tiffslide alone took 1.3 s of a 3.1 s cold first patch, profiled) and the S3 client;
    the directory cache stays empty, so the cold row still walks every slide's IFDs.
    """
    import tiffslide  # noqa: F401

    storage.filesystem(url).info(url)


def _covered_jpeg_bytes(results: list[Any], local_of: dict[str, str]) -> float:
    """Mean stored JPEG bytes of the tiles each patch's read region covers (from the local files)."""
    readers: dict[str, JpegTileReader] = {}
    total = 0
    for r in results:
        c = r.coordinate
        path = local_of[c.slide_path]
        if path not in readers:
            backend = TiffSlideBackend()
            with backend.open(path) as handle:
                props = handle.properties
            reader = JpegTileReader.try_open(path, props.level_dimensions, props.level_downsamples)
            assert reader is not None, f"{path}: the bench pool must be served by the direct JPEG path"
            readers[path] = reader
        lv = readers[path].levels[c.level]
        lx, ly = round(c.x0 / c.level_downsample), round(c.y0 / c.level_downsample)
        for row in range(ly // lv.tile_height, min(lv.tiles_down, (ly + c.read_size - 1) // lv.tile_height + 1)):
            for col in range(lx // lv.tile_width, min(lv.tiles_across, (lx + c.read_size - 1) // lv.tile_width + 1)):
                total += int(lv.bytecounts[row * lv.tiles_across + col])
    for reader in readers.values():
        reader.close()
    return total / max(1, len(results))


def _loader_rows(
    add: Callable[..., None],
    local: Callable[[], Any],
    remotes: dict[str, tuple[Callable[[], Any], float, float]],
    quick: bool,
) -> None:
    """2 DataLoader workers over local files and each remote ``row name -> (factory, requests/patch, ceiling)``.

    Each row also says how busy the whole box was (``box_busy_cores`` of ``box_cpus``: workers, consumer,
    servers, proxies and anything else running), the box's CPU per patch, and ``cores_for_local_rate``:
    the cores the remote path would need, at that CPU per patch, to stream as fast as local files.
    """
    from wsistream.torch import benchmark_throughput

    def measure(factory: Callable[[], Any]) -> tuple[float, dict[str, Any]]:
        result = benchmark_throughput(factory, num_workers=2, n_batches=10 if quick else 25, batch_size=32)
        value, busy = float(result["patches_per_s"]), result["box_busy_cores"]
        if busy is None:
            return value, {}
        box = {"box_busy_cores": round(busy, 2), "box_cpus": result["box_cpus"]}
        return value, {**box, "box_cpu_ms_per_patch": round(busy / max(value, 1e-9) * 1e3, 3)}

    here, box = measure(local)
    add("local files, 2 DataLoader workers", here, "patches/s", **box)
    for name, (factory, per_patch, ceiling) in remotes.items():
        value, box = measure(factory)
        if box:
            box["cores_for_local_rate"] = round(here * box["box_cpu_ms_per_patch"] / 1e3, 2)
        add(name, value, "patches/s", ratio=round(value / here, 3), of_ceiling=round(value * per_patch / ceiling, 3),
            **box)  # fmt: skip


def _server_cpu_row(add: Callable[..., None], servers: str, warm: dict[str, Any]) -> None:
    """The ``servers``' CPU per ranged GET (and per patch) over the warm one-process stream, where known."""
    if "server_cpu_ms_per_request" in warm:
        ms = warm["server_cpu_ms_per_request"]
        add(f"server CPU per ranged GET ({servers})", ms, "ms", per_patch_ms=round(ms * warm["requests_per_patch"], 3))


def _https_rows(
    add: Callable[..., None],
    web_proxy: LatencyProxyProcess,
    urls: list[str],
    storage: StorageConfig,
    n: int,
    local_rate: float,
    servers: tuple[int | None, ...],
) -> tuple[Callable[[], PatchPipeline], float, float]:
    """The pool over ``https://`` from a :class:`RangeServerProcess`: the client's rate where serving is cheap.

    moto costs ~8 ms of CPU per ranged GET on these 17 MB objects, on the same 2 cores as the client;
    the Range server ~0.3 ms.  Returns the factory, requests per patch and the ceiling for the loader rows.
    """
    https = functools.partial(build_pipeline, "phikon-v2", urls, cycle=False, backend=TiffSlideBackend(storage=storage))
    ceiling = _request_ceiling(
        web_proxy.endpoint_url, urlsplit(urls[0]).path, storage.filesystem(urls[0]).size(urls[0])
    )
    _stream(https, n, web_proxy)  # cold: fills the directory cache
    warm = _stream(https, n, web_proxy, servers)
    per_patch = warm["requests_per_patch"]
    add("raw ranged-request ceiling (https Range server + proxy)", ceiling, "requests/s")
    add("https Range server, 1 process (directory cache warm)", warm["rate"], "patches/s",
        ratio=round(warm["rate"] / local_rate, 3), of_ceiling=round(warm["rate"] * per_patch / ceiling, 3),
        cpu_ms=round(warm["cpu_ms"], 3), requests_per_patch=round(per_patch, 3))  # fmt: skip
    _server_cpu_row(add, "Range server + proxy", warm)
    return https, per_patch, ceiling


def _s3_rows(
    add: Callable[..., None],
    ceiling: float,
    *,
    here: dict[str, Any],
    warm: dict[str, Any],
    old: dict[str, Any],
    cold: dict[str, Any],
    covered: float,
) -> None:
    """One-process rows: local, S3 warm / through s3fs / cold, CPU, first patch, requests and bytes per patch."""
    per_patch = warm["requests_per_patch"]
    add("raw ranged-request ceiling (server + proxy)", ceiling, "requests/s",
        patches_per_s_at_this_rate=round(ceiling / max(per_patch, 1e-9), 1))  # fmt: skip
    add("local files, 1 process", here["rate"], "patches/s")
    add("S3, 1 process (directory cache warm)", warm["rate"], "patches/s", ratio=round(warm["rate"] / here["rate"], 3),
        of_ceiling=round(warm["rate"] * per_patch / ceiling, 3))  # fmt: skip
    saved_ms = (old["cpu_ms"] - warm["cpu_ms"]) / max(per_patch, 1e-9)
    add("S3, 1 process, s3_reads='fsspec' (s3fs client)", old["rate"], "patches/s",
        ratio=round(old["rate"] / here["rate"], 3),
        presigned_over_fsspec=round(warm["rate"] / old["rate"], 3))  # fmt: skip
    add("process CPU per patch: local / presigned / fsspec", warm["cpu_ms"], "ms (presigned)",
        local_ms=round(here["cpu_ms"], 3), fsspec_ms=round(old["cpu_ms"], 3),
        client_cpu_saved_ms_per_request=round(saved_ms, 3))  # fmt: skip
    add("S3, 1 process (cold: IFD walks)", cold["rate"], "patches/s", ratio=round(cold["rate"] / here["rate"], 3))
    add("time to first patch, S3 cold", cold["first_s"], "s", local_s=round(here["first_s"], 3))
    add("time to first patch, S3 warm", warm["first_s"], "s")
    add("requests per patch (pool open)", per_patch, "requests")
    add("bytes per patch (pool open)", warm["bytes_per_patch"], "bytes", covered_jpeg_bytes=round(covered),
        ratio=round(warm["bytes_per_patch"] / covered, 3))  # fmt: skip
    _server_cpu_row(add, "moto + proxy", warm)


def run_remote_bench(
    cache_dir: Path | None = None, *, quick: bool = False, latency_s: float = 0.02, loader: bool = True
) -> list[dict[str, Any]]:
    """The remote rows (see the module docstring); one process, then 2 DataLoader workers."""
    pool = pool_20x_slides(cache_dir, quick=quick)
    n = 200 if quick else 800
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float, unit: str, **extra: Any) -> None:
        rows.append({"workload": f"remote 20x pool, +{latency_s * 1000:.0f} ms", "row": name,
                     "value": round(value, 3), "unit": unit, **extra})  # fmt: skip

    # servers and latency proxies in child processes: their CPU does not share the measured process's GIL
    with (
        LoopbackS3(in_process=False) as s3,
        LatencyProxyProcess(s3.endpoint_url, latency_s=latency_s) as proxy,
        RangeServerProcess(pool, prefix="pool/") as web,
        LatencyProxyProcess(web.endpoint_url, latency_s=latency_s) as web_proxy,
        tempfile.TemporaryDirectory(prefix="wsistream-ifd-") as ifd_cache,
    ):
        urls = s3.upload(pool, prefix="pool/")
        storage = StorageConfig(options=s3_options(proxy.endpoint_url), cache_dir=ifd_cache)
        # signed as our client signs (moto refuses anonymous GETs of objects uploaded in one PUT)
        signed = urlsplit(storage.filesystem(urls[0]).url(urls[0], expires=3600))
        ceiling = _request_ceiling(proxy.endpoint_url, f"{signed.path}?{signed.query}", Path(pool[0]).stat().st_size)
        local = functools.partial(build_pipeline, "phikon-v2", pool, cycle=False, backend=TiffSlideBackend())
        remote = functools.partial(
            build_pipeline, "phikon-v2", urls, cycle=False, backend=TiffSlideBackend(storage=storage)
        )
        _warm_up(storage, urls[0])
        cold = _stream(remote, n, proxy)  # empty directory cache: every open walks the IFDs
        here = _stream(local, n, None)
        warm = _stream(remote, n, proxy, (s3.pid, proxy.pid))
        fsspec_storage = dataclasses.replace(storage, s3_reads="fsspec")
        via_fsspec = functools.partial(
            build_pipeline, "phikon-v2", urls, cycle=False, backend=TiffSlideBackend(storage=fsspec_storage)
        )
        old = _stream(via_fsspec, n, proxy)  # the s3fs client, back to back with the default
        covered = _covered_jpeg_bytes(warm["results"], dict(zip(urls, pool, strict=True)))
        _s3_rows(add, ceiling, here=here, warm=warm, old=old, cold=cold, covered=covered)
        per_patch = warm["requests_per_patch"]
        web_urls = [u.replace(web.endpoint_url, web_proxy.endpoint_url) for u in web.urls]
        https = _https_rows(add, web_proxy, web_urls, storage, n, here["rate"], (web.pid, web_proxy.pid))
        if loader:
            remotes: dict[str, tuple[Callable[[], Any], float, float]] = {
                "S3, 2 DataLoader workers": (remote, per_patch, ceiling),
                "S3, 2 DataLoader workers, s3_reads='fsspec'": (via_fsspec, per_patch, ceiling),
                "https Range server, 2 DataLoader workers": https,
            }
            _loader_rows(add, local, remotes, quick)
    return rows
