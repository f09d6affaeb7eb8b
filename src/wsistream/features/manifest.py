"""A cohort extraction's output layout and manifest: where each slide's features go, when they are finished.

Layout (``rl_benchmarks`` ``extract_slide_features.py``)::

    {out}/{extractor}/{cohort}/{slide_name}/features.npy   # format="histossl" (+ coords.npy, extraction.json)
    {out}/{extractor}/{cohort}/{slide_stem}.h5             # format="h5"
    {out}/{extractor}/{cohort}/manifest.jsonl              # manifest.rank{r}.jsonl under torchrun/SLURM,
                                                           # manifest.{host}-{pid}.jsonl with claiming

A slide is *finished* when its ``features.npy`` / ``.h5`` exists and opens:
every file is written under a hidden temporary name and renamed into place,
``features.npy`` last, so a run killed at any moment leaves either a complete
output or temporary files that no reader globs and the next run deletes.
Each slide gets one manifest line: ``slide, slide_id, status (done | skipped |
failed), n_tiles, seconds, error, output, rank, finished_at``. The extraction
itself is :mod:`wsistream.features.cohort`; this module needs numpy only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsistream.features.errors import OutputNotWritableError
from wsistream.features.formats import SIDECAR_NAME

FeatureFormat = Literal["histossl", "h5"]
Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class SlideRecord:
    """One manifest line."""

    slide: str
    slide_id: str
    status: Status
    n_tiles: int
    seconds: float
    error: str = ""
    output: str = ""
    rank: int = 0
    finished_at: str = ""

    def to_json(self) -> str:
        """Return the JSON line written to the manifest."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class CohortReport:
    """What a call of :func:`extract_cohort` did on this rank."""

    root: Path
    manifest: Path
    rank: int
    world_size: int
    records: list[SlideRecord] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        """Count the slides with ``status``."""
        return sum(r.status == status for r in self.records)

    @property
    def failed(self) -> list[SlideRecord]:
        """Records of the slides that failed."""
        return [r for r in self.records if r.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failed

    @property
    def tiles_encoded(self) -> int:
        """Tiles encoded in this run (skipped slides excluded)."""
        return sum(r.n_tiles for r in self.records if r.status == "done")

    def summary(self) -> str:
        """One line: done / skipped / failed counts, tiles and tiles/s."""
        rate = self.tiles_encoded / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.count('done')} done, {self.count('skipped')} skipped, {self.count('failed')} failed; "
            f"{self.tiles_encoded} tiles in {self.seconds:.1f} s ({rate:.1f} tiles/s); "
            f"manifest: {self.manifest}"
        )


def slide_output(root: str | os.PathLike[str], slide_path: str, fmt: FeatureFormat) -> Path:
    """Where a slide's features go: ``{root}/{name}/features.npy`` or ``{root}/{stem}.h5``."""
    name = Path(slide_path).name
    return Path(root) / name / "features.npy" if fmt == "histossl" else Path(root) / f"{Path(name).stem}.h5"


def finished_tiles(path: Path) -> int | None:
    """Tile count of a complete output file, ``None`` when absent or unreadable (then it is redone)."""
    if not path.is_file():
        return None
    try:
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return int(arr.shape[0]) if arr.ndim == 2 and arr.shape[1] >= 4 else None
        import h5py

        with h5py.File(path, "r") as fh:
            return int(fh["features"].shape[0]) if "features" in fh and "coords" in fh else None
    except (OSError, ValueError, KeyError, EOFError):
        return None


def remove_temporaries(target: Path) -> None:
    """Delete the hidden temporaries a write of ``target`` left (an interrupted or failed run)."""
    folder = target.parent
    if not folder.is_dir():
        return
    names = (target.name, "coords.npy", "extraction.json") if target.suffix == ".npy" else (target.name,)
    for name in names:
        for p in folder.glob(f".{name}.tmp-*"):
            p.unlink(missing_ok=True)


def remove_partial_output(target: Path) -> None:
    """After a failed write: the temporaries, and the side files of a ``features.npy`` that never landed."""
    remove_temporaries(target)
    if target.suffix == ".npy" and not target.exists():
        for name in ("coords.npy", SIDECAR_NAME):
            (target.parent / name).unlink(missing_ok=True)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove it takes a file, or raise :class:`OutputNotWritableError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.tmp-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(str(folder), f"output folder is not writable ({exc.strerror or exc})") from exc


def read_manifest(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Latest manifest record per slide across all rank manifests in ``root``."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(root).glob("manifest*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec["slide"] not in latest or rec["finished_at"] >= latest[rec["slide"]]["finished_at"]:
                    latest[rec["slide"]] = rec
    return latest


def describe_error(exc: BaseException) -> str:
    """``ErrorType: message`` of a failure; for an error re-raised by a DataLoader worker, the original one.

    ``torch`` re-raises a worker exception as ``type(exc)("Caught X in DataLoader
    worker ... Original Traceback ...")`` (``RuntimeError`` when the class cannot be
    rebuilt from one string); the last line of that traceback is the original
    ``module.ErrorType: message``.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        name, sep, message = last.partition(": ")
        if sep:
            return f"{name.rsplit('.', 1)[-1]}: {message}"
    return f"{type(exc).__name__}: {text}"


def append_record(manifest: Path, record: SlideRecord) -> None:
    """Append ``record`` as one line and fsync, so a killed run keeps every line it wrote."""
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
