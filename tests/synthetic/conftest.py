"""Slides written once per test session by the synthetic writer itself (real files, no mocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsistream.synthetic import write_aperio_svs

from .helpers import HEIGHT, WIDTH


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic slides")


@pytest.fixture(scope="session")
def rgb_svs(synthetic_dir: Path) -> Path:
    return write_aperio_svs(synthetic_dir / "rgb.svs", width=WIDTH, height=HEIGHT, seed=0)


@pytest.fixture(scope="session")
def ycbcr420_svs(synthetic_dir: Path) -> Path:
    return write_aperio_svs(
        synthetic_dir / "ycbcr420.svs",
        width=WIDTH,
        height=HEIGHT,
        seed=0,
        photometric="ycbcr",
        subsampling=(2, 2),
    )


@pytest.fixture(scope="session")
def background_svs(synthetic_dir: Path) -> Path:
    return write_aperio_svs(synthetic_dir / "glass.svs", width=WIDTH, height=HEIGHT, seed=0, background_only=True)
