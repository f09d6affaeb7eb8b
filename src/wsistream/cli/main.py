"""The ``wsistream`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Stream exact-resolution patches from whole-slide images.",
    no_args_is_help=True,
    add_completion=False,
)
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _print_version(value: bool) -> None:
    if value:
        from wsistream import __version__

        typer.echo(f"wsistream {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    log_level: str = typer.Option("warning", "--log-level", help=f"Logging level: {', '.join(_LOG_LEVELS)}."),
) -> None:
    """Stream exact-resolution patches from whole-slide images."""
    import logging

    if log_level.lower() not in _LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r}; pass one of {', '.join(_LOG_LEVELS)}", param_hint="--log-level")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("wsistream").setLevel(log_level.upper())


recipes_app = typer.Typer(help="Paper recipes and their deviation tables.", invoke_without_command=True)
app.add_typer(recipes_app, name="recipes")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Output folder (slides are cached there)."),
    recipe: str = typer.Option("phikon-v2", help="Recipe to stream."),
    seconds: float = typer.Option(5.0, help="How long to stream."),
    views: bool = typer.Option(True, help="Include the recipe's multi-crop views."),
) -> None:
    """Write synthetic slides, stream a recipe, print patches/s and write a preview PNG."""
    from wsistream.cli.demo import run_demo

    stats = run_demo(out, recipe=recipe, seconds=seconds, views=views)
    typer.echo(f"slides: {stats['slides']} (written/reused in {stats['write_slides_s']:.1f} s)")
    typer.echo(f"time to first patch: {stats['time_to_first_patch_s']:.2f} s")
    typer.echo(
        f"streamed {stats['patches']} patches at {stats['patches_per_s']:.1f} patches/s "
        f"(single process, recipe {recipe}, views={views}); delivered {stats['first_mpp']:.4f} µm/px"
    )
    typer.echo(f"failures recorded: {stats['failures']}")
    typer.echo(f"preview: {stats['preview']}")


@recipes_app.callback()
def recipes_list(ctx: typer.Context) -> None:
    """List the recipes."""
    if ctx.invoked_subcommand is None:
        from wsistream.recipes import list_recipes

        for r in list_recipes():
            exact = sum(row.match == "Exact" for row in r.rows)
            typer.echo(f"{r.name:12s} {exact}/{len(r.rows)} rows exact  {r.citation}")


@recipes_app.command("show")
def recipes_show(name: str) -> None:
    """Print a recipe's deviation table."""
    from wsistream.recipes import get_recipe

    try:
        recipe = get_recipe(name)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{recipe.name}: {recipe.citation}\n{recipe.summary}\n")
    typer.echo(recipe.table_markdown())


@recipes_app.command("docs")
def recipes_docs(out: Path = typer.Option(None, help="Write here instead of stdout.")) -> None:
    """Generate docs/recipes.md from the recipe tables."""
    from wsistream.recipes import recipes_markdown

    text = recipes_markdown()
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")


