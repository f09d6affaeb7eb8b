"""The bench's warm one-process S3 stream, alternating ``s3_reads="presigned"`` and ``"fsspec"`` (and local).

One moto server and latency proxy (child processes) for all rounds; each round runs both clients (order
alternating) and the local files, ``n`` patches each, printing patches/s, process CPU ms per patch and
requests per patch.  On a shared machine this pairs the clients more tightly than two bench runs.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python benchmarks/remote_ab.py [n=600] [rounds=4]
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import tempfile

from wsistream.backends import TiffSlideBackend
from wsistream.bench.remote import _stream, _warm_up
from wsistream.bench.slides import pool_20x_slides
from wsistream.recipes import build_pipeline
from wsistream.storage import StorageConfig
from wsistream.storage.loopback import LoopbackS3, s3_options
from wsistream.storage.loopback_process import LatencyProxyProcess


def main(n: int, rounds: int, latency_s: float = 0.02) -> None:
    pool = pool_20x_slides()
    with (
        LoopbackS3(in_process=False) as s3,
        LatencyProxyProcess(s3.endpoint_url, latency_s=latency_s) as proxy,
        tempfile.TemporaryDirectory() as ifd_cache,
    ):
        urls = s3.upload(pool, prefix="pool/")
        base = StorageConfig(options=s3_options(proxy.endpoint_url), cache_dir=ifd_cache)
        make = {}
        for reads in ("presigned", "fsspec"):
            backend = TiffSlideBackend(storage=dataclasses.replace(base, s3_reads=reads))
            make[reads] = functools.partial(build_pipeline, "phikon-v2", urls, cycle=False, backend=backend)
        make["local"] = functools.partial(build_pipeline, "phikon-v2", pool, cycle=False, backend=TiffSlideBackend())
        _warm_up(base, urls[0])
        _stream(make["fsspec"], 50, proxy)  # fills the directory cache: every round is warm
        for i in range(rounds):
            order = ("presigned", "fsspec", "local") if i % 2 == 0 else ("fsspec", "presigned", "local")
            for name in order:
                s = _stream(make[name], n, None if name == "local" else proxy)
                print(f"round {i} {name:9}: {s['rate']:6.1f} patches/s, {s['cpu_ms']:.2f} ms CPU/patch, "
                      f"{s.get('requests_per_patch', 0):.3f} requests/patch", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600, int(sys.argv[2]) if len(sys.argv) > 2 else 4)
