"""``wsistream extract`` / ``wsistream extract-bench``: tile features for a cohort, and a throughput report.

Exit codes: 0 every slide done or already finished; 1 at least one slide failed
(see the manifest); 2 the run could not start (bad weights, unwritable output,
no slides, bad option).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

from wsistream.errors import WsiStreamError
from wsistream.registry import BACKENDS, ENCODERS, MissingDependencyError
from wsistream.tissue.base import DEFAULT_OVERVIEW_SIDE

if TYPE_CHECKING:
    from wsistream.features.encoders import Encoder
    from wsistream.features.extract import ExtractionConfig, ResizeWhere
    from wsistream.features.manifest import CohortReport
    from wsistream.features.tiling import DeepZoomTiling, GridTiling
    from wsistream.pipeline.mpp import MppPolicy

app = typer.Typer(help="Tile feature extraction with pretrained encoders.", no_args_is_help=True, add_completion=False)


class Format(str, Enum):
    """Output formats."""

    histossl = "histossl"
    h5 = "h5"


class TilingName(str, Enum):
    """Tilings."""

    deepzoom = "deepzoom"
    grid = "grid"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _build(
    encoder: str,
    weights: Path,
    tiling: TilingName,
    tile_size: int,
    target_mpp: float,
    tissue_threshold: float,
    n_tiles: int | None,
    seed: int,
    batch_size: int,
    num_workers: int,
    device: str,
    tissue_geojson: Path | None = None,
    overview_side: int = DEFAULT_OVERVIEW_SIDE,
) -> tuple[Encoder, DeepZoomTiling | GridTiling, ExtractionConfig]:
    from wsistream.features.encoders import load_encoder
    from wsistream.features.extract import ExtractionConfig
    from wsistream.features.tiling import DeepZoomTiling, GridTiling

    try:
        config = ExtractionConfig(batch_size=batch_size, num_workers=num_workers, device=device)
        masks: dict[str, Any] = {}
        if tissue_geojson is not None:
            from wsistream.tissue.geojson import GeoJSONTissueDetector

            masks = {"tissue_detector": GeoJSONTissueDetector(str(tissue_geojson))}
        tiler: DeepZoomTiling | GridTiling
        if tiling is TilingName.deepzoom:
            tiler = DeepZoomTiling(
                tile_size=tile_size,
                target_mpp=target_mpp,
                tissue_threshold=tissue_threshold,
                n_tiles=n_tiles,
                seed=seed,
                overview_side=overview_side,
                **masks,
            )
        else:
            tiler = GridTiling(
                patch_size=tile_size,
                target_mpp=target_mpp,
                tissue_threshold=tissue_threshold,
                n_tiles=n_tiles,
                seed=seed,
                overview_side=overview_side,
                **masks,
            )
        enc = load_encoder(encoder, weights)
    except (ValueError, WsiStreamError, MissingDependencyError) as exc:
        raise _fail(str(exc)) from exc
    return enc, tiler, config


_Encoder = Annotated[str, typer.Option("--encoder", help=f"Registered encoder: {ENCODERS.help()}.")]
_Weights = Annotated[
    Path, typer.Option("--weights", help="Local weights: a Hugging Face folder, or an iBOT / DINOv2 / timm file.")
]
_Slides = Annotated[list[str], typer.Option("--slides", help="Folder, glob, .txt list or file; repeatable.")]
_Out = Annotated[Path, typer.Option("--out", help="Output root; files go to OUT/EXTRACTOR/COHORT/.")]
_Fmt = Annotated[Format, typer.Option("--format", help="histossl (features.npy) or h5.")]
_NTiles = Annotated[int | None, typer.Option("--n-tiles", help="Seeded random subset of N tiles per slide.")]
_Batch = Annotated[int, typer.Option("--batch-size", help="Tiles per forward pass.")]
_Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
_Workers = Annotated[int, typer.Option("--num-workers", help="DataLoader workers reading tiles.")]
_Tiling = Annotated[TilingName, typer.Option("--tiling", help="deepzoom (HistoSSLscaling) or grid (level 0).")]
_TileSize = Annotated[int, typer.Option("--tile-size", help="Tile side in pixels.")]
_Mpp = Annotated[float, typer.Option("--target-mpp", help="µm/px of the tiles (0.5 = 20x).")]
_Tissue = Annotated[float, typer.Option("--tissue-threshold", help="Minimum tissue fraction of a tile.")]
_Overview = Annotated[
    int,
    typer.Option("--overview-side", help="Longest side of the tissue-mask overview (2048 before 2026-12-04)."),
]


@app.command("extract")
def extract(
    encoder: _Encoder,
    weights: _Weights,
    slides: _Slides,
    out: _Out,
    fmt: _Fmt = Format.histossl,
    n_tiles: _NTiles = None,
    batch_size: _Batch = 64,
    device: _Device = "auto",
    num_workers: _Workers = 4,
    tiling: _Tiling = TilingName.deepzoom,
    tile_size: _TileSize = 224,
    target_mpp: _Mpp = 0.5,
    tissue_threshold: _Tissue = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --n-tiles subset.")] = 0,
    cohort: Annotated[str, typer.Option("--cohort", help="Cohort folder name.")] = "default",
    extractor_name: Annotated[str | None, typer.Option("--extractor-name", help="Default: the encoder.")] = None,
    mpp_overrides: Annotated[Path | None, typer.Option("--mpp-overrides", help="CSV: slide,mpp.")] = None,
    mpp_fallback: Annotated[float | None, typer.Option("--mpp-fallback", help="µm/px if none.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo finished slides too.")] = False,
    rank: Annotated[int | None, typer.Option("--rank", help="This worker's rank (default: torchrun/SLURM).")] = None,
    world_size: Annotated[int | None, typer.Option("--world-size", help="Number of workers (with --rank).")] = None,
    claim: Annotated[
        bool, typer.Option("--claim/--no-claim", help="Claim slides with lock files in the output (any workers).")
    ] = False,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between lock heartbeats.")] = 30.0,
    stale_after: Annotated[
        float, typer.Option("--stale-after", help="Heartbeat age (s) after which a lock's owner is presumed dead.")
    ] = 300.0,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help=f"Slide reader: {BACKENDS.help()} (default: openslide; tiffslide when a slide is a URL, as validate).",
        ),
    ] = None,
    tissue_geojson: Annotated[
        Path | None, typer.Option("--tissue-geojson", help="Folder of SLIDE.geojson tissue masks (QuPath).")
    ] = None,
    overview_side: _Overview = DEFAULT_OVERVIEW_SIDE,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Encode every tissue tile of every slide; finished slides are skipped, partial ones redone."""
    from wsistream.features.claims import ClaimConfig
    from wsistream.features.cohort import extract_cohort
    from wsistream.storage.urls import url_backend_name

    paths = _slide_paths(slides)
    policy = _mpp_policy(mpp_overrides, mpp_fallback)
    enc, tiler, config = _build(
        encoder,
        weights,
        tiling,
        tile_size,
        target_mpp,
        tissue_threshold,
        n_tiles,
        seed,
        batch_size,
        num_workers,
        device,
        tissue_geojson,
        overview_side,
    )
    try:
        claims = ClaimConfig(heartbeat, stale_after) if claim else None
        reader = BACKENDS.create(backend or url_backend_name(paths) or "openslide")
        report = extract_cohort(
            paths,
            out,
            enc,
            tiling=tiler,
            fmt=fmt.value,
            extractor_name=extractor_name,
            cohort=cohort,
            config=config,
            mpp_policy=policy,
            overwrite=overwrite,
            rank=rank,
            world_size=world_size,
            claim=claims,
            backend=reader,
            progress=progress,
        )
    except (ValueError, WsiStreamError, MissingDependencyError) as exc:
        raise _fail(str(exc)) from exc
    _exit_with(report)


