"""The failure log: one JSON line per failure, reusable as a quarantine list."""

from __future__ import annotations

import json
import os

from wsistream.types import FailureRecord


def append_failure(path: str | os.PathLike[str], record: FailureRecord) -> None:
    """Append ``record`` as one JSON line.

    One ``write()`` per line on a file opened in append mode, so lines from
    several DataLoader workers appending to the same log do not interleave.
    """
    line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)


def read_failure_log(path: str | os.PathLike[str]) -> set[str]:
    """Slides a failure log lists as retired (a missing file lists none)."""
    known: set[str] = set()
    if not os.path.exists(path):
        return known
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                if record.get("retired", True):
                    known.add(record["slide_path"])
    return known