@app.command()
def preview(
    slides: list[str] = typer.Argument(help="Slide files or s3:// gs:// https:// URLs."),
    recipe: str = typer.Option("phikon-v2", help="Recipe whose stream is previewed."),
    out: Path = typer.Option(Path("preview.png"), "-o", "--out", help="PNG to write."),
    n_patches: int = typer.Option(12, help="Patches to draw (per slide with --sheet)."),
    views: bool = typer.Option(False, help="Show each patch's views."),
    sheet: bool = typer.Option(False, help="Cohort contact sheet: one row per slide."),
    geojson: Path = typer.Option(
        None, help="Folder: also write each slide's tissue mask (the one shown) as SLIDE_NAME.geojson."
    ),
) -> None:
    """Overview + tissue mask + sampled patch boxes + the patches, as the recipe streams them."""
    from wsistream.qc import preview_sheet, preview_slide
    from wsistream.recipes import build_pipeline
    from wsistream.registry import BACKENDS
    from wsistream.storage.urls import url_backend_name

    kwargs: dict[str, Any] = {"views": views} if recipe != "phikon" else {}
    if (reader := url_backend_name(slides)) is not None:
        kwargs["backend"] = BACKENDS.create(reader)
    pipeline = build_pipeline(recipe, list(slides), **kwargs)
    if sheet or len(slides) > 1:
        png, status = preview_sheet(
            pipeline,
            [str(s) for s in slides],
            out,
            n_patches=min(n_patches, 6),
            title=f"recipe {recipe}",
            geojson_dir=geojson,
        )
        bad = {s: r for s, r in status.items() if r != "ok"}
        typer.echo(f"{png}: {len(status) - len(bad)}/{len(status)} slides previewed")
        for reason in bad.values():
            typer.echo(f"  {reason}", err=True)
        raise typer.Exit(1 if bad else 0)
    try:
        png, results = preview_slide(
            pipeline, slides[0], out, n_patches=n_patches, title=f"recipe {recipe}", geojson_dir=geojson
        )
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{png}: {len(results)} patches at {results[0].coordinate.mpp} µm/px")


@app.command()
def bench(
    cache_dir: Path = typer.Option(
        None, help="Where the benchmark slides are cached (default ~/.cache/wsistream/bench)."
    ),
    out: Path = typer.Option(Path("bench_out/bench.json"), help="JSON results."),
    quick: bool = typer.Option(False, help="Small slides (seconds, for smoke tests); numbers are not representative."),
    loader: bool = typer.Option(True, help="Include the DataLoader 1 vs 2 workers rows."),
    repeats: int = typer.Option(
        None, help="Interleaved runs of the 20x-pool rows, the best kept (default 3; 1 with --quick)."
    ),
    compare: Path = typer.Option(None, help="An earlier run's JSON: print its values and now/then per row."),
    remote: bool = typer.Option(
        False, "--remote", help="The 20x pool from a loopback S3 server (needs moto[server]) beside local files."
    ),
    latency_ms: float = typer.Option(20.0, help="With --remote: latency added to every request."),
) -> None:
    """Decode ceiling, raw OpenSlide loop and our pipeline, side by side on the same slides."""
    import json

    if remote:
        from wsistream.bench.remote import run_remote_bench

        rows = run_remote_bench(cache_dir, quick=quick, latency_s=latency_ms / 1000, loader=loader)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"remote": True, "latency_ms": latency_ms, "quick": quick, "rows": rows}, indent=2))
        for row in rows:
            extra = {k: v for k, v in row.items() if k not in ("workload", "row", "value", "unit")}
            typer.echo(f"{row['row']:42s} {row['value']:>12} {row['unit']:10s} {extra or ''}")
        typer.echo(f"\nJSON: {out}")
        return

    from wsistream.bench import format_table, run_bench

    baseline = None
    if compare is not None:
        try:
            baseline = json.loads(compare.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"--compare {compare}: not a readable bench JSON ({exc})") from exc
    result = run_bench(cache_dir, out, quick=quick, loader=loader, repeats=repeats)
    typer.echo(format_table(result, baseline))
    typer.echo(f"\nJSON: {out}")


def _mount(module: str) -> None:
    """Add the commands of a stage's own Typer app (features, mil, slide_ssl) at top level."""
    import importlib

    sub = importlib.import_module(module).app
    app.registered_commands.extend(sub.registered_commands)


_STAGES = (
    "wsistream.qc.validate",
    "wsistream.tissue.cli",
    "wsistream.features.cli",
    "wsistream.mil.cli",
    "wsistream.slide_ssl.cli",
)
for _module in _STAGES:
    try:
        _mount(_module)
    except ModuleNotFoundError as _exc:  # a stage whose extra (torch, transformers...) is not installed
        if _exc.name == _module or (_exc.name and not _exc.name.startswith("wsistream")):
            continue
        raise

if __name__ == "__main__":
    app()
