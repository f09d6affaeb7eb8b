"""``slide-pretrain`` and ``slide-probe`` commands (a ``typer.Typer`` the main ``wsistream`` CLI mounts)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

app = typer.Typer(help="Slide-level self-supervised pretraining on tile-embedding sequences.", no_args_is_help=True)


def _ints(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{name}={text!r}; pass comma-separated integers, e.g. 1024,2048") from exc


def _set(obj: Any, **values: Any) -> Any:
    values = {k: v for k, v in values.items() if v is not None}
    return dataclasses.replace(obj, **values) if values else obj


@app.command("slide-pretrain")
def slide_pretrain(
    features: Path = typer.Option(
        ..., "--features", help="Folder of tile features (.h5 with coords or HistoSSL features.npy)."
    ),
    method: str = typer.Option("dino", "--method", help="dino | dinov2 | dinov2-grid (reference presets)."),
    out: Path = typer.Option(..., "--out", help="Output folder: checkpoint.pt, loss.csv, loss.png, slide_encoder.pt."),
    steps: int = typer.Option(1000, help="Optimizer steps."),
    batch_size: int = typer.Option(1, help="Slides per micro-batch and process."),
    grad_accum: int | None = typer.Option(None, help="Micro-batches per optimizer step [preset: dino 1, dinov2 1, dinov2-grid 32]."),
    dim: int | None = typer.Option(None, help="Encoder width D [768]."),
    depth: int | None = typer.Option(None, help="Encoder layers [12]."),
    heads: int | None = typer.Option(None, help="Attention heads [16]."),
    ffn_dim: int | None = typer.Option(None, help="FFN width [3072]."),
    segment_lengths: str | None = typer.Option(
        None, help="Dilated-attention segment lengths, e.g. 1024,2048,4096,8192,16384."
    ),
    dilations: str | None = typer.Option(None, help="Dilation ratio per segment length, e.g. 1,2,4,8,16."),
    checkpoint_layers: bool = typer.Option(
        False, "--checkpoint-layers/--no-checkpoint-layers", help="Recompute layer activations in backward."
    ),
    out_dim: int | None = typer.Option(None, help="DINO head prototypes [8192]."),
    ibot_out_dim: int | None = typer.Option(None, help="Separate iBOT head prototypes [dinov2-grid: 65536]."),
    base_lr: float | None = typer.Option(None, help="Base learning rate before batch scaling [preset]."),
    n_local: int | None = typer.Option(None, help="Local crops per slide [8]."),
    max_tiles: int | None = typer.Option(None, help="Global-crop token cap [8192]."),
    min_tiles: int | None = typer.Option(None, help="Slides with fewer usable tiles are skipped [16]."),
    koleo_weight: float | None = typer.Option(None, help="KoLeo weight (DINOv2 methods) [0]."),
    tile_size: float | None = typer.Option(
        None, help="Level-0 tile step in px for .h5 coords (default: from attributes)."
    ),
    seed: int = typer.Option(0, help="Seed of model init, slide order, crops and masks."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    precision: str = typer.Option("auto", help="auto (bf16 on GPU) | fp32 | bf16."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/checkpoint.pt when present."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Pretrain a LongNet slide encoder with DINO / DINOv2 on coordinate crops (torchrun-aware)."""
    from wsistream.slide_ssl.config import method_preset
    from wsistream.slide_ssl.data import SlideCohort
    from wsistream.slide_ssl.train import pretrain

    try:
        cfg = method_preset(
            method,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            checkpoint_every=checkpoint_every,
            precision=precision,
        )
        cfg = dataclasses.replace(
            cfg,
            crops=_set(cfg.crops, n_local=n_local, max_tiles=max_tiles, min_tiles=min_tiles),
            objective=_set(cfg.objective, out_dim=out_dim, ibot_out_dim=ibot_out_dim, koleo_weight=koleo_weight),
            optim=_set(cfg.optim, grad_accum=grad_accum, base_lr=base_lr),
        )
        cohort = SlideCohort.scan(features, min_tiles=cfg.crops.min_tiles, tile_size=tile_size)
        encoder = _set(
            cfg.encoder,
            in_dim=cohort.dim,
            dim=dim,
            depth=depth,
            heads=heads,
            ffn_dim=ffn_dim,
            segment_lengths=_ints(segment_lengths, "segment_lengths"),
            dilations=_ints(dilations, "dilations"),
            checkpoint_layers=checkpoint_layers or None,
        )
        cfg = dataclasses.replace(cfg, encoder=encoder)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = pretrain(cohort, out, cfg, resume=resume, progress=progress, tile_size=tile_size)
    skipped = sum(1 for s in result.skips if s.action == "skipped")
    last = result.history[-1] if result.history else {}
    typer.echo(f"{len(cohort)} slides used, {skipped} skipped (see {out / 'skipped.jsonl'})")
    typer.echo(f"step {last.get('step', 0)}/{cfg.steps}, loss {last.get('loss', float('nan')):.4f}; wrote {out}")


