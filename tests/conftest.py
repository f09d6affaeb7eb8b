"""Shared fixtures: the real slides in ../shared/data and slides from our own writer."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(name: str) -> str:
    """Path of a real slide in ../shared/data (skips nothing: CI has it)."""
    path = SHARED_DATA / name
    assert path.exists(), f"{path} missing: tests need ../shared/data beside the checkout"
    return str(path)


@pytest.fixture(scope="session")
def shared_slide():
    """``shared_slide("boxes.tiff")`` → path of a real slide in ../shared/data."""
    return shared


@pytest.fixture(scope="session")
def cmu_svs() -> str:
    return shared("CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def synthetic_40x_svs() -> str:
    return shared("synthetic-40x.svs")


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def written_40x(slide_dir: Path) -> str:
    """A 40x Aperio-style slide (0.252 µm/px, levels 1/4/16, no 2x level) from our writer."""
    from wsistream.synthetic import write_aperio_svs

    return str(
        write_aperio_svs(
            slide_dir / "w40x.svs",
            width=4096,
            height=3072,
            mpp=0.252,
            app_mag=40,
            downsamples=(1, 4, 16),
            seed=1,
        )
    )


@pytest.fixture(scope="session")
def written_20x(slide_dir: Path) -> str:
    """A 20x slide (0.5 µm/px, levels 1/4)."""
    from wsistream.synthetic import write_aperio_svs

    return str(
        write_aperio_svs(
            slide_dir / "w20x.svs", width=3000, height=2400, mpp=0.5, app_mag=20, downsamples=(1, 4), seed=2
        )
    )


@pytest.fixture(scope="session")
def blank_slide(slide_dir: Path) -> str:
    """A background-only slide: no tissue anywhere."""
    from wsistream.synthetic import write_aperio_svs

    return str(
        write_aperio_svs(
            slide_dir / "blank.svs",
            width=2000,
            height=1600,
            mpp=0.5,
            app_mag=20,
            downsamples=(1, 4),
            background_only=True,
            seed=3,
        )
    )


@pytest.fixture(scope="session")
def no_mpp_slide(slide_dir: Path) -> str:
    """A slide whose description has no MPP key."""
    from wsistream.synthetic import write_aperio_svs

    return str(
        write_aperio_svs(
            slide_dir / "nompp.svs", width=2000, height=1600, mpp=None, app_mag=20, downsamples=(1, 4), seed=4
        )
    )
