"""Proof that slide-level pretraining learns: a synthetic task defined by the tiles' spatial layout.

``python -m wsistream.slide_ssl.learning --help``. On :func:`~.synthetic.make_spatial_cohort`
(``--cohort xor``, the default) or
:func:`~.synthetic.make_arrangement_cohort` (``--cohort arrangement``: label = a property of the motif's
layout; the tile multiset has the same distribution in both classes) it

1. pretrains a small LongNet encoder with a method preset shrunk to the task (:func:`small_config`),
2. probes its teacher (CLS of every layer + mean tile embedding, the seed's embedding) on the same
   splits as a random-init encoder of the same architecture for each of ``init_seeds``, and ABMIL of
   ``wsistream.mil`` (positions unseen: expected at chance),
3. reports AUROC mean ± std over splits per model, and the margin of the pretrained encoder over the
   random inits' mean next to the random inits' spread (std of their split-mean AUROCs; their range
   max - min too).

The probe defaults to the scikit-learn logistic regression (``C`` chosen on validation): with 48 slides the
seed's linear head (lr 5e-4, one optimizer step per 32 slides) takes 10 optimizer steps in all and stays
near its random initialisation, which measures the head, not the encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsistream.slide_ssl.config import EncoderConfig, PretrainConfig
from wsistream.slide_ssl.data import SlideTokenCohort
from wsistream.slide_ssl.encoder import SlideEncoder
from wsistream.slide_ssl.presets import method_preset
from wsistream.slide_ssl.probe import ProbeScores, abmil_probe, embed_slides, linear_probe, reference_splits


def small_config(method: str = "dino", steps: int = 150, in_dim: int = 16, seed: int = 0) -> PretrainConfig:
    """The ``method`` preset shrunk to a 48-slide synthetic cohort and a short run.

    Width 32, 2 layers, no dropout; 8 prototypes for a task with 2 kinds of slide (with thousands a short
    run ends with a near-uniform teacher: centring outpaces sharpening); teacher momentum 0.95 and a
    constant lr 2e-3 so 150 steps move the teacher; batch 8; 2 local crops. Everything else is the preset's.
    """
    enc = EncoderConfig(
        in_dim=in_dim, dim=32, depth=2, heads=4, ffn_dim=64, segment_lengths=(64, 128, 256), dilations=(1, 2, 4),
        dropout=0.0,
    )  # fmt: skip
    cfg = method_preset(method, steps=steps, batch_size=8, checkpoint_every=steps, encoder=enc, seed=seed)
    return dataclasses.replace(
        cfg,
        crops=dataclasses.replace(cfg.crops, n_local=2),
        objective=dataclasses.replace(
            cfg.objective, out_dim=8, ibot_out_dim=8, head_hidden_dim=64, head_bottleneck_dim=32, momentum_teacher=0.95
        ),
        optim=dataclasses.replace(cfg.optim, base_lr=2e-3, lr_scaling="none", freeze_last_layer_frac=0.0, grad_accum=1),
    )


def with_overrides(cfg: PretrainConfig, overrides: dict[str, Any]) -> PretrainConfig:
    """``cfg`` with dotted fields replaced, e.g. ``{"batch_size": 16, "crops.position_shift": 32}``.

    One level of nesting (``part.field``), as :class:`~.config.PretrainConfig` has; each part is rebuilt with
    :func:`dataclasses.replace`, so its ``__post_init__`` checks the new value.
    """
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        part, _, name = key.rpartition(".")
        if part:
            nested.setdefault(part, {})[name] = value
        else:
            top[key] = value
    for part, fields in nested.items():
        if part not in ("encoder", "crops", "objective", "optim"):
            raise ValueError(f"override {part}.*: pass encoder.*, crops.*, objective.*, optim.* or a top-level field")
        top[part] = dataclasses.replace(getattr(cfg, part), **fields)
    return dataclasses.replace(cfg, **top)


def _summary_row(scores: ProbeScores) -> dict[str, Any]:
    s = scores.summary()
    return {"name": s["name"], "auroc_mean": s["auroc_mean"], "auroc_std": s["auroc_std"]}


def learning_check(
    root: str | os.PathLike[str],
    *,
    data_seed: int = 0,
    init_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    method: str = "dino",
    steps: int = 150,
    n_slides: int = 48,
    repeats: int = 10,
    abmil_epochs: int = 20,
    abmil: bool = True,
    cohort: str = "xor",
    cohort_kw: dict[str, Any] | None = None,
    config_kw: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the comparison in ``root`` (cohort in ``root/features``, run in ``root/run``); returns the table.

    ``cohort="xor"``: :func:`~.synthetic.make_spatial_cohort` (stripe motifs, label A xor B; ABMIL can solve
    it tile by tile); ``"arrangement"``: :func:`~.synthetic.make_arrangement_cohort` (label = arrangement
    only). ``cohort_kw`` are passed to the generator, ``config_kw`` to :func:`with_overrides` of
    :func:`small_config`.
    """
    from wsistream.slide_ssl.synthetic import make_arrangement_cohort, make_spatial_cohort
    from wsistream.slide_ssl.train import pretrain

    if cohort not in ("xor", "arrangement"):
        raise ValueError(f"cohort={cohort!r}; pass 'xor' or 'arrangement'")
    root = Path(root)
    make = make_spatial_cohort if cohort == "xor" else make_arrangement_cohort
    syn = make(root / "features", n_slides=n_slides, seed=data_seed, **(cohort_kw or {}))
    slides = SlideTokenCohort.scan(syn.root)
    cfg = with_overrides(small_config(method, steps, slides.dim), config_kw or {})
    res = pretrain(slides, root / "run", cfg, progress=False, resume=False)
    y = syn.labels[[syn.slide_ids.index(s) for s in slides.slide_ids]].astype(float)
    splits = reference_splits(len(slides), repeats=repeats, seed=data_seed)
    layers = tuple(range(1, cfg.encoder.depth + 1))

    def probe(enc: SlideEncoder, name: str) -> ProbeScores:
        x = embed_slides(enc, slides, layers=layers, concat_mean_input=True)
        return linear_probe(x, y, splits, label_names=syn.label_names, name=name)

    from wsistream.slide_ssl.probe import load_slide_encoder

    if res.encoder_path is None:
        raise RuntimeError("pretraining saved no encoder")
    rows = [_summary_row(probe(load_slide_encoder(res.encoder_path), f"pretrained ({method}, {steps} steps)"))]
    rand = []
    for k in init_seeds:
        torch.manual_seed(k)
        rand.append(_summary_row(probe(SlideEncoder(cfg.encoder).eval(), f"random init (seed {k})")))
    rows += rand
    if abmil:
        ab = abmil_probe(slides, y, splits, label_names=syn.label_names, epochs=abmil_epochs, seed=data_seed)
        rows.append(_summary_row(ab) if isinstance(ab, ProbeScores) else {"name": "ABMIL", "note": ab})
    rand_means = np.array([r["auroc_mean"] for r in rand])
    return {
        "data_seed": data_seed,
        "rows": rows,
        "loss_first10": float(np.mean(res.losses[:10])),
        "loss_last10": float(np.mean(res.losses[-10:])),
        "random_mean": float(rand_means.mean()),
        "random_spread": float(rand_means.std()),
        "random_range": float(rand_means.max() - rand_means.min()),
        "margin": float(rows[0]["auroc_mean"] - rand_means.mean()),
    }


