"""Client CPU per S3 ranged GET: s3fs (``s3_reads="fsspec"``) vs a presigned URL + urllib3 (the default).

Uploads one bench pool slide to moto (child process) behind the latency proxy (child process), then sends
the same random 60 kB ranged GETs through each client, one at a time and 4 at a time, and prints
requests/s of wall time and of this process's CPU (``time.process_time``).  The server is the wall-time
limit here; the CPU column is the client's cost.  Numbers: docs/storage.md ("The request client").

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python benchmarks/remote_client_cpu.py [N] [latency_s]
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time

from wsistream.bench.slides import pool_20x_slides
from wsistream.storage import StorageConfig
from wsistream.storage.loopback import LoopbackS3, s3_options
from wsistream.storage.loopback_process import LatencyProxyProcess
from wsistream.storage.source import RemoteByteSource


def main(n: int, latency_s: float) -> None:
    pool = pool_20x_slides()
    with LoopbackS3(in_process=False) as s3, LatencyProxyProcess(s3.endpoint_url, latency_s=latency_s) as proxy:
        (url,) = s3.upload(pool[:1], prefix="pool/")
        base = StorageConfig(options=s3_options(proxy.endpoint_url), cache_dir="")
        rng = random.Random(0)
        for reads in ("fsspec", "presigned"):
            source = RemoteByteSource(url, dataclasses.replace(base, s3_reads=reads))
            spans = [(o, o + 60_000) for o in (rng.randrange(0, source.size - 60_000) for _ in range(n))]
            for span in spans[:20]:  # connections, signing, imports
                source._fetch([span], "warm-up")
            for batch in (1, 4):
                t, cpu = time.perf_counter(), time.process_time()
                for i in range(0, n, batch):
                    source._fetch(spans[i : i + batch], "bench")
                wall, cpu = time.perf_counter() - t, time.process_time() - cpu
                print(
                    f"s3_reads={reads!r:12} {batch} at a time: {n / wall:6.1f} req/s wall, "
                    f"client CPU {cpu / n * 1e3:5.2f} ms/request ({n / cpu:5.0f} req/s of CPU)"
                )
            source.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
