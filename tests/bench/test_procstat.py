"""``/proc`` CPU readers: a busy loop shows up in this process's time and in the box's busy time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from wsistream._procstat import box_busy_cpu_s, process_cpu_s

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_busy_loop_counts_in_the_process_and_in_the_box():
    box0, own0 = box_busy_cpu_s(), process_cpu_s(os.getpid())
    _spin(0.4)
    box1, own1 = box_busy_cpu_s(), process_cpu_s(os.getpid())
    assert 0.35 <= own1 - own0 <= 0.6  # clock ticks are 10 ms
    assert box1 - box0 >= 0.35  # the box's busy time holds ours (and whatever else ran)


def test_another_process_is_read_by_pid_and_an_exited_one_is_none():
    code = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass\ninput()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while (process_cpu_s(child.pid) or 0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_cpu_s(child.pid) >= 0.3  # its spin, read from /proc/<pid>/stat, not ours
    finally:
        child.communicate(b"\n", timeout=20)
    assert process_cpu_s(child.pid) is None  # reaped: no /proc entry
