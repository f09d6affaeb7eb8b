"""``wsistream validate``: which slides of a cohort will work, at what resolution, with how much tissue.

>>> from wsistream.qc.validate import validate_cohort  # doctest: +SKIP
>>> rows = validate_cohort(["cohort/*.svs"], recipe="phikon-v2", workers=4)
>>> [r["slide"] for r in rows if r["status"] == "unusable"]

Each slide is checked with the recipe's own backend, µm/px policy, read plan,
tissue detector and sampler (see :func:`~wsistream.qc._check.validate_slide`),
in a process pool where a crashing or hanging slide costs one row, never the
run (:mod:`wsistream.qc._pool`).  ``docs/preflight.md`` explains every column.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from wsistream.pipeline import PatchPipeline, resolve_slide_paths
from wsistream.qc._check import PROBLEM_KEYS, ROW_KEYS, validate_slide
from wsistream.qc._pool import ResultCallback, build_from_spec, check_one, run_pool
from wsistream.registry import BACKENDS, MissingDependencyError
from wsistream.storage.config import StorageConfig
from wsistream.storage.urls import url_backend_name

__all__ = [
    "PROBLEM_KEYS",
    "ROW_KEYS",
    "app",
    "format_plain",
    "resolve_inputs",
    "validate_cohort",
    "validate_slide",
]

#: Default per-slide time limit (seconds).
DEFAULT_TIMEOUT_S = 300.0


def resolve_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], storage: StorageConfig | None = None
) -> list[str]:
    """Expand each input (file, folder, glob, ``.txt``/``.lst`` list, or such a URL); concatenate, no duplicates.

    ``storage`` reaches URL prefixes (default: credentials and fsspec options from the environment).
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out: dict[str, None] = {}
    for item in items:
        for path in resolve_slide_paths(item, storage):
            out.setdefault(path, None)
    return list(out)


def default_workers(n_slides: int) -> int:
    """``min(4, CPUs, slides)`` processes."""
    return max(1, min(4, os.cpu_count() or 1, n_slides))


def validate_cohort(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    recipe: str | PatchPipeline = "phikon-v2",
    *,
    workers: int | None = None,
    decode_samples: int = 8,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    recipe_kwargs: dict[str, Any] | None = None,
    on_result: ResultCallback | None = None,
) -> list[dict[str, Any]]:
    """Check every slide against a recipe, in parallel; one row per slide, in input order.

    Parameters
    ----------
    paths
        Files, folders, globs or list files (see :func:`resolve_inputs`).
    recipe : str or PatchPipeline
        A recipe name (``wsistream recipes``) or a pipeline whose settings are checked.
    workers : int, optional
        Worker processes; default :func:`default_workers`; 0 checks in this process.
    decode_samples : int
        Tiles decoded per slide at the level the recipe reads.
    timeout_s : float, optional
        Per-slide time limit; a slide that exceeds it gets an ``unusable`` row.
    recipe_kwargs : dict, optional
        Passed to the recipe's ``build`` (``backend=``, ``mpp_fallback=``, ...).
    on_result : callable, optional
        ``on_result(done, total, row)`` as each row arrives (progress bars).

    Returns
    -------
    list of dict
        Rows with keys :data:`ROW_KEYS` (see ``docs/preflight.md``).

    Raises
    ------
    ValueError
        Unknown recipe, or no slide in ``paths``.
    MissingDependencyError
        The backend's library is not installed (one error with the install hint, before any slide).
    """
    spec: Any = recipe if isinstance(recipe, PatchPipeline) else (recipe, dict(recipe_kwargs or {}))
    pipeline, name = build_from_spec(spec)  # fails here, once, for an unknown recipe or bad kwargs
    pipeline.backend.require()  # and once for a reader library that is not installed (not a row per slide)
    slides = resolve_inputs(paths, getattr(pipeline.backend, "storage", None))
    if not slides:
        raise ValueError(f"no slide matched {paths!r}; pass files, folders, globs or a .txt list")
    n_workers = default_workers(len(slides)) if workers is None else workers
    if n_workers <= 0:
        rows = []
        for i, path in enumerate(slides):
            rows.append(check_one(path, pipeline, name, decode_samples, timeout_s))
            if on_result is not None:
                on_result(i + 1, len(slides), rows[-1])
        return rows
    return run_pool(
        slides,
        spec,
        recipe=name,
        workers=n_workers,
        decode_samples=decode_samples,
        timeout_s=timeout_s,
        on_result=on_result,
    )