def _main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (cohort, runs, learning.json)")
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2], help="cohorts to run [0 1 2]")
    ap.add_argument("--init-seeds", type=int, default=5, help="random-init encoders per cohort [5]")
    ap.add_argument("--method", default="dino", help="dino | dinov2 | dinov2-grid [dino]")
    ap.add_argument("--cohort", default="xor", choices=["xor", "arrangement"], help="see learning_check [xor]")
    ap.add_argument("--steps", type=int, default=150, help="pretraining steps [150]")
    ap.add_argument(
        "--cohort-kw",
        type=json.loads,
        default={},
        help='JSON keywords of the cohort generator, e.g. \'{"layout": "diagonal", "noise": 0.4}\' [{}]',
    )
    ap.add_argument(
        "--config-kw",
        type=json.loads,
        default={},
        help='JSON overrides of small_config, dotted, e.g. \'{"batch_size": 16, "crops.position_shift": 32}\' [{}]',
    )
    ap.add_argument("--n-slides", type=int, default=48, help="slides per cohort [48]")
    ap.add_argument("--repeats", type=int, default=10, help="reference splits [10]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for ds in args.data_seeds:
        r = learning_check(
            args.out / f"data{ds}", data_seed=ds, init_seeds=range(args.init_seeds), method=args.method,
            steps=args.steps, n_slides=args.n_slides, repeats=args.repeats, cohort=args.cohort,
            cohort_kw=args.cohort_kw, config_kw=args.config_kw,
        )  # fmt: skip
        results.append(r)
        print(json.dumps(r, indent=1), flush=True)
    (args.out / "learning.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    _main()
