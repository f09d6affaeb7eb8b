"""Cohort-scale extraction: resumable, atomic, sharded across ranks or claimed slide by slide, with a manifest.

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
failed), n_tiles, seconds, error, output, rank, finished_at``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsistream.backends.base import SlideBackend
from wsistream.features.claims import Claim, ClaimConfig, SlideClaims, cluster_rank_world, rotated, worker_id
from wsistream.features.encoders import Encoder
from wsistream.features.errors import OutputNotWritableError
from wsistream.features.extract import ExtractionConfig, TileEncoderRunner, extract_slide
from wsistream.features.formats import SIDECAR_NAME
from wsistream.features.tiling import DeepZoomTiling, GridTiling
from wsistream.features.writer import BackgroundWriter
from wsistream.pipeline.mpp import MppPolicy
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.registry import MissingDependencyError

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


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments, else torchrun's, else SLURM's (:func:`cluster_rank_world`)."""
    return cluster_rank_world(rank, world_size)


def shard(slides: Sequence[str], rank: int, world_size: int) -> list[str]:
    """Slides of ``rank``: every ``world_size``-th slide of the list, starting at ``rank``."""
    return list(slides[rank::world_size])


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


def _remove_temporaries(target: Path) -> None:
    folder = target.parent
    if not folder.is_dir():
        return
    names = (target.name, "coords.npy", "extraction.json") if target.suffix == ".npy" else (target.name,)
    for name in names:
        for p in folder.glob(f".{name}.tmp-*"):
            p.unlink(missing_ok=True)


def _remove_partial_output(target: Path) -> None:
    """After a failed write: the temporaries, and the side files of a ``features.npy`` that never landed."""
    _remove_temporaries(target)
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


def _append(manifest: Path, record: SlideRecord) -> None:
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def extract_cohort(
    slides: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    encoder: Encoder,
    *,
    tiling: DeepZoomTiling | GridTiling | None = None,
    fmt: FeatureFormat = "histossl",
    extractor_name: str | None = None,
    cohort: str = "default",
    config: ExtractionConfig | None = None,
    backend: SlideBackend | None = None,
    mpp_policy: MppPolicy | None = None,
    overwrite: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    claim: ClaimConfig | None = None,
    progress: bool = True,
) -> CohortReport:
    """Extract the features of every slide of a cohort (this rank's shard, or the slides it claims), resumably.

    Parameters
    ----------
    slides
        A folder, a glob, a ``.txt`` list, one file, or a list of paths (``resolve_slide_paths``).
    out_dir : path-like
        Root; outputs go to ``{out_dir}/{extractor_name}/{cohort}``.
    encoder : Encoder
        The model (moved to ``config.device`` once).
    tiling : DeepZoomTiling or GridTiling
        Default :class:`DeepZoomTiling`.
    fmt : {"histossl", "h5"}
        Output format.
    extractor_name : str, optional
        Folder name of the extractor (default: the encoder name).
    overwrite : bool
        Redo finished slides too (not with ``claim``: delete the outputs instead).
    rank, world_size : int, optional
        Shard; default from torchrun (``RANK`` / ``WORLD_SIZE``) or SLURM (:func:`cluster_rank_world`).
    claim : ClaimConfig, optional
        Dynamic claiming: every worker walks the whole list (from an offset set by its rank)
        and extracts the slides it claims with a lock file in ``{root}/.claims``
        (:mod:`wsistream.features.claims`); any number of workers, started or killed at any
        time, extract every slide once. Each worker writes ``manifest.{host}-{pid}.jsonl``
        and records only the slides it extracted.
    progress : bool
        Show a progress bar (slides, tiles/s).

    Raises
    ------
    OutputNotWritableError
        The output folder cannot be written (before any slide is read).
    ValueError
        Bad arguments, or two slides with the same file name (they would share an output).
    """
    if fmt not in ("histossl", "h5"):
        raise ValueError(f"fmt={fmt!r}; pass 'histossl' or 'h5'")
    if claim is not None and overwrite:
        raise ValueError("overwrite=True with claim: workers would redo each other's slides; delete the outputs")
    rank, world_size = dist_rank_world(rank, world_size)
    all_slides = resolve_slide_paths(slides)
    dupes = [n for n, c in Counter(Path(s).name for s in all_slides).items() if c > 1]
    if dupes:
        raise ValueError(f"slides with the same file name would share an output folder: {sorted(dupes)}")
    root = Path(out_dir) / (extractor_name or encoder.name) / cohort
    ensure_writable(root)
    if claim is not None:
        manifest = root / f"manifest.{worker_id()}.jsonl"
    else:
        manifest = root / ("manifest.jsonl" if world_size == 1 else f"manifest.rank{rank:03d}.jsonl")
    report = CohortReport(root, manifest, rank, world_size)
    work = shard(all_slides, rank, world_size) if claim is None else rotated(all_slides, rank, world_size)
    tiling = tiling or DeepZoomTiling()
    runner = TileEncoderRunner(encoder, config)
    t_start = time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(total=len(work), unit="slide", disable=not progress, desc=f"extract[{rank}/{world_size}]")
    tiles_done = 0

    def on_batch(n: int) -> None:
        nonlocal tiles_done
        tiles_done += n
        rate = tiles_done / max(time.perf_counter() - t_start, 1e-9)
        bar.set_postfix(tiles=tiles_done, tiles_s=f"{rate:.1f}", failed=report.count("failed"), refresh=False)

    def one(slide: str) -> Callable[[], SlideRecord]:
        return _one_slide(slide, root, fmt, runner, tiling, backend, mpp_policy, overwrite, rank, on_batch)

    def finish(record: SlideRecord) -> None:  # in the writer thread, in slide order
        report.records.append(record)
        _append(manifest, record)
        bar.update(1)

    try:
        with BackgroundWriter(max_pending=1) as writer:
            if claim is None:
                for slide in work:
                    write = one(slide)
                    writer.submit(partial(_land, write, finish))
            else:
                _claimed_run(work, root, fmt, claim, one, finish, writer)
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t_start
    return report


