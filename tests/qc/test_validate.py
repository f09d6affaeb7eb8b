"""``wsistream validate`` on the shared slides: rows, reasons, exit codes, JSON, and a pool that survives."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsistream.qc._pool import run_pool
from wsistream.qc.validate import PROBLEM_KEYS, ROW_KEYS, app, validate_cohort, validate_slide
from wsistream.recipes import build_pipeline
from wsistream.tissue import OtsuTissueDetector

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
NAMES = [
    "CMU-1-Small-Region.svs",
    "synthetic-40x.svs",
    "test3-DAPI-2.ndpi",
    "boxes.tiff",
    "bad/unreadable.svs",
    "bad/unopenable.tiff",
]
SLIDES = [str(DATA / n) for n in NAMES]
GOOD = SLIDES[:2]


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """phikon-v2 rows of the six shared slides, checked by a 2-process pool."""
    got = validate_cohort(SLIDES, "phikon-v2", workers=2, decode_samples=4)
    assert [r["slide"] for r in got] == SLIDES  # input order
    return {Path(r["slide"]).name: r for r in got}


def _problems(row: dict, stage: str) -> list[dict]:
    return [p for p in row["problems"] if p["stage"] == stage]


def test_rows_have_stable_keys(rows):
    for row in rows.values():
        assert tuple(row) == ROW_KEYS
        assert all(tuple(p) == PROBLEM_KEYS for p in row["problems"])
        json.dumps(row, allow_nan=False)  # plain JSON, no NaN


def test_good_aperio_rows(rows):
    cmu = rows["CMU-1-Small-Region.svs"]
    assert cmu["status"] == "ok" and cmu["problems"] == []
    assert (cmu["vendor"], cmu["dimensions"], cmu["level_count"]) == ("aperio", [2220, 2967], 1)
    assert (cmu["mpp"], cmu["mpp_source"], cmu["objective_power"]) == (0.499, "slide", 20.0)
    assert cmu["reachable"] and cmu["resampling"] == "level 0, 224 px direct"
    assert 0.1 < cmu["tissue_fraction"] < 0.6 and cmu["qualifying_tiles"] > 10
    assert (cmu["decode_tested"], cmu["decode_ok"], cmu["decode_failed"]) == (4, 4, 0)
    w40 = rows["synthetic-40x.svs"]
    assert w40["status"] == "ok" and w40["level_downsamples"] == [1.0, 4.0, 16.0]
    assert w40["resampling"] == "level 0, 444 px → 224 area"
    assert (w40["read_level"], w40["read_size"], w40["patch_size"]) == (0, 444, 224)
    assert w40["delivered_mpp"] == pytest.approx(0.4995, abs=1e-4)
    assert (w40["decode_level"], w40["decode_size"], w40["decode_ok"]) == (0, 444, 4)


def test_fluorescence_row(rows):
    dapi = rows["test3-DAPI-2.ndpi"]
    assert dapi["vendor"] == "hamamatsu" and dapi["status"] != "unusable"
    assert (dapi["read_level"], dapi["read_size"]) == (1, 245)  # 0.456 µm/px level, 245 px -> 224
    assert dapi["tissue_fraction"] < 0.6  # the black background is not tissue
    assert not _problems(dapi, "tissue")


def test_boxes_tiff_mpp_is_implausible(rows):
    boxes = rows["boxes.tiff"]
    assert boxes["status"] == "unusable" and boxes["opens"]
    assert boxes["mpp"] is None and boxes["mpp_raw"].startswith("352.77") and boxes["mpp_source"] == "none"
    assert boxes["reachable"] is False and boxes["resampling"] is None
    [problem] = _problems(boxes, "plan")
    assert problem["error_type"] == "MissingMppError" and problem["severity"] == "error"
    assert "352.8" in problem["reason"] and "implausible" in problem["reason"]


def test_unopenable_and_unreadable(rows):
    unopenable = rows["unopenable.tiff"]
    assert unopenable["status"] == "unusable" and unopenable["opens"] is False
    assert [(p["stage"], p["error_type"]) for p in unopenable["problems"]] == [("open", "SlideOpenError")]
    assert unopenable["problems"][0]["reason"].startswith("cannot open")
    unreadable = rows["unreadable.svs"]
    assert unreadable["status"] == "unusable" and unreadable["opens"]
    assert unreadable["decode_failed"] >= 1 and unreadable["decode_ok"] == 0
    [decode] = _problems(unreadable, "decode")
    assert decode["error_type"] == "TileDecodeError" and "failed to decode" in decode["reason"]
    assert "cannot decode region" in unreadable["decode_first_error"]


def test_validate_slide_matches_the_stream_settings(tmp_path):
    """Missing µm/px is a warning, not an error, when the pipeline reads a fixed level (as GPFM does)."""
    from wsistream.pipeline import PatchPipeline
    from wsistream.sampling import RandomSampler
    from wsistream.synthetic import write_aperio_svs

    nompp = str(write_aperio_svs(tmp_path / "nompp.svs", width=1200, height=900, mpp=None, downsamples=(1, 4)))
    level0 = PatchPipeline(slide_paths=[nompp], sampler=RandomSampler(patch_size=256, level=0))
    row = validate_slide(nompp, level0, decode_samples=2)
    assert row["status"] == "warning" and row["resampling"] == "level 0, 256 px direct"
    assert row["delivered_mpp"] is None and row["qualifying_tiles"] > 0
    assert [(p["stage"], p["error_type"], p["severity"]) for p in row["problems"]] == [
        ("plan", "MissingMpp", "warning")
    ]
    row = validate_slide(nompp, build_pipeline("phikon-v2", [nompp], mpp_fallback=0.5), decode_samples=2)
    assert row["mpp_source"] == "fallback" and row["reachable"]
    assert [p["error_type"] for p in row["problems"]] == ["MppFallback"]


# -- command line --------------------------------------------------------------------------
def test_cli_runner_json_and_exit_code():
    result = CliRunner().invoke(app, [*SLIDES, "--json", "--workers", "0", "--decode-samples", "2"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert [r["slide"] for r in data] == SLIDES and all(tuple(r) == ROW_KEYS for r in data)
    assert [r["status"] for r in data][3:] == ["unusable"] * 3


def test_cli_runner_table_exit_zero_when_all_usable(tmp_path):
    listing = tmp_path / "slides.txt"
    listing.write_text("\n".join(GOOD) + "\n")
    result = CliRunner().invoke(app, [str(listing), "--workers", "0", "--decode-samples", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "CMU-1-Small-Region.svs  ok" in result.stdout and "444 px → 224 area" in result.stdout
    assert "2 slides (phikon-v2): 2 ok, 0 with warnings, 0 unusable" in result.stdout


def _command() -> list[str]:
    """The installed command: ``wsistream validate`` once mounted, else the module's own entry point."""
    from wsistream.cli.main import app as main_app

    names = {c.name or (c.callback.__name__ if c.callback else "") for c in main_app.registered_commands}
    if "validate" in names:
        return [sys.executable, "-m", "wsistream.cli.main", "validate"]
    return [sys.executable, "-m", "wsistream.qc.validate"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*_command(), *args], capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.mark.timeout(120)
