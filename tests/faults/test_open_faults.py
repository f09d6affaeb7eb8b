"""Files that cannot be opened: each is recorded once, named, and costs the good slides nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .helpers import assert_named, check_fault, failures_of, run_stream

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _zero_byte(tmp: Path, good: list[str]) -> str:
    path = tmp / "empty.svs"
    path.write_bytes(b"")
    return str(path)


def _truncated(tmp: Path, good: list[str]) -> str:
    data = Path(good[0]).read_bytes()
    path = tmp / "truncated.svs"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _not_a_slide(tmp: Path, good: list[str]) -> str:
    path = tmp / "notes.svs"
    path.write_text("this is a text file with a slide extension\n" * 50)
    return str(path)


def _missing(tmp: Path, good: list[str]) -> str:
    return str(tmp / "never-written.svs")


def _unopenable(tmp: Path, good: list[str]) -> str:
    return str(SHARED / "bad" / "unopenable.tiff")


CASES = {
    # case: (builder, error type, message fragment)
    "zero-byte": (_zero_byte, "SlideOpenError", "empty"),
    "truncated": (_truncated, "SlideOpenError", "cannot open"),
    "not-a-slide": (_not_a_slide, "SlideOpenError", "cannot open"),
    "missing": (_missing, "SlideNotFoundError", "does not exist"),
    "unopenable-shared": (_unopenable, "SlideOpenError", "Unsupported TIFF compression"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["grid", "random"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unopenable_file(case, mode, good_slides, reference, tmp_path):
    build, error_type, fragment = CASES[case]
    bad = build(tmp_path, good_slides)
    got = check_fault([bad], good_slides, mode, reference(mode))
    [record] = failures_of(got, bad)  # recorded once, at open
    assert (record.error_type, record.stage, record.retired) == (error_type, "open", True)
    assert fragment in record.message
    assert_named(record, bad)
    assert got.pipeline.failure_summary() == {error_type: 1}


# -- permission denied ---------------------------------------------------------------------
_CHILD = r"""
import json, os, sys
from collections import Counter
sys.path.insert(0, sys.argv[1])
from helpers import collect, make_pipe
run = collect(make_pipe(json.loads(sys.argv[2]), "grid"))
print(json.dumps({
    "counts": dict(run.counts),
    "coords": {s: sorted(map(list, c.elements())) for s, c in run.coords.items()},
    "failures": [f.to_dict() for f in run.failures],
    "readable": {s: os.access(s, os.R_OK) for s in json.loads(sys.argv[2])},
}))
"""


def _stream_as(slides: list[str], user: int | None) -> dict:
    """Stream in a child process (as ``user`` when given): the grid run, as JSON."""
    args = [sys.executable, "-c", _CHILD, str(Path(__file__).parent), json.dumps(slides)]
    extra: dict = {}
    if user is not None and shutil.which("setpriv"):
        args = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *args]
    elif user is not None:
        extra = {"user": user, "group": user, "extra_groups": []}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=50, cwd="/", check=False, **extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def denied_run(good_slides):
    """Slides plus one mode-000 file, streamed by a user the mode applies to.

    root reads a mode-000 file anyway, so as root the stream runs in a child
    process as ``nobody`` (uid 65534), on copies in a world-readable folder.
    """
    folder = Path(tempfile.mkdtemp(prefix="wsistream-perm-"))
    try:
        folder.chmod(0o755)
        good = []
        for src in good_slides:
            dst = folder / Path(src).name
            shutil.copy(src, dst)
            dst.chmod(0o644)
            good.append(str(dst))
        denied = folder / "denied.svs"
        shutil.copy(good_slides[0], denied)
        denied.chmod(0o000)
        user = None
        if os.geteuid() == 0:
            if not hasattr(os, "setuid"):
                pytest.skip("running as root without setuid: a mode-000 file stays readable")
            user = 65534
        try:
            got = _stream_as([good[0], str(denied), *good[1:]], user)
        except (PermissionError, OSError) as exc:
            pytest.skip(f"running as root and cannot drop privileges to test mode 000 ({exc})")
        if got["readable"][str(denied)]:
            pytest.skip("the mode-000 file is readable by the test user (capabilities?): nothing to test")
        ref = _stream_as(good, None)
        yield got, ref, good, str(denied)
    finally:
        for p in folder.iterdir():
            p.chmod(0o644)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(60)
def test_permission_denied(denied_run):
    got, ref, good, denied = denied_run
    [record] = [f for f in got["failures"] if f["slide_path"] == denied]
    assert (record["error_type"], record["stage"], record["retired"]) == ("SlideOpenError", "open", True)
    assert denied in record["message"]
    assert denied not in got["counts"]
    for slide in good:
        assert got["counts"][slide] == ref["counts"][slide] > 0
        assert got["coords"][slide] == ref["coords"][slide]


@pytest.mark.timeout(60)
def test_permission_denied_message_says_so(denied_run):
    got, _, _, denied = denied_run
    [record] = [f for f in got["failures"] if f["slide_path"] == denied]
    assert "permission denied" in record["message"].lower()


@pytest.mark.timeout(60)
def test_truncated_file_under_tiffslide(good_slides, tmp_path):
    """TiffSlide opens a truncated SVS with the levels whose directories survive.

    Cut in half, level 0 is intact (so the slide streams, from one level); cut
    at 30 %, the tiles past the end fail as ``TileDecodeError`` naming the slide.
    """
    from wsistream.backends import TiffSlideBackend

    data = Path(good_slides[0]).read_bytes()
    half, short = tmp_path / "half.svs", tmp_path / "short.svs"
    half.write_bytes(data[: len(data) // 2])
    short.write_bytes(data[: int(len(data) * 0.3)])
    backend = TiffSlideBackend()
    with backend.open(half) as handle:
        assert handle.properties.level_count == 1
    got = run_stream([str(short), str(half), *good_slides[1:]], "grid", backend=backend)
    ref = run_stream(good_slides[1:], "grid", backend=backend)
    for slide in good_slides[1:]:
        assert got.coords[slide] == ref.coords[slide]
    assert got.counts[str(half)] > 0 and not failures_of(got, str(half))
    records = failures_of(got, str(short))
    assert records and {f.error_type for f in records} == {"TileDecodeError"}
    for record in records:
        assert_named(record, str(short))
