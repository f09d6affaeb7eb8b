"""Pre-flight check of one slide against a pipeline's settings (the rows of ``wsistream validate``).

Every stage the stream would go through is tried in the same way the stream
does it (the pipeline's backend, µm/px policy, read plan, tissue detector and
sampler), each in its own ``try``, so one row lists every problem of a slide,
not only the first.  Nothing here raises for a bad slide: problems are data.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from wsistream.errors import MissingMppError, WsiStreamError
from wsistream.sampling.grid import GridSampler

if TYPE_CHECKING:
    from wsistream.backends.base import SlideHandle
    from wsistream.pipeline import PatchPipeline
    from wsistream.sampling.plan import ReadPlan
    from wsistream.tissue.base import TissueMask
    from wsistream.types import SlideProperties

#: Keys of a validate row, in order (the JSON of ``wsistream validate --json`` has exactly these).
ROW_KEYS: tuple[str, ...] = (
    "slide",
    "status",
    "recipe",
    "opens",
    "backend",
    "vendor",
    "dimensions",
    "level_count",
    "level_dimensions",
    "level_downsamples",
    "mpp",
    "mpp_raw",
    "mpp_source",
    "objective_power",
    "target_mpp",
    "patch_size",
    "reachable",
    "read_level",
    "read_size",
    "delivered_mpp",
    "resampling",
    "tissue_fraction",
    "tissue_threshold",
    "qualifying_tiles",
    "decode_level",
    "decode_size",
    "decode_tested",
    "decode_ok",
    "decode_failed",
    "decode_first_error",
    "problems",
    "seconds",
)

#: Keys of one entry of ``row["problems"]``.
PROBLEM_KEYS: tuple[str, ...] = ("stage", "severity", "error_type", "reason")

#: A mask covering more of the overview than this is suspicious (dark or fluorescent background).
WHOLESALE_TISSUE_FRACTION = 0.95

#: 25.4 mm / 72 dpi in µm: what generic TIFF writers store as the resolution.
_TIFF_72DPI_MPP = 25400.0 / 72.0


class SlideCheckTimeout(BaseException):
    """Raised by the alarm inside a slide check (a BaseException, so stage ``except Exception`` lets it through)."""


def empty_row(slide: str, recipe: str | None) -> dict[str, Any]:
    """A row with every key, nothing checked yet."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(slide=slide, recipe=recipe, opens=False, problems=[], decode_tested=0, decode_ok=0, decode_failed=0)
    return row


def add_problem(row: dict[str, Any], stage: str, severity: str, error_type: str, reason: str) -> None:
    """Append one problem (``severity`` is ``"error"``: unusable, or ``"warning"``)."""
    row["problems"].append({"stage": stage, "severity": severity, "error_type": error_type, "reason": reason})