def _land(write: Callable[[], SlideRecord], finish: Callable[[SlideRecord], None]) -> None:
    """The writer's job for one slide: write it, then record it."""
    finish(write())


def _claimed_run(
    work: Sequence[str],
    root: Path,
    fmt: FeatureFormat,
    config: ClaimConfig,
    one: Callable[[str], Callable[[], SlideRecord]],
    finish: Callable[[SlideRecord], None],
    writer: BackgroundWriter,
) -> None:
    """Extract the slides of ``work`` this worker claims; the others' (and finished ones) are passed over.

    A claim is released by the writer, after its slide's output is in place (or its failure marked).
    """
    claims = SlideClaims(root / ".claims", config.heartbeat_s, config.stale_s)
    with claims.heartbeat() as held:
        for slide, claim in _claim_each(work, root, fmt, claims):
            held.append(claim)
            try:
                write = one(slide)
            except BaseException:
                claim.release()
                held.remove(claim)
                raise

            def land(write: Callable[[], SlideRecord] = write, claim: Claim = claim) -> None:
                try:
                    record = write()
                    finish(record)
                    if record.status == "failed":
                        claim.fail(record.error)
                finally:
                    claim.release()
                    held.remove(claim)

            writer.submit(land)
        writer.close()  # every claim released before the heartbeat stops


def _claim_each(
    work: Sequence[str], root: Path, fmt: FeatureFormat, claims: SlideClaims
) -> Iterator[tuple[str, Claim]]:
    """Yield each unfinished slide this worker wins the lock of; the output is re-checked under the lock."""
    for slide in work:
        target = slide_output(root, slide, fmt)
        if finished_tiles(target) is not None:
            continue
        claim = claims.try_claim(Path(slide).name)
        if claim is None:
            continue
        if finished_tiles(target) is not None:  # finished by its owner between our two looks
            claim.release()
            continue
        yield slide, claim


def _one_slide(
    slide: str,
    root: Path,
    fmt: FeatureFormat,
    runner: TileEncoderRunner,
    tiling: DeepZoomTiling | GridTiling,
    backend: SlideBackend | None,
    mpp_policy: MppPolicy | None,
    overwrite: bool,
    rank: int,
    on_batch: Any,
) -> Callable[[], SlideRecord]:
    """Extract one slide here (the model loop); return the job that writes it and gives its record (the writer).

    A failure of either half is the slide's ``failed`` record and leaves no output file of it.
    """
    target = slide_output(root, slide, fmt)
    slide_id = target.parent.name if fmt == "histossl" else target.stem

    def record(status: Status, n: int, seconds: float, error: str = "", output: str = "") -> SlideRecord:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return SlideRecord(slide, slide_id, status, n, seconds, error, output, rank, at)

    if not overwrite and (n := finished_tiles(target)) is not None:
        skipped = record("skipped", n, 0.0, output=str(target))
        return lambda: skipped
    _remove_temporaries(target)  # leftovers of an interrupted run
    t0 = time.perf_counter()
    try:
        result = extract_slide(slide, runner, tiling, backend=backend, mpp_policy=mpp_policy, on_batch=on_batch)
    except MissingDependencyError:  # the environment, not this slide: stop once with the install hint
        _remove_temporaries(target)
        raise
    except Exception as exc:  # a failing slide is recorded and skipped; KeyboardInterrupt still stops the run
        _remove_temporaries(target)
        failed = record("failed", 0, time.perf_counter() - t0, describe_error(exc))
        return lambda: failed

    def write() -> SlideRecord:
        try:
            if fmt == "histossl":
                result.write_histossl(target.parent)
            else:
                result.write_h5(target)
        except MissingDependencyError:  # no h5py: escapes the job, so the run stops once (WriterFailedError)
            _remove_partial_output(target)
            raise
        except Exception as exc:  # disk full, storage gone: this slide fails, the writer goes on
            _remove_partial_output(target)
            return record("failed", 0, time.perf_counter() - t0, describe_error(exc))
        return record("done", result.n_tiles, time.perf_counter() - t0, output=str(target))

    return write
