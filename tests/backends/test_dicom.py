"""A folder of DICOM .dcm files is one slide: listed once, opened by OpenSlide, refused by TiffSlide by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest

from wsistream.backends import OpenSlideBackend, TiffSlideBackend
from wsistream.errors import SlideOpenError
from wsistream.pipeline import resolve_slide_paths

FIXTURE = Path(__file__).parent / "fixtures" / "dicom-boxes"  # OpenSlide's own fixture (PROVENANCE.md)


@pytest.fixture
def cohort(tmp_path, cmu_svs):
    """A folder with one SVS and one DICOM slide (a sub-folder of .dcm files)."""
    shutil.copytree(FIXTURE, tmp_path / "case-1" / "dicom")
    shutil.copy(cmu_svs, tmp_path / "case-1" / "cmu.svs")
    return tmp_path


def test_discovery_lists_a_dicom_folder_once(cohort):
    dicom = str(cohort / "case-1" / "dicom")
    assert resolve_slide_paths(cohort) == sorted([dicom, str(cohort / "case-1" / "cmu.svs")])
    assert resolve_slide_paths(dicom) == [dicom]  # the folder itself is the slide


def test_openslide_backend_opens_the_folder_with_the_library_pixels(cohort):
    dicom = cohort / "case-1" / "dicom"
    with OpenSlideBackend().open(dicom) as handle:
        props = handle.properties
        assert handle.slide_path == str(dicom)  # failures and feature files name the folder
        assert props.level_dimensions[0] == (16, 16) and props.mpp_level0 == pytest.approx(0.499)
        got = handle.read_region(0, 0, 0, (16, 16))
    osr = openslide.OpenSlide(str(dicom / "boxes_0.dcm"))
    want = np.asarray(osr.read_region((0, 0), 0, (16, 16)).convert("RGB"))
    osr.close()
    assert got.dtype == np.uint8 and np.array_equal(got, want)


def test_tiffslide_and_plain_folders_are_refused_by_name(cohort, tmp_path):
    dicom = str(cohort / "case-1" / "dicom")
    with pytest.raises(SlideOpenError, match=r"DICOM.*OpenSlideBackend") as info:
        TiffSlideBackend().open(dicom)
    assert info.value.slide_path == dicom
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(SlideOpenError, match="is a directory, not a slide file"):
        OpenSlideBackend().open(empty)
