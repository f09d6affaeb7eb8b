"""CPU time from Linux's ``/proc``: how benchmarks say whether a rate was bound by the box's cores.

A loader rate on a small box can be limited by the CPU that other processes on it take (a loopback
S3 server, a latency proxy, other jobs): :func:`box_busy_cpu_s` counts every core's busy time, so
busy cores / cores near 1 over a measured window says the box, not the code measured, was the limit.
Both return ``None`` where ``/proc`` is missing (macOS, Windows); callers then leave the field out.
"""

from __future__ import annotations

import os

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def box_busy_cpu_s() -> float | None:
    """CPU-seconds all cores of the machine have been busy since boot (user, nice, system, irq, softirq, steal).

    From the aggregate ``cpu`` line of ``/proc/stat``; idle and iowait are not busy.  Guest time is
    already inside user time, so it is not added again.
    """
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_S


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU-seconds of process ``pid``, all its threads (``/proc/<pid>/stat`` fields 14–15).

    ``None`` where ``/proc`` is missing or the process has exited.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    after_name = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return (int(after_name[11]) + int(after_name[12])) / _TICKS_PER_S
