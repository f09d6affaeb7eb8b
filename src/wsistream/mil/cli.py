"""Command line: ``mil-cv`` (slide-level nested CV) and ``linear-eval`` (tile-level linear evaluation).

``app`` is a ``typer.Typer`` meant to be mounted into the main ``wsistream``
CLI; ``python -m wsistream.mil.cli`` runs it standalone. Heavy imports (torch,
scikit-learn) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wsistream.mil.cv_run import CohortColumns, CvRun, console, print_cv_result
from wsistream.registry import MIL_MODELS

if TYPE_CHECKING:  # the commands import torch and scikit-learn lazily, so --help stays fast
    from wsistream.eval.linear import LinearEvalResult

app = typer.Typer(help="Slide-level MIL benchmark and tile-level linear evaluation (HistoSSLscaling protocol).")

_TASKS = ("binary", "multiclass", "survival")


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{what}: pass comma-separated numbers, e.g. 1e-3,1e-4") from exc
    if not vals:
        raise typer.BadParameter(f"{what}: pass at least one value")
    return vals


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter(f"--device {device}: no CUDA device is available; pass --device cpu")
    return device


@app.command("mil-cv")
def mil_cv(
    features: Annotated[
        Path, typer.Option("--features", help="Folder of slide features ({slide}/features.npy or .h5).")
    ],
    labels: Annotated[Path, typer.Option("--labels", help="CSV with slide_id, patient_id and label columns.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for JSON, CSV and PNG.")],
    task: Annotated[str, typer.Option("--task", help="binary | multiclass | survival.")] = "binary",
    model: Annotated[str, typer.Option("--model", help=f"MIL model: {MIL_MODELS.help()}.")] = "abmil",
    outer_folds: Annotated[int, typer.Option("--outer-folds", help="Outer folds.")] = 5,
    inner_folds: Annotated[int, typer.Option("--inner-folds", help="Inner folds.")] = 5,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per inner run (refit upper bound).")] = 50,
    n_tiles: Annotated[int, typer.Option("--n-tiles", help="Tiles per slide per step; 0 = all tiles.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slides per step; 0 = reference (16, HIPT 1).")] = 0,
    lr: Annotated[str, typer.Option("--lr", help="Learning-rate grid, comma-separated.")] = "1e-3,1e-4",
    wd: Annotated[str, typer.Option("--wd", help="Weight-decay grid, comma-separated.")] = "0,1e-4",
    seed: Annotated[int, typer.Option("--seed", help="Seed of training: initialisation, batches, tiles.")] = 0,
    split_seed: Annotated[
        int, typer.Option("--split-seed", help="Outer-split random_state (reference repeat index).")
    ] = 0,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Repeated CV on split seeds split-seed, split-seed+1, ...")
    ] = 1,
    protocol: Annotated[
        str, typer.Option("--protocol", help="histossl (first n-tiles rows, reference) | random-tiles.")
    ] = "histossl",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto.")] = "auto",
    corrected: Annotated[bool, typer.Option("--corrected", help="Corrected DSMIL/TransMIL/HIPT variants.")] = False,
    epoch_selection: Annotated[str, typer.Option("--epoch-selection", help="reference | corrected.")] = "reference",
    tile_sampling: Annotated[str, typer.Option("--tile-sampling", help="first | random; '' = the protocol's.")] = "",
    bad_slides: Annotated[
        str, typer.Option("--bad-slides", help="error (refuse before training) | exclude (leave out, recorded).")
    ] = "error",
    drop_nan_tiles: Annotated[
        bool, typer.Option("--drop-nan-tiles", help="Drop NaN/Inf tiles instead of treating the slide as bad.")
    ] = False,
    min_tiles: Annotated[int, typer.Option("--min-tiles", help="Slides with fewer usable tiles are bad.")] = 1,
    memory_gb: Annotated[
        float, typer.Option("--memory-gb", help="Hold features in RAM up to this size; beyond, read per batch.")
    ] = 1.0,
    label_column: Annotated[
        str, typer.Option("--label-column", help="Label (or signed survival time) column.")
    ] = "label",
    patient_column: Annotated[
        str, typer.Option("--patient-column", help="Patient column; '' = per slide.")
    ] = "patient_id",
    time_column: Annotated[str, typer.Option("--time-column", help="Survival time column (with --event-column).")] = "",
    event_column: Annotated[str, typer.Option("--event-column", help="Survival event column, 1 = event.")] = "",
    model_arg: Annotated[
        list[str] | None,
        typer.Option("--model-arg", help="Model constructor override KEY=VALUE (repeatable), e.g. attention=nystrom."),
    ] = None,
) -> None:
    """Nested cross-validation of a MIL model on slide features; writes JSON, CSV and a PNG report."""
    if task not in _TASKS:
        raise typer.BadParameter(f"--task {task!r}: pass one of {', '.join(_TASKS)}")
    try:
        model = MIL_MODELS.canonical(model)
    except ValueError as exc:
        raise typer.BadParameter(f"--model: {exc}") from exc
    from wsistream.mil.cv import NestedCVConfig
    from wsistream.mil.screen import CohortOptions

    try:
        cfg = NestedCVConfig(
            protocol=protocol,
            outer_folds=outer_folds,
            inner_folds=inner_folds,
            learning_rates=_floats(lr, "--lr"),
            weight_decays=_floats(wd, "--wd"),
            epochs=epochs,
            batch_size=batch_size or None,
            n_tiles=n_tiles or None,
            tile_sampling=tile_sampling or None,
            epoch_selection=epoch_selection,
            seed=seed,
            split_seed=split_seed,
            repeats=repeats,
            device=_resolve_device(device),
        )
        options = CohortOptions(
            n_tiles=cfg.n_tiles,
            first_rows_only=cfg.sampling == "first" and cfg.n_tiles is not None,
            bad_slides=bad_slides,
            drop_nan_tiles=drop_nan_tiles,
            min_tiles=min_tiles,
            memory_gb=memory_gb,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run = CvRun(
        features=features,
        labels=labels,
        task=task,
        model=model,
        columns=CohortColumns(label_column, patient_column, time_column, event_column),
        corrected=corrected,
        model_arg=tuple(model_arg or ()),
        cfg=cfg,
        options=options,
    )
    print_cv_result(run.execute(), out, task)


def _ints(text: str, what: str) -> tuple[int, ...]:
    vals = _floats(text, what)
    if any(v != int(v) for v in vals):
        raise typer.BadParameter(f"{what}: pass comma-separated integers, e.g. 0,3,4")
    return tuple(int(v) for v in vals)


def _tile_datasets(
    train: Path,
    test: Path | None,
    labels: str,
    test_labels: str,
    exclude_class: str,
    preset: str,
    metadata: str,
    centers: tuple[tuple[int, ...], tuple[int, ...]],
) -> tuple[Any, Any]:
    """Train and test tile datasets, through a preset (``wsistream.eval.presets``) or from the flags."""
    from wsistream.eval.presets import camelyon17_wilds_datasets, check_preset_classes, get_preset
    from wsistream.eval.tiles import load_tile_dataset

    spec = get_preset(preset) if preset else None
    if spec is not None and spec.name == "camelyon17-wilds":
        if not metadata:
            raise typer.BadParameter("--preset camelyon17-wilds needs --metadata (the WILDS metadata.csv)")
        tr, te = camelyon17_wilds_datasets(
            train, metadata, train_centers=centers[0], test_centers=centers[1], test_features_dir=test
        )
    else:
        if test is None:
            raise typer.BadParameter("--test: pass the test feature folder")
        excluded = exclude_class or (spec.exclude_class if spec else None) or None
        tr = load_tile_dataset(train, labels or None, exclude_class=excluded)
        te = load_tile_dataset(
            test, (test_labels or labels) or None, class_names=tr.class_names, exclude_class=excluded
        )
    if spec is not None:
        check_preset_classes(spec, tr, str(train))
    return tr, te


@app.command("linear-eval")
def linear_eval(
    train: Annotated[Path, typer.Option("--train", help="Folder with tile_features.npy and tile_ids.npy (training).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    test: Annotated[
        Path | None, typer.Option("--test", help="Same for the test set (camelyon17-wilds: default --train).")
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help="nct-crc (BACK removed) | camelyon17-wilds (split by center); '' = none.")
    ] = "",
    metadata: Annotated[
        str, typer.Option("--metadata", help="camelyon17-wilds: the WILDS metadata.csv (labels and centers).")
    ] = "",
    train_centers: Annotated[str, typer.Option("--train-centers", help="camelyon17-wilds train centers.")] = "0,3,4",
    test_centers: Annotated[
        str, typer.Option("--test-centers", help="camelyon17-wilds test centers (1 = VALID, 2 = TEST).")
    ] = "1",
    labels: Annotated[
        str, typer.Option("--labels", help="CSV tile_id,label or class-folder root; '' = from tile ids.")
    ] = "",
    test_labels: Annotated[
        str, typer.Option("--test-labels", help="Labels of the test set if different from --labels.")
    ] = "",
    exclude_class: Annotated[str, typer.Option("--exclude-class", help="Class to drop (NCT-CRC: BACK).")] = "",
    fractions: Annotated[
        str, typer.Option("--fractions", help="Training fractions.")
    ] = "0.001,0.005,0.01,0.05,0.1,0.5,1.0",
    repeats: Annotated[int, typer.Option("--repeats", help="Training draws per fraction.")] = 1,
    ensembling: Annotated[int, typer.Option("--ensembling", help="SGD seeds averaged per draw.")] = 30,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples (0 = no CI).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of draws and bootstrap.")] = 0,
) -> None:
    """Linear evaluation (StandardScaler + SGD logistic regression) of tile features; writes CSV/JSON/PNG."""
    from tqdm import tqdm

    from wsistream.errors import WsiStreamError
    from wsistream.eval.linear import LinearEvalConfig, linear_evaluation
    from wsistream.eval.report import write_linear_report

    try:
        centers = (_ints(train_centers, "--train-centers"), _ints(test_centers, "--test-centers"))
        cfg = LinearEvalConfig(
            fractions=_floats(fractions, "--fractions"),
            n_repeats=repeats,
            n_ensembling=ensembling,
            n_resamples=resamples,
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        tr, te = _tile_datasets(train, test, labels, test_labels, exclude_class, preset, metadata, centers)
        for name, ds in (("train", tr), ("test", te)):
            console.print(f"{name}: {len(ds.labels)} tiles, d={ds.features.shape[1]}, classes={list(ds.class_names)}")
            for reason, count in ds.dropped.items():
                console.print(f"  [yellow]dropped {count} tiles: {reason}[/yellow]")
        with tqdm(total=len(cfg.fractions) * cfg.n_repeats, desc="linear eval", unit="draw") as bar:
            result = linear_evaluation(tr, te, cfg, progress=bar.update)
    except (WsiStreamError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    extra = {"dropped": {"train": tr.dropped, "test": te.dropped}, "preset": preset or None}
    if preset == "camelyon17-wilds":
        extra["centers"] = {"train": list(centers[0]), "test": list(centers[1])}
    _print_linear_result(result, write_linear_report(result, out, extra=extra))


def _print_linear_result(result: LinearEvalResult, paths: dict[str, Path]) -> None:
    table = Table(title="linear evaluation (test set)")
    for col in ("fraction", "n ok", "AUC", "acc", "F1"):
        table.add_column(col)
    for s in result.summary():
        table.add_row(
            f"{s['fraction']:g}",
            str(s["n_ok"]),
            f"{s['auc_mean']:.3f}",
            f"{s['acc_mean']:.3f}",
            f"{s['f1_mean']:.3f}",
        )
    Console().print(table)
    for r in result.rows:
        if r["status"] != "ok":
            console.print(f"  [yellow]fraction {r['fraction']:g} repeat {r['repeat']}: {r['status']}[/yellow]")
    for key, p in paths.items():
        console.print(f"  {key}: {p}")


if __name__ == "__main__":
    app()