def finish_row(row: dict[str, Any], started: float) -> dict[str, Any]:
    """Set ``status`` from the problems and the elapsed ``seconds``; non-finite floats become ``None`` (JSON)."""
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    severities = {p["severity"] for p in row["problems"]}
    row["status"] = "unusable" if "error" in severities else "warning" if severities else "ok"
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def validate_slide(
    path: str,
    recipe_pipeline: PatchPipeline,
    *,
    decode_samples: int = 8,
    recipe: str | None = None,
    timeout_s: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Check one slide against a pipeline's settings; never raises for a bad slide.

    Parameters
    ----------
    path : str
        The slide file.
    recipe_pipeline : PatchPipeline
        Its ``backend``, ``mpp_policy``, ``sampler`` (read plan, tissue
        threshold), ``tissue_detector`` and ``overview_side`` are the settings
        checked, e.g. ``get_recipe("phikon-v2").build([path])``.
    decode_samples : int
        Tiles read at the level (and size) the pipeline reads, preferring
        qualifying tissue tiles. Default 8.
    recipe : str, optional
        Name written in the row's ``recipe`` field.
    timeout_s : float, optional
        Stop the check after this long (SIGALRM; main thread only) and report it as a problem.
    seed : int
        Seeds the choice of decode-test tiles.

    Returns
    -------
    dict
        Keys :data:`ROW_KEYS`; ``status`` is ``"ok"``, ``"warning"`` or
        ``"unusable"`` (any problem of severity ``"error"``).
    """
    started = time.perf_counter()
    row = empty_row(str(path), recipe)
    state: dict[str, Any] = {"handle": None}
    try:
        with _alarm(timeout_s):
            _check(row, str(path), recipe_pipeline, decode_samples, seed, state)
    except SlideCheckTimeout:
        add_problem(row, "validate", "error", "SlideCheckTimeout", f"the check did not finish within {timeout_s:g} s")
    except Exception as exc:  # a bug, or a library failure outside the staged checks: still a row
        add_problem(row, "validate", "error", type(exc).__name__, str(exc))
    finally:
        if state["handle"] is not None:
            with contextlib.suppress(Exception):
                state["handle"].close()
    return finish_row(row, started)


@contextlib.contextmanager
def _alarm(timeout_s: float | None) -> Iterator[None]:
    """Raise :class:`SlideCheckTimeout` after ``timeout_s`` (no-op off the main thread or without SIGALRM)."""
    if not timeout_s or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _fire(signum: int, frame: object) -> None:
        raise SlideCheckTimeout()

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, WsiStreamError) else f"{type(exc).__name__}: {exc}"


def _mpp_reason(raw: object) -> str:
    """Why the slide's µm/px cannot be used, quoting what the file states."""
    if raw is None or str(raw).strip() == "":
        return "µm/px missing: the file states no resolution"
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"µm/px implausible: the file states {raw!r}, which is not a number"
    hint = ""
    if math.isfinite(value) and abs(value - _TIFF_72DPI_MPP) < 0.01:
        hint = " (25.4 mm / 72 dpi: a generic TIFF writer's default, not a scan resolution)"
    return f"µm/px missing or implausible: the file states {value:.4g} µm/px{hint}"


def _check(
    row: dict[str, Any], path: str, pipe: PatchPipeline, decode_samples: int, seed: int, state: dict[str, Any]
) -> None:
    sampler = pipe.sampler
    row.update(
        patch_size=sampler.patch_size,
        target_mpp=getattr(sampler, "target_mpp", None),
        tissue_threshold=sampler.tissue_threshold,
    )
    row["backend"] = pipe.backend.name
    try:
        handle = state["handle"] = pipe.backend.open(path)
    except Exception as exc:
        add_problem(row, "open", "error", type(exc).__name__, f"cannot open: {_reason(exc)}")
        return
    row["opens"] = True
    props = pipe.mpp_policy.apply(handle.properties)
    _fill_properties(row, handle, props)
    plan = _check_plan(row, pipe, props, handle.raw_mpp)
    mask = _check_tissue(row, pipe, handle, props)
    tiles: list[tuple[int, int]] = []
    if mask is not None and plan is not None:
        if mask.is_empty:
            row["qualifying_tiles"] = 0
        else:
            tiles = _check_tiles(row, pipe, mask, plan, props, seed)
    if plan is not None:
        level, size = plan.level, plan.read_size
    else:  # the recipe cannot plan a read: still test that level 0 decodes
        level, size = 0, max(1, min(sampler.patch_size, props.level0_width, props.level0_height))
    _check_decode(row, pipe, path, state, props, level, size, tiles, decode_samples, seed)


def _fill_properties(row: dict[str, Any], handle: SlideHandle, props: SlideProperties) -> None:
    row.update(
        backend=props.backend,
        vendor=props.vendor,
        dimensions=[props.level0_width, props.level0_height],
        level_count=props.level_count,
        level_dimensions=[list(d) for d in props.level_dimensions],
        level_downsamples=[round(d, 4) for d in props.level_downsamples],
        mpp=props.mpp_level0,
        mpp_raw=None if handle.raw_mpp is None else str(handle.raw_mpp),
        mpp_source=props.mpp_source,
        objective_power=props.objective_power,
    )


def _check_plan(row: dict[str, Any], pipe: PatchPipeline, props: SlideProperties, raw_mpp: object) -> ReadPlan | None:
    sampler = pipe.sampler
    try:
        plan = sampler.plan(props)
    except MissingMppError as exc:
        row["reachable"] = False
        add_problem(
            row,
            "plan",
            "error",
            type(exc).__name__,
            f"{_mpp_reason(raw_mpp)}; target_mpp={getattr(sampler, 'target_mpp', None)}",
        )
        return None
    except Exception as exc:
        row["reachable"] = False
        add_problem(row, "plan", "error", type(exc).__name__, _reason(exc))
        return None
    how = f"{plan.read_size} px → {plan.patch_size} area" if plan.needs_resize else f"{plan.read_size} px direct"
    row.update(
        reachable=True,
        read_level=plan.level,
        read_size=plan.read_size,
        delivered_mpp=None if plan.mpp is None else round(plan.mpp, 5),
        resampling=f"level {plan.level}, {how}",
    )
    if props.mpp_level0 is None:
        add_problem(row, "plan", "warning", "MissingMpp", f"{_mpp_reason(raw_mpp)}; patches will carry mpp=None")
    elif props.mpp_source == "fallback":
        add_problem(
            row,
            "plan",
            "warning",
            "MppFallback",
            f"{_mpp_reason(raw_mpp)}; using mpp_fallback={props.mpp_level0} µm/px",
        )
    return plan


def _check_tissue(row: dict[str, Any], pipe: PatchPipeline, handle: SlideHandle, props: SlideProperties) -> Any:
    try:
        mask = pipe.tissue_mask(handle, props)
    except Exception as exc:
        add_problem(row, "tissue", "error", type(exc).__name__, f"tissue detection failed: {_reason(exc)}")
        return None
    row["tissue_fraction"] = round(mask.tissue_fraction, 4)
    if mask.is_empty:
        add_problem(
            row, "tissue", "error", "NoTissueError", f"{pipe.tissue_detector!r} found no tissue on the overview"
        )
    elif mask.tissue_fraction > WHOLESALE_TISSUE_FRACTION:
        add_problem(
            row,
            "tissue",
            "warning",
            "TissueEverywhere",
            f"the mask covers {mask.tissue_fraction:.0%} of the overview: the background may be taken for tissue "
            "(dark or fluorescent scan?); check with `wsistream preview`",
        )
    return mask


def _check_tiles(
    row: dict[str, Any], pipe: PatchPipeline, mask: TissueMask, plan: ReadPlan, props: SlideProperties, seed: int
) -> list[tuple[int, int]]:
    """Count qualifying non-overlapping tiles and try the sampler's first position, as the stream does."""
    sampler = pipe.sampler
    grid = GridSampler(  # only its tissue test is used: grid() takes the footprint from ``plan``
        patch_size=plan.patch_size,
        tissue_threshold=sampler.tissue_threshold,
        tissue_criterion=getattr(sampler, "tissue_criterion", "fraction"),
    )
    tiles = grid.grid(mask, plan, props)
    row["qualifying_tiles"] = len(tiles)
    try:
        first = next(iter(sampler.positions(mask, plan, props, np.random.default_rng(seed))), None)
        if first is None:
            add_problem(row, "sample", "error", "NoTissueError", "the sampler produced no position")
    except Exception as exc:
        add_problem(row, "sample", "error", type(exc).__name__, _reason(exc))
    return [(t.x0, t.y0) for t in tiles]


def _spread(props: SlideProperties, level: int, size: int, k: int) -> list[tuple[int, int]]:
    """Up to ``k`` read positions spread evenly over the level (level-0 corners)."""
    foot = size * props.level_downsamples[level]
    side = max(1, math.ceil(math.sqrt(k)))
    xs = np.linspace(0, max(0.0, props.level0_width - foot), side)
    ys = np.linspace(0, max(0.0, props.level0_height - foot), side)
    out = list(dict.fromkeys((int(x), int(y)) for y in ys for x in xs))
    return out[:k]


def _check_decode(
    row: dict[str, Any],
    pipe: PatchPipeline,
    path: str,
    state: dict[str, Any],
    props: SlideProperties,
    level: int,
    size: int,
    tiles: list[tuple[int, int]],
    k: int,
    seed: int,
) -> None:
    """Read ``k`` tiles of ``size`` px at ``level``; count decoded / failed and keep the first error."""
    if k <= 0:
        return
    rng = np.random.default_rng(seed)
    if len(tiles) > k:
        positions = [tiles[int(i)] for i in sorted(rng.choice(len(tiles), size=k, replace=False))]
    else:
        positions = list(dict.fromkeys(tiles + _spread(props, level, size, k)))[:k]
    ok = failed = 0
    first: str | None = None
    for x0, y0 in positions:
        try:
            state["handle"].read_region(x0, y0, level, (size, size))
            ok += 1
        except Exception as exc:
            failed += 1
            first = first or _reason(exc)
            # a library handle may stay in an error state after a failed read (OpenSlide
            # does; its backend now reopens itself): reopen, so each sample tests its own tiles
            with contextlib.suppress(Exception):
                state["handle"].close()
            state["handle"] = None
            try:
                state["handle"] = pipe.backend.open(path)
            except Exception:
                break
    row.update(
        decode_level=level,
        decode_size=size,
        decode_tested=ok + failed,
        decode_ok=ok,
        decode_failed=failed,
        decode_first_error=first,
    )
    if failed:
        add_problem(
            row,
            "decode",
            "error" if ok == 0 else "warning",
            "TileDecodeError",
            f"{failed} of {ok + failed} sample tiles ({size} px at level {level}) failed to decode; first: {first}",
        )
