"""Counters of one pipeline instance, kept apart so the stream can count without importing the pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PipelineStats:
    """Counters of one pipeline instance (per process)."""

    slides_opened: int = 0
    slides_failed: int = 0
    read_errors: int = 0
    patches_filtered: int = 0
