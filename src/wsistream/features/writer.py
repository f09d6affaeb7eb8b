"""A background writer: slide outputs are written by one thread while the model encodes the next slide.

Writing a slide's features (``np.save`` / h5py, ``fsync``, ``os.replace``) takes
tens of ms to seconds for a large slide on network storage; done in the model
loop it leaves the accelerator idle that long per slide. :class:`BackgroundWriter`
runs the write of slide ``i`` (and everything after it: the manifest line, the
claim release) in a thread while slide ``i + 1`` is read and encoded. Jobs run
in submission order, so manifest lines keep the order of the slide list.

The queue is bounded (``max_pending``): at most ``max_pending`` finished slides
wait in memory beside the one being written, and :meth:`BackgroundWriter.submit`
blocks the model loop when the writer falls behind (back-pressure, not growth).

Each job handles its own slide's errors (the cohort turns a failed write into
that slide's ``failed`` record, see :mod:`wsistream.features.cohort`). An
exception escaping a job is a bug of the job: the thread stops, and the next
:meth:`~BackgroundWriter.submit` or :meth:`~BackgroundWriter.close` in the
calling thread raises :class:`WriterFailedError` with it as the cause; no call
waits on a dead thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType

from wsistream.errors import WsiStreamError

Job = Callable[[], None]

#: How often a blocked :meth:`BackgroundWriter.submit` / :meth:`~BackgroundWriter.close` re-checks the thread.
_POLL_S = 0.1


class WriterFailedError(WsiStreamError):
    """The background writer thread stopped on an exception that its job did not handle."""


class BackgroundWriter:
    """One daemon thread running write jobs from a bounded FIFO queue.

    Parameters
    ----------
    max_pending : int
        Jobs that may wait beside the running one (each holds one slide's features).
    name : str
        Thread name (shows in ``py-spy`` / faulthandler dumps).
    """

    def __init__(self, max_pending: int = 1, name: str = "wsistream-feature-writer") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except BaseException as exc:  # handed to the caller by submit/close
                self._error = exc
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise WriterFailedError(None, f"the feature writer thread stopped: {self._error!r}") from self._error

    def _put(self, item: Job | None) -> None:
        while True:
            self._raise_if_failed()
            if not self._thread.is_alive():
                raise WriterFailedError(None, "the feature writer thread is not running")
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def submit(self, job: Job) -> None:
        """Queue ``job``; blocks while ``max_pending`` jobs wait.

        Raises
        ------
        WriterFailedError
            The thread stopped on an earlier job's exception.
        """
        self._put(job)

    def close(self) -> None:
        """Run the queued jobs, then stop the thread (idempotent); raises as :meth:`submit` does."""
        if self._thread.is_alive():
            self._put(None)
            while self._thread.is_alive():
                self._thread.join(timeout=_POLL_S)
        self._raise_if_failed()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(WriterFailedError):  # the loop's own error is the one raised
            self.close()  # the loop failed: still land the slides already encoded
