"""``wsistream tissue``: write each slide's tissue mask as GeoJSON (level-0 pixels) for QuPath and other tools.

Exit codes: 0 every slide written; 1 at least one slide failed (listed); 2 bad option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsistream.registry import TISSUE_DETECTORS
from wsistream.tissue.base import DEFAULT_OVERVIEW_SIDE

app = typer.Typer(help="Tissue masks.", no_args_is_help=True, add_completion=False)


@app.command("tissue")
def tissue(
    slides: Annotated[list[str], typer.Argument(help="Slides: files, folders, globs or .txt lists.")],
    out: Annotated[Path, typer.Option("--out", help="Folder; one SLIDE_NAME.geojson per slide.")],
    detector: Annotated[str, typer.Option("--detector", help=f"Tissue detector: {TISSUE_DETECTORS.help()}.")] = "otsu",
    overview_side: Annotated[
        int, typer.Option("--overview-side", help="Longest side of the mask grid.")
    ] = DEFAULT_OVERVIEW_SIDE,
) -> None:
    """Detect tissue and write it as GeoJSON polygons (holes as interior rings), QuPath-importable."""
    from wsistream.backends import OpenSlideBackend
    from wsistream.errors import WsiStreamError
    from wsistream.pipeline.paths import resolve_slide_paths
    from wsistream.tissue.geojson import write_geojson

    try:
        det = TISSUE_DETECTORS.create(detector)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--detector") from exc
    paths = [p for spec in slides for p in resolve_slide_paths(spec)]
    if not paths:
        typer.secho(f"error: no slides match {slides}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    failed = 0
    for slide in paths:
        try:
            with OpenSlideBackend().open(slide) as handle:
                mask = det.detect_slide(handle, handle.properties, overview_side)
            target = write_geojson(mask, out / f"{Path(slide).name}.geojson")
        except (OSError, WsiStreamError) as exc:
            failed += 1
            typer.secho(f"failed: {slide}: {exc}", err=True, fg=typer.colors.YELLOW)
            continue
        typer.echo(f"{target}: tissue fraction {mask.tissue_fraction:.3f}")
    raise typer.Exit(code=1 if failed else 0)