def _slide_paths(slides: list[str]) -> list[str]:
    """Every slide the ``--slides`` specs name; none is exit code 2."""
    from wsistream.pipeline.paths import resolve_slide_paths

    paths = [p for spec in slides for p in resolve_slide_paths(spec)]
    if not paths:
        raise _fail(f"no slides match {slides}")
    return paths


def _mpp_policy(mpp_overrides: Path | None, mpp_fallback: float | None) -> MppPolicy | None:
    from wsistream.pipeline.mpp import MppPolicy

    try:
        return MppPolicy.build(mpp_overrides, mpp_fallback) if (mpp_overrides or mpp_fallback) else None
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc


def _exit_with(report: CohortReport) -> NoReturn:
    """Print the summary and each failed slide; exit 0 when every slide finished, else 1."""
    typer.echo(report.summary())
    for rec in report.failed:
        typer.secho(f"failed: {rec.slide}: {rec.error}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(code=0 if report.ok else 1)


@app.command("extract-bench")
def extract_bench(
    encoder: _Encoder,
    weights: _Weights,
    slide: Annotated[Path, typer.Option("--slide", help="One slide to time.")],
    max_tiles: Annotated[int, typer.Option("--max-tiles", help="Tiles timed (the first ones in grid order).")] = 256,
    batch_size: _Batch = 64,
    device: _Device = "auto",
    num_workers: _Workers = 4,
    tiling: _Tiling = TilingName.deepzoom,
    tile_size: _TileSize = 224,
    target_mpp: _Mpp = 0.5,
    tissue_threshold: _Tissue = 0.5,
    resize: Annotated[str, typer.Option("--resize", help="auto, device or worker (DeepZoom thumbnail).")] = "auto",
    scaling: Annotated[bool, typer.Option("--scaling/--no-scaling", help="Also time 1 and 2 workers.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    compare: Annotated[Path | None, typer.Option("--compare", help="An earlier --json: rows now/then.")] = None,
) -> None:
    """Decode ceiling, reader alone, loader, model alone and full path on the same tiles; names the bottleneck."""
    import dataclasses
    import json

    from wsistream.bench.run import format_table
    from wsistream.features.bench import benchmark_throughput

    enc, tiler, config = _build(
        encoder,
        weights,
        tiling,
        tile_size,
        target_mpp,
        tissue_threshold,
        None,
        0,
        batch_size,
        num_workers,
        device,
    )
    try:
        baseline = json.loads(compare.read_text()) if compare is not None else None
        config = dataclasses.replace(config, resize=cast("ResizeWhere", resize))  # checked in __post_init__
        report = benchmark_throughput(slide, enc, tiling=tiler, config=config, max_tiles=max_tiles, scaling=scaling)
    except (OSError, ValueError, WsiStreamError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(str(report))
    result = {"slide": str(slide), **report.to_json()}
    if baseline is not None:
        typer.echo(format_table(result, baseline))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))


@app.command("extract-tiles")
def extract_tiles(
    encoder: _Encoder,
    weights: _Weights,
    tiles: Annotated[Path, typer.Option("--tiles", help="Tile dataset folder: TILES/CLASS/IMAGE (NCT-CRC).")],
    out: _Out,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset folder name (default: TILES).")] = None,
    batch_size: _Batch = 64,
    device: _Device = "auto",
    num_workers: _Workers = 4,
    tile_size: _TileSize = 224,
    extractor_name: Annotated[str | None, typer.Option("--extractor-name", help="Default: the encoder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo a finished dataset.")] = False,
) -> None:
    """Encode a folder of tile images into tile_features.npy / tile_ids.npy (HistoSSLscaling layout)."""
    from wsistream.features.extract import extract_tile_dataset
    from wsistream.features.manifest import ensure_writable

    target = out / (extractor_name or encoder) / (dataset or tiles.name)
    if not overwrite and (target / "tile_features.npy").is_file():
        typer.echo(f"already finished: {target / 'tile_features.npy'} (pass --overwrite to redo)")
        raise typer.Exit(code=0)
    enc, _, config = _build(
        encoder, weights, TilingName.grid, tile_size, 0.5, 0.5, None, 0, batch_size, num_workers, device
    )
    try:
        ensure_writable(target)
        path = extract_tile_dataset(tiles, target, enc, config, tile_size=tile_size)
    except (OSError, ValueError, WsiStreamError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"wrote {path}")
