"""The real commands, run as a user runs them (subprocess)."""

import subprocess
import sys
from pathlib import Path

import cv2

WSISTREAM = [sys.executable, "-m", "wsistream.cli.main"]


def _run(*args, timeout=300):
    return subprocess.run([*WSISTREAM, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_help_lists_every_stage_command():
    out = _run("--help")
    assert out.returncode == 0
    for command in (
        "demo",
        "bench",
        "recipes",
        "preview",
        "validate",
        "extract",
        "mil-cv",
        "linear-eval",
        "slide-pretrain",
        "slide-probe",
    ):
        assert command in out.stdout, f"`wsistream {command}` is missing from --help"


def test_demo_streams_and_writes_a_preview(tmp_path):
    out = _run("demo", "--out", str(tmp_path), "--seconds", "1")
    assert out.returncode == 0, out.stderr
    assert "patches/s" in out.stdout
    assert "0.4995 µm/px" in out.stdout or "0.5000 µm/px" in out.stdout
    png = Path(tmp_path / "preview.png")
    assert png.exists() and cv2.imread(str(png)) is not None


def test_preview_command_and_bad_slide(tmp_path, cmu_svs, shared_slide):
    out = _run("preview", cmu_svs, "-o", str(tmp_path / "cmu.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cmu.png").exists() and "0.499" in out.stdout
    out = _run("preview", shared_slide("bad/unopenable.tiff"), "-o", str(tmp_path / "bad.png"))
    assert out.returncode == 1 and "unopenable.tiff" in out.stderr


def test_preview_contact_sheet(tmp_path, cmu_svs, synthetic_40x_svs, shared_slide):
    out = _run(
        "preview",
        cmu_svs,
        synthetic_40x_svs,
        shared_slide("boxes.tiff"),
        "--sheet",
        "-o",
        str(tmp_path / "sheet.png"),
        "--n-patches",
        "3",
    )
    assert out.returncode == 1  # boxes.tiff has no µm/px: its row says so, the exit code reports it
    assert "2/3 slides previewed" in out.stdout and "boxes.tiff" in out.stderr
    image = cv2.imread(str(tmp_path / "sheet.png"))
    assert image is not None and image.shape[0] > 600
