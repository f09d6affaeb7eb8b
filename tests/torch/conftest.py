"""Fixtures of the torch tests: a small cohort of 20x slides and a few broken files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # torch_helpers, also for subprocess scripts

from torch_helpers import write_cohort


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Eight 1500×1200 slides at 0.5 µm/px (levels 1/4): four distinct, four byte copies."""
    return write_cohort(tmp_path_factory.mktemp("torch-cohort"))


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A missing path, an empty file and a text file named .svs."""
    d = tmp_path_factory.mktemp("torch-broken")
    (d / "empty.svs").write_bytes(b"")
    (d / "text.svs").write_text("not a slide\n")
    return {"missing": str(d / "missing.svs"), "empty": str(d / "empty.svs"), "text": str(d / "text.svs")}
