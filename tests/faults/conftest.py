"""Fixtures of the fault-injection suite: three small good slides written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import GOOD_SIZE


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def good_slides(fault_dir: Path) -> list[str]:
    """Three distinct 20x synthetic slides (0.5 µm/px, levels 1/4) that stream without any failure."""
    from wsistream.synthetic import write_aperio_svs

    width, height = GOOD_SIZE
    return [
        str(write_aperio_svs(fault_dir / f"good-{i}.svs", width=width, height=height, mpp=0.5, app_mag=20,
                             downsamples=(1, 4), seed=100 + i))
        for i in range(3)
    ]  # fmt: skip


@pytest.fixture(scope="session")
def reference(good_slides: list[str]):
    """``reference(mode, **kw)``: the run on the good slides alone (cached per configuration)."""
    from .helpers import run_stream

    cache: dict[str, object] = {}

    def get(mode: str = "grid", **kw: object):
        key = f"{mode}|{sorted((k, repr(v)) for k, v in kw.items())}"
        if key not in cache:
            cache[key] = run_stream(good_slides, mode, **kw)
        return cache[key]

    return get