def test_subprocess_json_on_the_shared_slides():
    proc = _run([str(DATA / "*.svs"), str(DATA / "*.ndpi"), str(DATA / "*.tiff"), str(DATA / "bad" / "*"),
                 "--json", "--workers", "2", "--decode-samples", "2"])  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    data = {Path(r["slide"]).name: r for r in json.loads(proc.stdout)}
    assert set(data) == {Path(n).name for n in NAMES}
    status = {name: r["status"] for name, r in data.items()}
    assert status["boxes.tiff"] == status["unopenable.tiff"] == status["unreadable.svs"] == "unusable"
    assert status["CMU-1-Small-Region.svs"] == status["synthetic-40x.svs"] == "ok"
    assert "validate [6/6]" in proc.stderr  # plain progress when stderr is not a terminal


@pytest.mark.timeout(120)
def test_subprocess_table_and_usage_errors():
    proc = _run([*GOOD, "--decode-samples", "2"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["Slide", "Status", "Opens"]
    assert "level 0, 444 px → 224 area" in proc.stdout
    assert _run([*GOOD, "--recipe", "nope"]).returncode == 2
    assert _run([str(DATA / "*.nothing")]).returncode == 2


# -- a pool that survives hangs and crashes ------------------------------------------------
@dataclass(frozen=True)
class FaultyDetector(OtsuTissueDetector):
    """Misbehaves on slides whose file name says so (runs in the pool's worker processes)."""

    def detect_slide(self, handle, props, max_side):
        name = Path(props.slide_path).name
        if name.startswith("slow"):
            time.sleep(60)  # the alarm interrupts this
        if name.startswith("stuck"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # as a hung C call would
            time.sleep(60)
        if name.startswith("crash"):
            os._exit(3)  # as a segfault in a slide library would
        return super().detect_slide(handle, props, max_side)


def _links(tmp_path: Path, names: list[str]) -> list[str]:
    out = []
    for name in names:
        (tmp_path / name).symlink_to(DATA / "CMU-1-Small-Region.svs")
        out.append(str(tmp_path / name))
    return out


@pytest.mark.timeout(60)
def test_pool_survives_a_crashing_and_a_hanging_slide(tmp_path):
    slides = _links(tmp_path, ["crash.svs", "ok-1.svs", "slow.svs", "ok-2.svs", "stuck.svs", "ok-3.svs"])
    pipe = dataclasses.replace(build_pipeline("phikon-v2", slides), tissue_detector=FaultyDetector())
    t0 = time.perf_counter()
    got = run_pool(slides, pipe, recipe=None, workers=2, decode_samples=1, timeout_s=1.0, hard_timeout_s=4.0)
    assert time.perf_counter() - t0 < 45
    by_name = {Path(r["slide"]).name: r for r in got}
    assert len(got) == 6 and [r["slide"] for r in got] == slides
    for name in ("ok-1.svs", "ok-2.svs", "ok-3.svs"):
        assert by_name[name]["status"] == "ok"
    assert [p["error_type"] for p in by_name["crash.svs"]["problems"]] == ["WorkerCrashed"]
    assert [p["error_type"] for p in by_name["slow.svs"]["problems"]] == ["SlideCheckTimeout"]
    assert by_name["slow.svs"]["opens"]  # the soft alarm keeps what was learnt before it fired
    [stuck] = by_name["stuck.svs"]["problems"]
    assert stuck["error_type"] == "SlideCheckTimeout" and "worker killed" in stuck["reason"]
    assert all(r["status"] == "unusable" for n, r in by_name.items() if not n.startswith("ok"))