# -- rendering -----------------------------------------------------------------------------
_COLUMNS = ("Slide", "Status", "Opens", "Vendor", "Dimensions", "Levels", "µm/px", "Read", "Tissue", "Tiles", "Decode")


def _g(value: float) -> str:
    return f"{value:.4g}"


def _raw(text: str) -> str:
    try:
        return _g(float(text))
    except ValueError:
        return text[:12]


def row_cells(row: dict[str, Any]) -> list[str]:
    """The table cells of one row (``_COLUMNS`` order)."""
    dims = "×".join(str(v) for v in row["dimensions"]) if row["dimensions"] else "—"
    levels = (
        f"{row['level_count']}: " + "/".join(_g(d) for d in row["level_downsamples"]) if row["level_count"] else "—"
    )
    if row["mpp"] is not None:
        mpp = f"{row['mpp']:.4f} ({row['mpp_source']}"
    elif row["opens"]:
        mpp = f"— (none{'; file: ' + _raw(row['mpp_raw']) if row['mpp_raw'] else ''}"
    else:
        mpp = "—"
    if row["opens"]:
        mpp += f", {_g(row['objective_power'])}x)" if row["objective_power"] else ")"
    if row["reachable"]:
        read = row["resampling"] + (f" = {row['delivered_mpp']:.4f} µm/px" if row["delivered_mpp"] else "")
    else:
        read = "✗ not reachable" if row["opens"] else "—"
    tissue = f"{row['tissue_fraction']:.1%}" if row["tissue_fraction"] is not None else "—"
    tiles = str(row["qualifying_tiles"]) if row["qualifying_tiles"] is not None else "—"
    decode = f"{row['decode_ok']}/{row['decode_tested']}" if row["decode_tested"] else "—"
    if row["decode_failed"]:
        decode += f" ({row['decode_failed']} failed)"
    name = os.path.basename(row["slide"]) or row["slide"]
    return [name, row["status"], "yes" if row["opens"] else "no", row["vendor"] or "—", dims, levels, mpp, read,
            tissue, tiles, decode]  # fmt: skip


def _problem_lines(row: dict[str, Any]) -> list[str]:
    return [
        f"{'✗' if p['severity'] == 'error' else '!'} [{p['stage']}] {p['error_type']}: {p['reason']}"
        for p in row["problems"]
    ]


def summary_line(rows: Sequence[dict[str, Any]]) -> str:
    """``"N slides: a ok, b with warnings, c unusable"``."""
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "warning", "unusable")}
    recipe = rows[0]["recipe"] if rows and rows[0]["recipe"] else "custom pipeline"
    return (
        f"{len(rows)} slides ({recipe}): {count['ok']} ok, {count['warning']} with warnings, "
        f"{count['unusable']} unusable"
    )


def format_plain(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table; each slide's problems on indented lines below it."""
    cells = [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in [list(_COLUMNS), *cells]) for i in range(len(_COLUMNS))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*_COLUMNS).rstrip()]
    for row, c in zip(rows, cells, strict=True):
        lines.append(fmt.format(*c).rstrip())
        lines += [f"    {line}" for line in _problem_lines(row)]
    lines.append(summary_line(rows))
    return "\n".join(lines)


