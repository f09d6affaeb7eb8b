"""Run slide checks in a process pool that survives a crashing or hanging slide.

Each slide is checked inside its own ``try`` in a worker
(:func:`~wsistream.qc._check.validate_slide` never raises), and with a
per-slide alarm.  What a ``try`` cannot catch is handled here:

* a worker that **dies** (a segfault in a slide library) breaks the pool:
  the slides in flight are re-run one at a time in a fresh pool; the one that
  kills its worker again gets an ``unusable`` row (``WorkerCrashed``);
* a check stuck in C code where the alarm cannot interrupt it is stopped by
  the parent after a hard limit: the workers are killed, the slide gets a
  ``SlideCheckTimeout`` row and the other slides in flight are re-queued.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from wsistream.pipeline import PatchPipeline
from wsistream.qc._check import add_problem, empty_row, finish_row, validate_slide

#: What travels to the workers: a recipe ``(name, build kwargs)`` or a ready pipeline.
PipelineSpec = tuple[str, dict[str, Any]] | PatchPipeline
#: ``on_result(done, total, row)`` is called in the parent as each row arrives.
ResultCallback = Callable[[int, int, dict[str, Any]], None]

_PLACEHOLDER = ["<validate>"]
_WORKER: tuple[PatchPipeline, str | None] | None = None


def build_from_spec(spec: PipelineSpec) -> tuple[PatchPipeline, str | None]:
    """The pipeline a spec describes and its recipe name (``None`` for a ready pipeline)."""
    if isinstance(spec, PatchPipeline):
        return spec, None
    from wsistream.recipes import get_recipe

    name, kwargs = spec
    return get_recipe(name).build(_PLACEHOLDER, **kwargs), name


def check_one(
    path: str, pipeline: PatchPipeline, recipe: str | None, decode_samples: int, timeout_s: float | None
) -> dict[str, Any]:
    """:func:`validate_slide`, with even a ``BaseException`` turned into a row."""
    started = time.perf_counter()
    try:
        return validate_slide(path, pipeline, decode_samples=decode_samples, recipe=recipe, timeout_s=timeout_s)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        row = empty_row(path, recipe)
        add_problem(row, "validate", "error", type(exc).__name__, str(exc))
        return finish_row(row, started)


def _failure_row(path: str, recipe: str | None, error_type: str, reason: str) -> dict[str, Any]:
    row = empty_row(path, recipe)
    add_problem(row, "validate", "error", error_type, reason)
    return finish_row(row, time.perf_counter())


def _init_worker(spec: PipelineSpec, pids: Any) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    pids.put(os.getpid())
    _WORKER = build_from_spec(spec)


def _task(index: int, path: str, decode_samples: int, timeout_s: float | None) -> tuple[int, dict[str, Any]]:
    assert _WORKER is not None
    pipeline, recipe = _WORKER
    return index, check_one(path, pipeline, recipe, decode_samples, timeout_s)


def _kill_workers(pids: Any) -> None:
    while not pids.empty():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pids.get(), signal.SIGKILL)


def run_pool(
    paths: Sequence[str],
    spec: PipelineSpec,
    *,
    recipe: str | None,
    workers: int,
    decode_samples: int,
    timeout_s: float | None,
    hard_timeout_s: float | None = None,
    on_result: ResultCallback | None = None,
) -> list[dict[str, Any]]:
    """Check ``paths`` with ``workers`` processes; rows come back in input order.

    ``hard_timeout_s`` (default ``1.5 · timeout_s + 10``) is how long the
    parent waits for one slide before killing the workers.
    """
    hard = hard_timeout_s if hard_timeout_s is not None else (1.5 * timeout_s + 10 if timeout_s else None)
    run = _PoolRun(paths, spec, recipe, workers, decode_samples, timeout_s, hard, on_result)
    while run.pending:
        run.generation()
    return [row for row in run.rows if row is not None]


_Running = dict[Future[tuple[int, dict[str, Any]]], tuple[int, float]]


@dataclass(eq=False)
class _PoolRun:
    """The state of one :func:`run_pool` call: rows so far, slides still to check, slides that broke a pool.

    Each :meth:`generation` is one process pool, used until every slide has a
    row or the pool has to be replaced (a worker died, or a slide hung).
    """

    paths: Sequence[str]
    spec: PipelineSpec
    recipe: str | None
    workers: int
    decode_samples: int
    timeout_s: float | None
    hard_s: float | None
    on_result: ResultCallback | None
    rows: list[dict[str, Any] | None] = field(init=False)
    pending: deque[int] = field(init=False)
    suspects: set[int] = field(default_factory=set, init=False)
    done: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rows = [None] * len(self.paths)
        self.pending = deque(range(len(self.paths)))

    def deliver(self, index: int, row: dict[str, Any]) -> None:
        """Keep ``row`` as slide ``index``'s and report progress."""
        self.rows[index] = row
        self.done += 1
        if self.on_result is not None:
            self.on_result(self.done, len(self.paths), row)

    def generation(self) -> None:
        """One pool: submit, collect, and stop it early (killing its workers) after a crash or a hang."""
        ctx = mp.get_context()
        pids = ctx.SimpleQueue()
        executor = ProcessPoolExecutor(
            max_workers=max(1, min(self.workers, len(self.pending))),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self.spec, pids),
        )
        running: _Running = {}
        clean = False
        try:
            restart = False
            while (self.pending or running) and not restart:
                _submit(
                    executor,
                    running,
                    self.pending,
                    self.suspects,
                    self.workers,
                    self.paths,
                    self.decode_samples,
                    self.timeout_s,
                )
                finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                broken = self._collect(finished, running)
                if broken:
                    self._requeue_broken(broken, running)
                    restart = True
                else:
                    restart = self._stop_hung(running)
            clean = not restart
        finally:
            if clean:
                executor.shutdown(wait=True)
            else:
                _kill_workers(pids)
                executor.shutdown(wait=False, cancel_futures=True)

    def _collect(self, finished: set[Future[tuple[int, dict[str, Any]]]], running: _Running) -> list[int]:
        """Deliver the finished rows; the indices whose worker died (``BrokenProcessPool``)."""
        broken: list[int] = []
        for future in finished:
            index, _ = running.pop(future)
            try:
                self.deliver(*future.result())
            except BrokenProcessPool:  # some worker died
                broken.append(index)
            except Exception as exc:  # e.g. a row that could not be sent back
                self.deliver(index, _failure_row(self.paths[index], self.recipe, type(exc).__name__, str(exc)))
        return broken

    def _requeue_broken(self, broken: list[int], running: _Running) -> None:
        """After a worker died: the pool's other futures fail too, so every slide in flight is a suspect.

        A suspect runs alone in the next pool; one that was a suspect already
        killed its worker twice and gets a ``WorkerCrashed`` row.
        """
        wait(list(running), timeout=10)
        for future, (index, _) in running.items():
            if future.done() and future.exception() is None:
                self.deliver(*future.result())
            else:
                broken.append(index)
        running.clear()
        for index in broken:
            if index in self.suspects:  # it ran alone and killed its worker again
                reason = "the worker process died while checking this slide, twice (a crash in C code?)"
                self.deliver(index, _failure_row(self.paths[index], self.recipe, "WorkerCrashed", reason))
            else:
                self.suspects.add(index)
                self.pending.appendleft(index)

    def _stop_hung(self, running: _Running) -> bool:
        """Give slides past the hard limit a ``SlideCheckTimeout`` row; re-queue the rest; True if any hung."""
        now = time.monotonic()
        restart = False
        for future, (index, start) in list(running.items()):
            if self.hard_s is not None and now - start > self.hard_s:
                running.pop(future)
                reason = f"no result after {self.hard_s:g} s (the slide library did not return); worker killed"
                self.deliver(index, _failure_row(self.paths[index], self.recipe, "SlideCheckTimeout", reason))
                restart = True
        if restart:
            for index, _ in running.values():
                self.pending.appendleft(index)
            running.clear()
        return restart


def _submit(
    executor: ProcessPoolExecutor,
    running: _Running,
    pending: deque[int],
    suspects: set[int],
    workers: int,
    paths: Sequence[str],
    decode_samples: int,
    timeout_s: float | None,
) -> None:
    """Keep at most one task per worker in flight (so a task's start time is known); suspects run alone."""
    while pending and len(running) < max(1, workers):
        index = pending[0]
        if any(i in suspects for i, _ in running.values()) or (index in suspects and running):
            return
        pending.popleft()
        future = executor.submit(_task, index, paths[index], decode_samples, timeout_s)
        running[future] = (index, time.monotonic())
        if index in suspects:
            return
