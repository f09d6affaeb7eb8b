"""Which worker of a cluster job extracts which slide: ranks from the launcher, and lock files in the output root.

Ranks (:func:`cluster_rank_world`): explicit arguments, else ``torchrun``'s
``RANK`` / ``WORLD_SIZE``, else SLURM's ``SLURM_PROCID`` / ``SLURM_NTASKS``
combined with a job array's ``SLURM_ARRAY_TASK_ID`` (minus ``SLURM_ARRAY_TASK_MIN``)
/ ``SLURM_ARRAY_TASK_COUNT``: array task ``a`` of ``A``, task ``p`` of ``P`` is rank
``a · P + p`` of ``A · P``.

Dynamic claiming (:class:`SlideClaims`): before a worker extracts a slide it
creates ``{root}/.claims/{name}.lock`` with ``O_CREAT | O_EXCL`` (atomic: exactly
one creator wins, also on NFS v3+), holding the owner (host, pid, a random token)
as JSON. A daemon thread touches the lock every ``heartbeat_s`` seconds. A lock is
*stale* — its owner was preempted or killed — when its heartbeat is older than
``stale_s`` or, on the same host, when its pid is gone; a stale lock is removed by
whoever holds the short-lived ``.break`` lock for that slide (so two workers
cannot both break it and both take the slide), and the slide is claimed again.
A finished slide is released (lock deleted) only after its output was renamed into
place, so a worker that claims after that sees the output and skips the slide.
A failed slide leaves ``{name}.failed`` (the error), which other workers of the
cohort respect; delete it to retry the slide.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def cluster_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process: the arguments, else torchrun, else SLURM (task × array), else (0, 1).

    Raises
    ------
    ValueError
        Only one of ``rank`` / ``world_size`` given, or not ``0 <= rank < world_size``.
    """
    if (rank is None) != (world_size is None):
        raise ValueError(f"pass both rank and world_size (got rank={rank}, world_size={world_size})")
    if rank is None and _env_int("WORLD_SIZE") is not None:
        rank, world_size = _env_int("RANK") or 0, _env_int("WORLD_SIZE")
    if rank is None:
        task, n_tasks = _env_int("SLURM_PROCID") or 0, _env_int("SLURM_NTASKS") or 1
        array_id, n_array = _env_int("SLURM_ARRAY_TASK_ID"), _env_int("SLURM_ARRAY_TASK_COUNT")
        if array_id is not None and n_array is not None:
            array_index = array_id - (_env_int("SLURM_ARRAY_TASK_MIN") or 0)
            rank, world_size = array_index * n_tasks + task, n_array * n_tasks
        else:
            rank, world_size = task, n_tasks
    assert world_size is not None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


@dataclass(frozen=True)
class ClaimConfig:
    """Dynamic claiming of slides through lock files (see :mod:`wsistream.features.claims`).

    Parameters
    ----------
    heartbeat_s : float
        How often a worker touches the lock of the slide it extracts.
    stale_s : float
        Heartbeat age after which the lock's owner is presumed dead and the slide is taken over.
    """

    heartbeat_s: float = 30.0
    stale_s: float = 300.0

    def __post_init__(self) -> None:
        _check_timing(self.heartbeat_s, self.stale_s)


def _check_timing(heartbeat_s: float, stale_s: float) -> None:
    if not heartbeat_s > 0:
        raise ValueError(f"heartbeat_s must be > 0 seconds, got {heartbeat_s}")
    if not stale_s > 2 * heartbeat_s:
        raise ValueError(
            f"stale_s must exceed two heartbeats ({2 * heartbeat_s} s), got {stale_s}; "
            "pass a larger stale_s or a shorter heartbeat_s"
        )