def print_rich(rows: Sequence[dict[str, Any]], console: Any) -> None:
    """The table with rich (status coloured), then every problem of every slide in full."""
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for col in (*_COLUMNS, "Problems"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "warning": "yellow", "unusable": "red"}
    for row in rows:
        cells = [escape(c) for c in row_cells(row)]
        cells[1] = f"[{style[row['status']]}]{row['status']}[/]"
        errors = sum(p["severity"] == "error" for p in row["problems"])
        warnings = len(row["problems"]) - errors
        count = ", ".join(t for t in (f"{errors} ✗" if errors else "", f"{warnings} !" if warnings else "") if t)
        table.add_row(*cells, count or "—")
    console.print(table)
    for row in rows:
        for line in _problem_lines(row):
            colour = "red" if line.startswith("✗") else "yellow"
            console.print(f"[bold]{escape(os.path.basename(row['slide']))}[/] [{colour}]{escape(line)}[/]")
    console.print(summary_line(rows))


# -- command line --------------------------------------------------------------------------
app = typer.Typer(help="Pre-flight check of a cohort before training.", add_completion=False)


class _Progress:
    """A rich progress bar on a terminal; otherwise plain lines on stderr (about 100 at most)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from rich.console import Console

        self.total = total
        self.console = Console(stderr=True)
        self.bar: Any = None
        self.enabled = enabled
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("validate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.description}"), console=self.console, transient=True,
            )  # fmt: skip
            self.task = self.bar.add_task("", total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, done: int, total: int, row: dict[str, Any]) -> None:
        name = os.path.basename(row["slide"])
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=f"{name}: {row['status']}")
        elif self.enabled and (done == total or done % max(1, total // 100) == 0):
            print(f"validate [{done}/{total}] {name}: {row['status']}", file=sys.stderr, flush=True)


@app.command("validate")
def validate(
    slides: Annotated[list[str], typer.Argument(help="Slide files, folders, globs or a .txt list of paths.")],
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe whose settings are checked.")] = "phikon-v2",
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON list (stable keys).")] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Worker processes (default min(4, CPUs)); 0: in-process.")
    ] = None,
    decode_samples: Annotated[
        int, typer.Option("--decode-samples", help="Tiles decoded per slide at the level the recipe reads.")
    ] = 8,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-slide time limit, seconds.")] = DEFAULT_TIMEOUT_S,
    backend: Annotated[
        str | None, typer.Option("--backend", help=f"Slide reader: {BACKENDS.help()} (default: the recipe's).")
    ] = None,
    mpp_fallback: Annotated[
        float | None, typer.Option("--mpp-fallback", help="µm/px for slides whose file states none.")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress on stderr.")] = True,
) -> None:
    """Check every slide against a recipe: opens, µm/px, reachable resolution, tissue, tiles, decoding.

    Exit code 1 when any slide is unusable, 0 otherwise (2: bad arguments).
    """
    kwargs: dict[str, Any] = {}
    if backend is not None:
        try:
            kwargs["backend"] = BACKENDS.create(backend)
        except ValueError as exc:
            typer.echo(f"--backend: {exc}", err=True)
            raise typer.Exit(2) from None
    if mpp_fallback is not None:
        kwargs["mpp_fallback"] = mpp_fallback
    paths = resolve_inputs(slides)
    if not paths:
        typer.echo(f"no slide matched {' '.join(slides)}", err=True)
        raise typer.Exit(2)
    if backend is None and (reader := url_backend_name(paths)) is not None:
        kwargs["backend"] = BACKENDS.create(reader)
    try:
        with _Progress(len(paths), progress) as bar:
            rows = validate_cohort(
                paths, recipe, workers=workers, decode_samples=decode_samples, timeout_s=timeout,
                recipe_kwargs=kwargs, on_result=bar,
            )  # fmt: skip
    except (ValueError, MissingDependencyError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rich.console import Console

        console = Console()
        if console.is_terminal:
            print_rich(rows, console)
        else:
            typer.echo(format_plain(rows))
    if any(r["status"] == "unusable" for r in rows):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
