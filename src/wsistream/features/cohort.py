"""Cohort-scale extraction: resumable, atomic, sharded across ranks or claimed slide by slide, with a manifest.

The output layout, what counts as a finished slide and the manifest lines are
:mod:`wsistream.features.manifest`; this module runs the model over the slides
and hands each slide's write to the background writer.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from wsistream.backends.base import SlideBackend
from wsistream.features.claims import Claim, ClaimConfig, SlideClaims, cluster_rank_world, rotated, worker_id
from wsistream.features.encoders import Encoder
from wsistream.features.extract import ExtractionConfig, TileEncoderRunner, extract_slide
from wsistream.features.manifest import (
    CohortReport,
    FeatureFormat,
    SlideRecord,
    Status,
    append_record,
    describe_error,
    ensure_writable,
    finished_tiles,
    remove_partial_output,
    remove_temporaries,
    slide_output,
)
from wsistream.features.tiling import DeepZoomTiling, GridTiling
from wsistream.features.writer import BackgroundWriter
from wsistream.pipeline.mpp import MppPolicy
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.registry import MissingDependencyError


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments, else torchrun's, else SLURM's (:func:`cluster_rank_world`)."""
    return cluster_rank_world(rank, world_size)


def shard(slides: Sequence[str], rank: int, world_size: int) -> list[str]:
    """Slides of ``rank``: every ``world_size``-th slide of the list, starting at ``rank``."""
    return list(slides[rank::world_size])


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
    all_slides = _distinct_names(resolve_slide_paths(slides))
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
    bar = _ProgressBar(len(work), report, disable=not progress)

    def one(slide: str) -> Callable[[], SlideRecord]:
        return _one_slide(slide, root, fmt, runner, tiling, backend, mpp_policy, overwrite, rank, bar.on_batch)

    def finish(record: SlideRecord) -> None:  # in the writer thread, in slide order
        report.records.append(record)
        append_record(manifest, record)
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
        report.seconds = time.perf_counter() - bar.t_start
    return report


def _distinct_names(slides: list[str]) -> list[str]:
    """``slides``, refused when two share a file name (they would share an output folder)."""
    dupes = [n for n, c in Counter(Path(s).name for s in slides).items() if c > 1]
    if dupes:
        raise ValueError(f"slides with the same file name would share an output folder: {sorted(dupes)}")
    return slides


class _ProgressBar:
    """The slides bar with tiles, tiles/s and failures as its postfix; its clock times the whole run."""

    def __init__(self, n_slides: int, report: CohortReport, *, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.t_start = time.perf_counter()
        self._report = report
        self._tiles = 0
        rank, world = report.rank, report.world_size
        self._bar = tqdm(total=n_slides, unit="slide", disable=disable, desc=f"extract[{rank}/{world}]")

    def on_batch(self, n: int) -> None:
        """Count ``n`` more encoded tiles (called by the model loop)."""
        self._tiles += n
        rate = self._tiles / max(time.perf_counter() - self.t_start, 1e-9)
        failed = self._report.count("failed")
        self._bar.set_postfix(tiles=self._tiles, tiles_s=f"{rate:.1f}", failed=failed, refresh=False)

    def update(self, n: int) -> None:
        """Count ``n`` more finished slides."""
        self._bar.update(n)

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()


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
    remove_temporaries(target)  # leftovers of an interrupted run
    t0 = time.perf_counter()
    try:
        result = extract_slide(slide, runner, tiling, backend=backend, mpp_policy=mpp_policy, on_batch=on_batch)
    except MissingDependencyError:  # the environment, not this slide: stop once with the install hint
        remove_temporaries(target)
        raise
    except Exception as exc:  # a failing slide is recorded and skipped; KeyboardInterrupt still stops the run
        remove_temporaries(target)
        failed = record("failed", 0, time.perf_counter() - t0, describe_error(exc))
        return lambda: failed

    def write() -> SlideRecord:
        try:
            if fmt == "histossl":
                result.write_histossl(target.parent)
            else:
                result.write_h5(target)
        except MissingDependencyError:  # no h5py: escapes the job, so the run stops once (WriterFailedError)
            remove_partial_output(target)
            raise
        except Exception as exc:  # disk full, storage gone: this slide fails, the writer goes on
            remove_partial_output(target)
            return record("failed", 0, time.perf_counter() - t0, describe_error(exc))
        return record("done", result.n_tiles, time.perf_counter() - t0, output=str(target))

    return write