def rotated(slides: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The whole list, starting at this rank's share, so workers start on different slides."""
    start = rank * len(slides) // world_size
    return [*slides[start:], *slides[:start]]


def worker_id() -> str:
    """``host-pid``: names this worker's manifest and lock files."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass(frozen=True)
class SlideClaims:
    """Lock files under ``folder`` (``{root}/.claims``) that give each slide to one worker at a time.

    Parameters
    ----------
    folder : Path
        Shared folder of the lock files.
    heartbeat_s : float
        How often the owner touches its lock.
    stale_s : float
        Age of the last heartbeat after which a lock's owner is presumed dead
        (default 10 heartbeats: survives a slow shared file system).
    """

    folder: Path
    heartbeat_s: float = 30.0
    stale_s: float = 300.0

    def __post_init__(self) -> None:
        _check_timing(self.heartbeat_s, self.stale_s)
        self.folder.mkdir(parents=True, exist_ok=True)

    def lock_path(self, name: str) -> Path:
        """The lock file of slide ``name``."""
        return self.folder / f"{name}.lock"

    def failed_path(self, name: str) -> Path:
        """The failure marker of slide ``name``."""
        return self.folder / f"{name}.failed"

    def _create(self, path: Path, payload: dict[str, Any]) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def is_stale(self, path: Path) -> bool:
        """Whether the lock at ``path`` belongs to a dead owner (old heartbeat, or a gone pid on this host)."""
        try:
            age = time.time() - path.stat().st_mtime
            owner = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return False
        except (OSError, ValueError):  # being written right now, or garbage: judged by age alone
            return age > self.stale_s
        if age > self.stale_s:
            return True
        return owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1)))

    def _break_stale(self, name: str) -> None:
        lock, breaker = self.lock_path(name), self.folder / f"{name}.break"
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > self.stale_s:  # a breaker that died mid-break
                breaker.unlink(missing_ok=True)
        if not self._create(breaker, {"host": socket.gethostname(), "pid": os.getpid()}):
            return
        try:
            if self.is_stale(lock):  # re-checked under the breaker: nobody re-claimed it meanwhile
                lock.unlink(missing_ok=True)
        finally:
            breaker.unlink(missing_ok=True)

    def try_claim(self, name: str) -> Claim | None:
        """Claim slide ``name`` for this process; ``None`` when another live worker holds it or it failed."""
        if self.failed_path(name).exists():
            return None
        token = secrets.token_hex(8)
        payload = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "claimed_at": time.time()}
        lock = self.lock_path(name)
        if self._create(lock, payload):
            return Claim(self, name, token)
        if self.is_stale(lock):
            self._break_stale(name)
            if self._create(lock, payload):
                return Claim(self, name, token)
        return None

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[list[Claim]]:
        """Run a daemon thread touching the locks in the yielded list every ``heartbeat_s`` seconds."""
        held: list[Claim] = []
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                for claim in list(held):
                    with contextlib.suppress(OSError):
                        os.utime(self.lock_path(claim.name))

        thread = threading.Thread(target=beat, name="wsistream-claims-heartbeat", daemon=True)
        thread.start()
        try:
            yield held
        finally:
            stop.set()
            thread.join(timeout=self.heartbeat_s + 1)


@dataclass(frozen=True)
class Claim:
    """A slide this process holds; :meth:`release` after its output is in place."""

    claims: SlideClaims
    name: str
    token: str

    def held(self) -> bool:
        """Whether the lock is still ours (not broken as stale by another worker)."""
        try:
            return bool(json.loads(self.claims.lock_path(self.name).read_text()).get("token") == self.token)
        except (OSError, ValueError):
            return False

    def release(self) -> None:
        """Delete the lock if it is still ours."""
        if self.held():
            self.claims.lock_path(self.name).unlink(missing_ok=True)

    def fail(self, error: str) -> None:
        """Leave the failure marker (other workers skip the slide), then release."""
        path = self.claims.failed_path(self.name)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"error": error, "worker": worker_id(), "at": time.time()}))
        os.replace(tmp, path)
        self.release()
