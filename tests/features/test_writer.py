"""The background feature writer: order, back-pressure, and a failing job surfacing instead of hanging."""

from __future__ import annotations

import threading

import pytest

from wsistream.features.writer import BackgroundWriter, WriterFailedError


def test_jobs_run_in_order_on_the_writer_thread():
    done: list[tuple[int, str]] = []
    with BackgroundWriter(max_pending=2) as writer:
        for i in range(5):
            writer.submit(lambda i=i: done.append((i, threading.current_thread().name)))
    assert done == [(i, "wsistream-feature-writer") for i in range(5)]


def test_submit_blocks_while_the_queue_is_full():
    gate, submitted = threading.Event(), threading.Event()
    writer = BackgroundWriter(max_pending=1)
    writer.submit(gate.wait)  # running
    writer.submit(lambda: None)  # waiting: the queue is full

    def third() -> None:
        writer.submit(lambda: None)
        submitted.set()

    t = threading.Thread(target=third)
    t.start()
    assert not submitted.wait(0.5)  # held back while the writer is busy
    gate.set()
    assert submitted.wait(10)
    t.join()
    writer.close()


def test_an_escaping_exception_is_raised_by_the_next_call_not_a_hang():
    writer = BackgroundWriter(max_pending=1)
    writer.submit(lambda: 1 / 0)
    with pytest.raises(WriterFailedError, match="ZeroDivisionError") as info:
        for _ in range(10):  # the queue has room for one; the dead thread is seen at the latest on close
            writer.submit(lambda: None)
        writer.close()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(WriterFailedError):
        writer.close()


def test_a_failing_loop_still_lands_the_queued_jobs_and_keeps_its_own_error():
    done: list[int] = []
    with pytest.raises(KeyError), BackgroundWriter(max_pending=2) as writer:
        writer.submit(lambda: done.append(1))
        raise KeyError("model loop")
    assert done == [1]
    with pytest.raises(ValueError, match="max_pending"):
        BackgroundWriter(max_pending=0)
