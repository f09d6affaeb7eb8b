"""Files that cannot be opened: each is recorded once, named, and costs the good slides nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


#: The capabilities that let root read a mode-000 file; without them root is an ordinary owner.
_DAC_CAPS = "-dac_override,-dac_read_search"


def _stream_as(slides: list[str], drop_root_overrides: bool) -> dict:
    """Stream in a child process: the grid run, as JSON.

    With ``drop_root_overrides`` the child keeps our uid (so it reaches the
    checkout, the virtualenv and the slides wherever they lie, private home
    folders included) but loses ``CAP_DAC_OVERRIDE``/``CAP_DAC_READ_SEARCH``
    from its bounding set, so file modes apply to it as to any owner.
    """
    args = [sys.executable, "-c", _CHILD, str(Path(__file__).parent), json.dumps(slides)]
    if drop_root_overrides:
        args = ["setpriv", f"--bounding-set={_DAC_CAPS}", f"--inh-caps={_DAC_CAPS}", *args]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=50, cwd="/", check=False)
    if drop_root_overrides and proc.returncode != 0 and "setpriv" in proc.stderr:
        pytest.skip(f"running as root and setpriv cannot drop CAP_DAC_OVERRIDE here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def denied_run(good_slides, tmp_path_factory):
    """Slides plus one mode-000 file, streamed by a process the mode applies to.

    root reads a mode-000 file anyway, so as root the stream runs in a child
    process without root's file-permission overrides (see ``_stream_as``); as
    any other user the mode applies already.  Nothing depends on who else can
    traverse the folders above the checkout.
    """
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed: a mode-000 file stays readable")
    denied = tmp_path_factory.mktemp("denied") / "denied.svs"
    shutil.copy(good_slides[0], denied)
    denied.chmod(0o000)
    try:
        got = _stream_as([good_slides[0], str(denied), *good_slides[1:]], as_root)
        assert not got["readable"][str(denied)], "the child could read a mode-000 file: the test would prove nothing"
        ref = _stream_as(list(good_slides), False)
        yield got, ref, list(good_slides), str(denied)
    finally:
        denied.chmod(0o644)


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