def _read_labels(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "slide_id" not in rows[0]:
        raise typer.BadParameter(f"{path}: needs a header with a 'slide_id' column and one column per label")
    names = [c for c in rows[0] if c != "slide_id"]
    if not names:
        raise typer.BadParameter(f"{path}: no label columns besides 'slide_id'")
    table = {}
    for r in rows:
        table[r["slide_id"]] = [float(r[n]) if r[n] not in ("", None) else float("nan") for n in names]
    return names, table


@app.command("slide-probe")
def slide_probe(
    encoder: Path = typer.Option(..., "--encoder", help="slide_encoder.pt or checkpoint.pt from slide-pretrain."),
    features: Path = typer.Option(..., "--features", help="Folder of tile features of the labelled slides."),
    labels: Path = typer.Option(..., "--labels", help="CSV: slide_id plus one 0/1 column per label (blank = missing)."),
    out: Path = typer.Option(..., "--out", help="Output folder for probe.json and probe_scores.csv."),
    repeats: int = typer.Option(10, help="Random 70/10/20 splits (with --cv repeated)."),
    cv: str = typer.Option("repeated", help="'repeated' random splits, or 'kfold': every slide tested once."),
    folds: int = typer.Option(10, help="Folds with --cv kfold (the seed's LUAD task: 10)."),
    layers: str = typer.Option("-1", help="Encoder layers whose CLS to concatenate, e.g. -4,-3,-2,-1."),
    concat_mean: bool = typer.Option(True, "--concat-mean/--no-concat-mean", help="Append the mean input embedding."),
    random_baseline: bool = typer.Option(
        True, "--random-baseline/--no-random-baseline", help="Also probe a random-init encoder."
    ),
    abmil: bool = typer.Option(
        True, "--abmil/--no-abmil", help="ABMIL of wsistream.mil on the same splits, if installed."
    ),
    abmil_epochs: int = typer.Option(20, help="ABMIL training epochs."),
    max_tiles: int = typer.Option(8192, help="Tiles per slide for embedding (random subset beyond)."),
    seed: int = typer.Option(0, help="Seed of the splits and subsets."),
) -> None:
    """Linear probe (AUROC / AUPRC mean ± std over repeated splits or k folds) of slide embeddings."""
    import torch

    from wsistream.slide_ssl.data import SlideCohort
    from wsistream.slide_ssl.encoder import SlideEncoder
    from wsistream.slide_ssl.probe import (
        abmil_probe,
        embed_slides,
        kfold_splits,
        linear_probe,
        load_encoder,
        repeated_splits,
    )

    if cv not in ("repeated", "kfold"):
        raise typer.BadParameter(f"--cv must be 'repeated' or 'kfold', got {cv!r}")

    names, table = _read_labels(labels)
    enc = load_encoder(encoder)
    cohort = SlideCohort.scan(features, min_tiles=1, input_dim=enc.cfg.in_dim)
    keep = [i for i, s in enumerate(cohort.slide_ids) if s in table]
    if len(keep) < 3:
        raise typer.BadParameter(f"only {len(keep)} slides of {features} have labels in {labels}; need at least 3")
    sub = cohort.subset(keep)
    y = np.array([table[s] for s in sub.slide_ids], dtype=np.float64)
    if cv == "kfold":
        splits = kfold_splits(len(sub), folds=folds, seed=seed)
    else:
        splits = repeated_splits(len(sub), repeats=repeats, seed=seed)
    lay = _ints(layers, "layers") or (-1,)
    results = []
    x = embed_slides(enc, sub, layers=lay, concat_mean_input=concat_mean, max_tiles=max_tiles, seed=seed)
    results.append(linear_probe(x, y, splits, label_names=names, name=f"pretrained ({encoder.name})"))
    if random_baseline:
        torch.manual_seed(seed)
        xr = embed_slides(
            SlideEncoder(enc.cfg), sub, layers=lay, concat_mean_input=concat_mean, max_tiles=max_tiles, seed=seed
        )
        results.append(linear_probe(xr, y, splits, label_names=names, name="random-init encoder"))
    notes = [f"{len(cohort) - len(keep)} slides without labels left out"] + [
        f"{s.slide}: {s.reason}" for s in cohort.skips
    ]
    if abmil:
        ab = abmil_probe(sub, y, splits, label_names=names, epochs=abmil_epochs, seed=seed)
        if isinstance(ab, str):
            notes.append(ab)
        else:
            results.append(ab)
    for r in results:
        if np.isnan(r.auroc).all():
            notes.append(f"{r.name}: no defined AUROC; every test split has one class (too few labelled slides)")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"results": [r.summary() for r in results], "n_slides": len(sub), "labels": names, "notes": notes}
    (out / "probe.json").write_text(json.dumps(summary, indent=2))
    with open(out / "probe_scores.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["model", "repeat", "label", "auroc", "auprc"])
        for r in results:
            for rep in range(r.auroc.shape[0]):
                for k, n in enumerate(r.label_names):
                    wr.writerow([r.name, rep, n, r.auroc[rep, k], r.auprc[rep, k]])
    _print_table(summary)


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"linear probe, {summary['n_slides']} slides, labels: {', '.join(summary['labels'])}")
    for col in ("model", "AUROC", "AUPRC"):
        t.add_column(col)
    for r in summary["results"]:
        t.add_row(
            r["name"], f"{r['auroc_mean']:.3f} ± {r['auroc_std']:.3f}", f"{r['auprc_mean']:.3f} ± {r['auprc_std']:.3f}"
        )
    console = Console()
    console.print(t)
    for n in summary["notes"]:
        console.print(f"note: {n}")
