"""Throughput benchmark: decode ceiling, raw OpenSlide loop and our pipeline in one run."""

from wsistream.bench.run import format_table, run_bench
from wsistream.bench.slides import BenchSlides, bench_slides

__all__ = ["BenchSlides", "bench_slides", "format_table", "run_bench"]
