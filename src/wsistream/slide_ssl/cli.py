"""``slide-pretrain`` and ``slide-probe`` commands (a ``typer.Typer`` the main ``wsistream`` CLI mounts)."""

from __future__ import annotations

import csv
import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer

if TYPE_CHECKING:  # the commands import torch lazily, so --help stays fast
    from wsistream.slide_ssl.config import PretrainConfig
    from wsistream.slide_ssl.data import SlideTokenCohort
    from wsistream.slide_ssl.encoder import SlideEncoder
    from wsistream.slide_ssl.probe import ProbeScores, Split
    from wsistream.slide_ssl.train import PretrainResult

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
    grad_accum: int | None = typer.Option(
        None, help="Micro-batches per optimizer step (default: preset, dino 1, dinov2 1, dinov2-grid 32)."
    ),
    dim: int | None = typer.Option(None, help="Encoder width D [768]."),
    depth: int | None = typer.Option(None, help="Encoder layers [12]."),
    heads: int | None = typer.Option(None, help="Attention heads [16]."),
    ffn_dim: int | None = typer.Option(None, help="FFN width [3072]."),
    segment_lengths: str | None = typer.Option(
        None, help="Dilated-attention segment lengths [1024,2048,4096,8192,16384]."
    ),
    dilations: str | None = typer.Option(None, help="Dilation ratio per segment length [1,2,4,8,16]."),
    grid_stem: int | None = typer.Option(
        None,
        help="k x k convolution over the tile grid (wsistream's relative encoder, not the references'; 0 = off) [0].",
    ),
    absolute_positions: bool = typer.Option(
        True,
        "--absolute-positions/--no-absolute-positions",
        help="Add the sin-cos position embedding (off: positions only through --grid-stem, docs/slide_ssl.md).",
    ),
    checkpoint_layers: bool = typer.Option(
        False, "--checkpoint-layers/--no-checkpoint-layers", help="Recompute layer activations in backward."
    ),
    out_dim: int | None = typer.Option(None, help="DINO head prototypes [8192]."),
    ibot_out_dim: int | None = typer.Option(
        None, help="Separate iBOT head prototypes (default: preset, dinov2-grid 65536)."
    ),
    base_lr: float | None = typer.Option(
        None,
        help="Base learning rate before batch scaling "
        "(default: preset, dino 5e-4 x B/256, dinov2 2e-4 x sqrt(B/1024), dinov2-grid 4e-3 x sqrt(B/1024)).",
    ),
    n_local: int | None = typer.Option(None, help="Local crops per slide [8]."),
    max_tiles: int | None = typer.Option(None, help="Global-crop token cap [8192]."),
    min_tiles: int | None = typer.Option(None, help="Slides with fewer usable tiles are skipped [16]."),
    koleo_weight: float | None = typer.Option(None, help="KoLeo weight (DINOv2 methods) [0]."),
    tile_size: float | None = typer.Option(
        None, help="Level-0 tile step in px for .h5 coords (default: from attributes)."
    ),
    exclude: str | None = typer.Option(
        None,
        "--exclude",
        help="Slides to leave out of pretraining (the evaluation slides): a CSV with a slide_id column, a text "
        "file with one id per line, or a comma-separated list (default: none).",
    ),
    seed: int = typer.Option(0, help="Seed of model init, slide order, crops and masks."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    precision: str = typer.Option(
        "auto", help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16 (loss-scaled, as the references)."
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/checkpoint.pt when present."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Pretrain a LongNet slide encoder with DINO / DINOv2 on coordinate crops (torchrun-aware)."""
    from wsistream.slide_ssl.train import pretrain

    cfg, cohort, exclude_ids = _pretrain_inputs(
        method,
        features,
        tile_size=tile_size,
        exclude=exclude,
        run={"steps": steps, "batch_size": batch_size, "seed": seed, "checkpoint_every": checkpoint_every},
        precision=precision,
        crops={"n_local": n_local, "max_tiles": max_tiles, "min_tiles": min_tiles},
        objective={"out_dim": out_dim, "ibot_out_dim": ibot_out_dim, "koleo_weight": koleo_weight},
        optim={"grad_accum": grad_accum, "base_lr": base_lr},
        encoder={
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "ffn_dim": ffn_dim,
            "grid_stem": grid_stem,
            "absolute_positions": None if absolute_positions else False,
        },
        segments=(segment_lengths, dilations),
        checkpoint_layers=checkpoint_layers,
    )
    result = pretrain(cohort, out, cfg, resume=resume, progress=progress, tile_size=tile_size, exclude=exclude_ids)
    _print_pretrain_result(result, n_slides=len(cohort), steps=cfg.steps, out=out)


def _pretrain_inputs(
    method: str,
    features: Path,
    *,
    tile_size: float | None,
    exclude: str | None,
    run: dict[str, int],
    precision: str,
    crops: dict[str, int | None],
    objective: dict[str, Any],
    optim: dict[str, Any],
    encoder: dict[str, int | bool | None],
    segments: tuple[str | None, str | None],
    checkpoint_layers: bool,
) -> tuple[PretrainConfig, SlideTokenCohort, set[str] | None]:
    """The method preset with the options given on top (``None`` keeps the preset's), the cohort and the excluded ids.

    The option groups are the config's sections; a value the config refuses is a ``BadParameter``.
    """
    from wsistream.slide_ssl.data import SlideTokenCohort, read_slide_ids
    from wsistream.slide_ssl.presets import method_preset

    try:
        cfg = method_preset(method, **run, precision=precision)
        cfg = dataclasses.replace(
            cfg,
            crops=_set(cfg.crops, **crops),
            objective=_set(cfg.objective, **objective),
            optim=_set(cfg.optim, **optim),
        )
        cohort = SlideTokenCohort.scan(features, min_tiles=cfg.crops.min_tiles, tile_size=tile_size)
        exclude_ids = read_slide_ids(exclude) if exclude else None
        encoder_cfg = _set(
            cfg.encoder,
            in_dim=cohort.dim,
            **encoder,
            segment_lengths=_ints(segments[0], "segment_lengths"),
            dilations=_ints(segments[1], "dilations"),
            checkpoint_layers=checkpoint_layers or None,
        )
        return dataclasses.replace(cfg, encoder=encoder_cfg), cohort, exclude_ids
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _print_pretrain_result(result: PretrainResult, *, n_slides: int, steps: int, out: Path) -> None:
    skipped = sum(1 for s in result.skips if s.action == "skipped")
    excluded = sum(1 for s in result.skips if s.action == "excluded")
    last = result.history[-1] if result.history else {}
    typer.echo(
        f"{n_slides - excluded} slides used, {skipped} skipped, {excluded} excluded (see {out / 'skipped.jsonl'})"
    )
    typer.echo(f"step {last.get('step', 0)}/{steps}, loss {last.get('loss', float('nan')):.4f}; wrote {out}")


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
    encoder: Path = typer.Option(
        ...,
        "--encoder",
        help="slide_encoder.pt or checkpoint.pt from slide-pretrain, or a Prov-GigaPath slide_encoder.pth.",
    ),
    features: Path = typer.Option(..., "--features", help="Folder of tile features of the labelled slides."),
    encoder_format: str = typer.Option(
        "auto",
        help="'auto' (from the file), 'wsistream' or 'gigapath': a Prov-GigaPath file runs in reference mode on "
        "tiles in file order at floor(coords / 256).",
    ),
    labels: Path = typer.Option(..., "--labels", help="CSV: slide_id plus one 0/1 column per label (blank = missing)."),
    out: Path = typer.Option(..., "--out", help="Output folder for probe.json and probe_scores.csv."),
    probe: str = typer.Option(
        "head", help="'head': the seed's linear head, 10 epochs, last epoch kept; 'logreg': scikit-learn, C on val."
    ),
    repeats: int = typer.Option(10, help="Random 70/10/20 splits (--cv reference or repeated)."),
    cv: str = typer.Option(
        "reference",
        help="'reference': SLP's train_test_split splits (random_state = seed + split); 'repeated': seeded "
        "random splits; 'kfold': every slide tested once.",
    ),
    folds: int = typer.Option(10, help="Folds with --cv kfold."),
    layers: str = typer.Option("-4,-3,-2,-1", help="Encoder layers whose CLS to concatenate (SLP: 9-10-11-12)."),
    concat_mean: bool = typer.Option(True, "--concat-mean/--no-concat-mean", help="Append the mean input embedding."),
    head_epochs: int = typer.Option(10, help="Epochs of the linear head (--probe head)."),
    random_inits: int = typer.Option(
        1, help="Random-init encoders of the same architecture probed alongside (0: none)."
    ),
    abmil: bool = typer.Option(
        True, "--abmil/--no-abmil", help="ABMIL of wsistream.mil on the same splits, if installed."
    ),
    abmil_epochs: int = typer.Option(20, help="ABMIL training epochs."),
    max_tiles: int = typer.Option(8192, help="Tiles per slide for embedding (random subset beyond)."),
    seed: int = typer.Option(0, help="Seed of the splits, subsets, heads and random inits."),
) -> None:
    """Probe slide embeddings: AUROC / AUPRC per label, mean ± std over splits (seed 004's table)."""
    from wsistream.slide_ssl.probe import (
        GIGAPATH_SCAN,
        abmil_probe,
        load_slide_encoder,
        pretraining_overlap,
        slide_encoder_format,
    )

    if probe not in ("head", "logreg"):
        raise typer.BadParameter(f"--probe must be 'head' or 'logreg', got {probe!r}")
    if cv not in ("reference", "repeated", "kfold"):
        raise typer.BadParameter(f"--cv must be 'reference', 'repeated' or 'kfold', got {cv!r}")
    names, table = _read_labels(labels)
    if encoder_format not in ("auto", "wsistream", "gigapath"):
        raise typer.BadParameter(f"--encoder-format must be 'auto', 'wsistream' or 'gigapath', got {encoder_format!r}")
    kind = slide_encoder_format(encoder) if encoder_format == "auto" else encoder_format
    enc = load_slide_encoder(encoder, encoder_format=kind)  # type: ignore[arg-type]
    scan = GIGAPATH_SCAN if kind == "gigapath" else {}
    sub, y, notes = _labelled_cohort(features, labels, table, enc.cfg.in_dim, **scan)
    overlap = pretraining_overlap(encoder, sub.slide_ids)
    if overlap:
        notes.insert(0, f"WARNING: {len(overlap)} probed slides were in the encoder's pretraining cohort")
    splits = _splits(cv, len(sub), repeats, folds, seed)
    lay = _ints(layers, "layers") or (-1,)
    try:
        enc.layer_numbers(lay)
    except ValueError as exc:
        raise typer.BadParameter(f"--layers {layers}: {exc} (the encoder has {enc.cfg.depth} layers)") from exc
    run = partial(
        _probe_encoder, sub=sub, y=y, splits=splits, names=names, probe=probe, layers=lay,
        concat_mean=concat_mean, max_tiles=max_tiles, seed=seed, head_epochs=head_epochs,
    )  # fmt: skip
    results = [run(enc, f"pretrained ({encoder.name})")]
    results += [run(_random_like(enc, seed + k), _random_name(k, random_inits)) for k in range(random_inits)]
    if abmil:
        ab = abmil_probe(sub, y, splits, label_names=names, epochs=abmil_epochs, seed=seed)
        notes.append(ab) if isinstance(ab, str) else results.append(ab)
    for r in results:
        if np.isnan(r.auroc).all():
            notes.append(f"{r.name}: no defined AUROC; every test split has one class (too few labelled slides)")
    summary = {
        "results": [r.summary() for r in results],
        "n_slides": len(sub),
        "encoder_format": kind,
        "scan": {"tile_size": sub.tile_size, "order": sub.order},
        "labels": names,
        "protocol": {"probe": probe, "cv": cv, "splits": len(splits), "layers": list(lay), "concat_mean": concat_mean},
        "notes": notes,
    }
    _write_probe(out, summary, results)
    _print_table(summary)


def _labelled_cohort(
    features: Path, labels: Path, table: dict[str, list[float]], in_dim: int, **scan: Any
) -> tuple[SlideTokenCohort, np.ndarray, list[str]]:
    """The scanned slides that have labels, in the labels CSV's row order (SLP splits the CSV's slide list)."""
    from wsistream.slide_ssl.data import SlideTokenCohort

    cohort = SlideTokenCohort.scan(features, min_tiles=1, input_dim=in_dim, **scan)
    where = {s: i for i, s in enumerate(cohort.slide_ids)}
    keep = [where[s] for s in table if s in where]
    if len(keep) < 4:
        raise typer.BadParameter(f"only {len(keep)} slides of {features} have labels in {labels}; need at least 4")
    sub = cohort.subset(keep)
    y = np.array([table[s] for s in sub.slide_ids], dtype=np.float64)
    notes = [f"{len(cohort) - len(keep)} slides without labels left out"]
    return sub, y, notes + [f"{s.slide}: {s.reason}" for s in cohort.skips]


def _splits(cv: str, n: int, repeats: int, folds: int, seed: int) -> list[Any]:
    from wsistream.slide_ssl.probe import kfold_splits, reference_splits, repeated_splits

    if cv == "kfold":
        return kfold_splits(n, folds=folds, seed=seed)
    if cv == "repeated":
        return repeated_splits(n, repeats=repeats, seed=seed)
    return reference_splits(n, repeats=repeats, seed=seed)


def _random_like(enc: Any, seed: int) -> Any:
    import torch

    from wsistream.slide_ssl.encoder import SlideEncoder

    torch.manual_seed(seed)
    return SlideEncoder(enc.cfg).eval()


def _random_name(k: int, n: int) -> str:
    return "random-init encoder" if n == 1 else f"random-init encoder (init seed {k})"


def _probe_encoder(
    enc: SlideEncoder,
    name: str,
    *,
    sub: SlideTokenCohort,
    y: np.ndarray,
    splits: list[Split],
    names: list[str],
    probe: str,
    layers: tuple[int, ...],
    concat_mean: bool,
    max_tiles: int,
    seed: int,
    head_epochs: int,
) -> ProbeScores:
    from wsistream.slide_ssl.linear_head import HeadProbeConfig, head_probe
    from wsistream.slide_ssl.probe import embed_slides, linear_probe

    x = embed_slides(enc, sub, layers=layers, concat_mean_input=concat_mean, max_tiles=max_tiles, seed=seed)
    if probe == "logreg":
        return linear_probe(x, y, splits, label_names=names, name=name)
    cfg = HeadProbeConfig(epochs=head_epochs)
    return head_probe(x, y, splits, label_names=names, cfg=cfg, seed=seed, name=name)


def _write_probe(out: Path, summary: dict[str, Any], results: list[Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(summary, indent=2))
    with open(out / "probe_scores.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["model", "repeat", "label", "auroc", "auprc"])
        for r in results:
            for rep in range(r.auroc.shape[0]):
                for k, n in enumerate(r.label_names):
                    wr.writerow([r.name, rep, n, r.auroc[rep, k], r.auprc[rep, k]])


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    p = summary["protocol"]
    t = Table(
        title=f"{p['probe']} probe, {summary['n_slides']} slides, {p['splits']} {p['cv']} splits; AUROC / AUPRC "
        "mean ± std over splits"
    )
    for col in ("model", "label", "AUROC", "AUPRC"):
        t.add_column(col)
    for r in summary["results"]:
        for lab in summary["labels"]:
            roc = f"{r['per_label_auroc'][lab]:.3f} ± {r['per_label_auroc_std'][lab]:.3f}"
            t.add_row(r["name"], lab, roc, f"{r['per_label_auprc'][lab]:.3f} ± {r['per_label_auprc_std'][lab]:.3f}")
        macro = (f"{r['auroc_mean']:.3f} ± {r['auroc_std']:.3f}", f"{r['auprc_mean']:.3f} ± {r['auprc_std']:.3f}")
        t.add_row(r["name"], "macro", *macro, end_section=True)
    console = Console()
    console.print(t)
    for n in summary["notes"]:
        console.print(f"note: {n}")
