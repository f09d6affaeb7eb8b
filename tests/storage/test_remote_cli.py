"""``wsistream validate`` / ``preview`` take URLs; storage options come from fsspec's environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from wsistream.backends import TiffSlideBackend
from wsistream.qc.validate import validate_cohort


def test_validate_cohort_reads_a_prefix(s3_slides, storage):
    rows = validate_cohort(
        "s3://slides/cohort/", "phikon-v2", workers=0, recipe_kwargs={"backend": TiffSlideBackend(storage=storage)}
    )
    by_name = {r["slide"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == set(s3_slides)
    assert by_name["synthetic-40x.svs"]["status"] != "unusable"
    assert all(r["slide"].startswith("s3://slides/cohort/") for r in rows)


def test_cli_validate_and_preview_with_urls(s3_slides, proxy, tmp_path):
    env = {
        **os.environ,
        "FSSPEC_S3_ENDPOINT_URL": proxy.endpoint_url,
        "FSSPEC_S3_KEY": "testing",
        "FSSPEC_S3_SECRET": "testing",
        "WSISTREAM_CACHE_DIR": str(tmp_path / "cache"),
    }
    url = s3_slides["synthetic-40x.svs"][1]
    code = "import sys; from wsistream.cli.main import app; sys.argv = ['wsistream'] + sys.argv[1:]; app()"
    run = subprocess.run(
        [sys.executable, "-c", code, "validate", url, "s3://slides/cohort/absent.svs", "--json", "--workers", "0",
         "--no-progress"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    rows = json.loads(run.stdout)
    assert run.returncode == 1  # the absent one is unusable
    assert [r["status"] != "unusable" for r in rows] == [True, False]
    assert "RemoteNotFoundError" in json.dumps(rows[1]) or "does not exist" in json.dumps(rows[1])
    png = tmp_path / "p.png"
    run = subprocess.run(
        [sys.executable, "-c", code, "preview", url, "-o", str(png), "--n-patches", "4"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert png.stat().st_size > 10_000
