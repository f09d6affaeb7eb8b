"""Evaluation: slide embeddings from a pretrained encoder -> multi-label linear probe on repeated splits.

Embedding (SLP ``dinov2_with_new_settings/finetune_dinov2_cls_global/classification_head.py``):
the CLS tokens of the chosen layers (the reference's frozen run uses
``feat_layer="9-10-11-12"``, i.e. the last four of 12), each through the final
LayerNorm, concatenated, optionally followed by the mean input tile embedding.
Slides with more than ``max_tiles`` tiles are encoded on a random subset
(``max_tiles: 8192`` in ``task_configs/mutation_5_gene_freeze.yaml``).

The seed's own probe (a linear head trained 10 epochs, last epoch kept; ``slide-probe``'s default) is
:func:`~wsistream.slide_ssl.linear_head.head_probe`, on :func:`reference_splits`. This module's
:func:`linear_probe` is the scikit-learn alternative (``--probe logreg``).

Logistic-regression probe: for each of ``repeats`` random 70/10/20 train/val/test splits (or each
fold of :func:`kfold_splits`, the seed document's 10-fold cross-validation) and each
label, standardise on train, fit an L2 logistic regression for every ``C`` in
the grid, keep the ``C`` with the best validation AUROC, report test AUROC and
AUPRC; then mean ± std over repeats of the macro average over labels. A label
whose train split has one class, or whose test split has one class, gives NaN
for that repeat (counted in ``n_undefined``). The ABMIL baseline of
``wsistream.mil`` runs on the same splits when that package is importable.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from wsistream.slide_ssl.config import EncoderConfig
from wsistream.slide_ssl.data import SlideTokenCohort, slide_key
from wsistream.slide_ssl.encoder import SlideEncoder
from wsistream.slide_ssl.gigapath import load_gigapath_slide_encoder

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


#: What :func:`load_slide_encoder` reads: a ``slide-pretrain`` file, a Prov-GigaPath slide encoder, or either.
EncoderFormat = Literal["auto", "wsistream", "gigapath"]


def _peek(path: str | os.PathLike[str]) -> object:
    """The file's top-level object, tensors memory-mapped (a 300 MB encoder is not read to look at its keys)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, not a zip file, foreign pickle: the loaders name the reason
        return None


def slide_encoder_format(path: str | os.PathLike[str]) -> Literal["wsistream", "gigapath"]:
    """``"wsistream"`` for ``slide_encoder.pt`` / ``checkpoint.pt`` of ``slide-pretrain``, else ``"gigapath"``.

    Anything else is taken for a Prov-GigaPath ``slide_encoder.pth`` (``{"model": state_dict}`` or a bare
    LongNetViT state dict), which :func:`~.gigapath.load_gigapath_slide_encoder` checks key by key.
    """
    state = _peek(path)
    if not isinstance(state, dict):
        return "gigapath"
    ours = {"state_dict", "encoder"} <= set(state) or {"model", "config"} <= set(state)
    return "wsistream" if ours else "gigapath"


def load_slide_encoder(
    path: str | os.PathLike[str], which: str = "teacher", encoder_format: EncoderFormat = "auto"
) -> SlideEncoder:
    """Slide encoder (eval mode) from ``slide_encoder.pt``, a training ``checkpoint.pt`` or a Prov-GigaPath file.

    ``which``: the teacher or student of a checkpoint.  A Prov-GigaPath ``slide_encoder.pth`` (found by
    :func:`slide_encoder_format`, or ``encoder_format="gigapath"``) is read by
    :func:`~.gigapath.load_gigapath_slide_encoder` with the released model's settings, in reference mode:
    its tiles must be scanned in file order with 256-px tiles (:data:`GIGAPATH_SCAN`).
    """
    if encoder_format not in ("auto", "wsistream", "gigapath"):
        raise ValueError(f"encoder_format={encoder_format!r}; pass 'auto', 'wsistream' or 'gigapath'")
    kind = slide_encoder_format(path) if encoder_format == "auto" else encoder_format
    if kind == "gigapath":
        return load_gigapath_slide_encoder(path)
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if "state_dict" in state:
        cfg, sd = EncoderConfig(**state["encoder"]), state["state_dict"]
    elif "model" in state and "config" in state:
        cfg = EncoderConfig(**state["config"]["encoder"])
        prefix = f"{which}.backbone."
        sd = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    else:
        raise ValueError(f"{path}: neither a slide_encoder.pt nor a slide_ssl checkpoint; pass one of those")
    enc = SlideEncoder(cfg)
    enc.load_state_dict(sd)
    return enc.eval()


#: How a Prov-GigaPath encoder's tiles are scanned: positions ``floor(coords / 256)`` in file order, as
#: prov-gigapath's ``coords_to_pos`` and its data loader give them (``SlideTokenCohort.scan`` arguments).
GIGAPATH_SCAN: dict[str, Any] = {"tile_size": 256, "order": "file"}


def pretraining_overlap(path: str | os.PathLike[str], slide_ids: Sequence[str]) -> list[str]:
    """The ``slide_ids`` the encoder at ``path`` was pretrained on; warns when there are any.

    ``slide_encoder.pt`` and ``checkpoint.pt`` store the slide ids of their pretraining cohort. A probe on
    those slides measures an encoder that has seen them (the reference keeps its evaluation cohort out with
    an exclude CSV; ``slide-pretrain --exclude``). Slides are matched by :func:`~.data.slide_key`.
    Files without the list (older or foreign weights) give ``[]``.
    """
    state = _peek(path)
    seen = {slide_key(s) for s in (state.get("slide_ids", []) if isinstance(state, dict) else [])}
    overlap = [s for s in slide_ids if slide_key(s) in seen]
    if overlap:
        head = ", ".join(overlap[:5]) + (" ..." if len(overlap) > 5 else "")
        warnings.warn(
            f"{path}: {len(overlap)} of the {len(slide_ids)} probed slides were in its pretraining cohort ({head}); "
            "pass slide-pretrain --exclude with the evaluation slides for an unbiased probe",
            UserWarning,
            stacklevel=2,
        )
    return overlap


@torch.no_grad()
def embed_slides(
    encoder: SlideEncoder,
    cohort: SlideTokenCohort,
    *,
    layers: Sequence[int] = (-1,),
    concat_mean_input: bool = False,
    max_tiles: int = 8192,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(n_slides, len(layers) * D [+ d]) slide embeddings, one slide at a time, in ``cohort`` order."""
    encoder = encoder.to(device).eval()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(len(cohort)):
        s = cohort.load(i)
        idx = np.arange(s.n_tiles)
        if s.n_tiles > max_tiles:
            idx = np.sort(rng.choice(s.n_tiles, size=max_tiles, replace=False))
        x = torch.from_numpy(s.features[idx]).unsqueeze(0).to(device)
        pos = torch.from_numpy(s.grid[idx]).unsqueeze(0).to(device)
        out = encoder(x, pos, layers=layers)
        assert out.layer_cls is not None
        parts = [out.layer_cls.flatten(1).float().cpu().numpy()[0]]
        if concat_mean_input:
            parts.append(s.features[idx].mean(0))
        rows.append(np.concatenate(parts))
    return np.stack(rows).astype(np.float32)


@dataclass(frozen=True)
class Split:
    """Index arrays of one repeat."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def repeated_splits(
    n: int, repeats: int = 10, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> list[Split]:
    """``repeats`` random train/val/test partitions of ``n`` items (every part non-empty)."""
    if n < 3:
        raise ValueError(f"need at least 3 slides for train/val/test splits, got {n}")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"fractions={fractions} must be positive and sum to 1")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} slides leave no training slide with fractions={fractions}")
    out = []
    for r in range(repeats):
        perm = np.random.default_rng([seed, r]).permutation(n)
        out.append(Split(perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]))
    return out


def reference_splits(n: int, repeats: int = 10, seed: int = 0) -> list[Split]:
    """SLP's 70/10/20 splits: ``train_test_split`` with ``random_state = seed + repeat`` (SLP ``get_splits``).

    SLP ``dinov2_with_new_settings/finetune_dinov2_cls_global/utils.py`` l.150-153 splits the slide list (in
    the dataset CSV's order) into 70 % train and 30 % rest with ``random_state=fold``, then the rest into
    1/3 val and 2/3 test with the same state; its ``--folds 10`` runs folds 0-9. With ``seed=0`` and the
    items in CSV order these are the reference's splits exactly.
    """
    from sklearn.model_selection import train_test_split

    if n < 4:
        raise ValueError(f"need at least 4 slides for 70/10/20 splits, got {n}")
    items = np.arange(n)
    out = []
    for r in range(repeats):
        train, rest = train_test_split(items, test_size=0.3, random_state=seed + r)
        val, test = train_test_split(rest, test_size=0.2 / 0.3, random_state=seed + r)
        out.append(Split(np.asarray(train), np.asarray(val), np.asarray(test)))
    return out


def kfold_splits(n: int, folds: int = 10, val_fraction: float = 0.1, seed: int = 0) -> list[Split]:
    """``folds``-fold cross-validation: every item is tested exactly once.

    The seed document reports "10-fold cross-validation" for its TCGA LUAD
    5-gene task. Fold ``i`` tests one shuffled fold; ``val_fraction`` of all
    items, drawn from the other folds, choose the regularisation; the rest
    train. Folds are not stratified: the task is multi-label.
    """
    if folds < 2 or n < folds:
        raise ValueError(f"need 2 <= folds <= number of slides, got folds={folds} for {n} slides")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, folds])
    parts = np.array_split(rng.permutation(n), folds)
    out = []
    for i, test in enumerate(parts):
        rest = rng.permutation(np.concatenate([p for j, p in enumerate(parts) if j != i]))
        n_val = min(max(1, round(val_fraction * n)), len(rest) - 1)
        if n_val < 1:
            raise ValueError(f"{n} slides in {folds} folds leave no training slide; use fewer folds")
        out.append(Split(rest[n_val:], rest[:n_val], np.sort(test)))
    return out


@dataclass(frozen=True)
class ProbeScores:
    """Per-repeat, per-label test AUROC / AUPRC (NaN where undefined)."""

    name: str
    label_names: list[str]
    auroc: np.ndarray  # (repeats, labels)
    auprc: np.ndarray

    def summary(self) -> dict[str, Any]:
        """Macro AUROC / AUPRC mean ± std over repeats and per-label means."""
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN column
            macro_roc, macro_prc = np.nanmean(self.auroc, 1), np.nanmean(self.auprc, 1)
            return {
                "name": self.name,
                "auroc_mean": float(np.nanmean(macro_roc)),
                "auroc_std": float(np.nanstd(macro_roc)),
                "auprc_mean": float(np.nanmean(macro_prc)),
                "auprc_std": float(np.nanstd(macro_prc)),
                "per_label_auroc": dict(zip(self.label_names, np.nanmean(self.auroc, 0).tolist(), strict=True)),
                "per_label_auroc_std": dict(zip(self.label_names, np.nanstd(self.auroc, 0).tolist(), strict=True)),
                "per_label_auprc": dict(zip(self.label_names, np.nanmean(self.auprc, 0).tolist(), strict=True)),
                "per_label_auprc_std": dict(zip(self.label_names, np.nanstd(self.auprc, 0).tolist(), strict=True)),
                "repeats": int(self.auroc.shape[0]),
                "n_undefined": int(np.isnan(self.auroc).sum()),
            }


def _two_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def binary_metrics(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Test AUROC and AUPRC (average precision) of 0/1 ``y``; NaN, NaN when ``y`` has one class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if not _two_classes(y):
        return float("nan"), float("nan")
    return float(roc_auc_score(y, score)), float(average_precision_score(y, score))


def linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    *,
    label_names: Sequence[str] | None = None,
    cs: Sequence[float] = DEFAULT_CS,
    name: str = "linear probe",
) -> ProbeScores:
    """Multi-label logistic-regression probe; ``y`` (n, L) of 0/1 with NaN for missing labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n_lab = y.shape[1]
    roc = np.full((len(splits), n_lab), np.nan)
    prc = np.full((len(splits), n_lab), np.nan)
    for r, sp in enumerate(splits):
        for k in range(n_lab):
            tr, va, te = (ix[~np.isnan(y[ix, k])] for ix in (sp.train, sp.val, sp.test))
            ytr, yva, yte = (y[ix, k].astype(int) for ix in (tr, va, te))
            if not _two_classes(ytr) or not _two_classes(yte):
                continue
            scaler = StandardScaler().fit(x[tr])
            xtr, xva, xte = scaler.transform(x[tr]), scaler.transform(x[va]), scaler.transform(x[te])
            best, best_c = -np.inf, 1.0
            for c in cs if _two_classes(yva) else [1.0]:
                clf = LogisticRegression(C=c, max_iter=2000).fit(xtr, ytr)
                score = binary_metrics(yva, clf.decision_function(xva))[0] if _two_classes(yva) else 0.0
                if score > best:
                    best, best_c = score, c
            clf = LogisticRegression(C=best_c, max_iter=2000).fit(xtr, ytr)
            roc[r, k], prc[r, k] = binary_metrics(yte, clf.decision_function(xte))
    names = list(label_names) if label_names is not None else [f"label{k}" for k in range(n_lab)]
    return ProbeScores(name, names, roc, prc)


def abmil_probe(
    cohort: SlideTokenCohort,
    y: np.ndarray,
    splits: Sequence[Split],
    *,
    label_names: Sequence[str] | None = None,
    epochs: int = 20,
    n_tiles: int | None = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> ProbeScores | str:
    """ABMIL of ``wsistream.mil`` (its reference model and trainer) on the same splits, one model per label.

    Trained on the split's train part with ``wsistream.mil.fit`` (Adam, batch 16 or the train size,
    ``n_tiles`` tiles per slide), scored on its test part after the last epoch. Returns a note (str)
    instead of scores when ``wsistream.mil`` is not importable or does not offer that API.
    """
    try:
        from wsistream.features.formats import SlideFeatures
        from wsistream.mil import TrainConfig, build_model, fit, make_cohort
    except ImportError as exc:
        return f"ABMIL baseline skipped: wsistream.mil is not importable ({exc})"
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    slides = []
    for i in range(len(cohort)):
        s = cohort.load(i)
        coords = np.concatenate([np.zeros((s.n_tiles, 1), np.float32), s.grid.astype(np.float32)], 1)
        slides.append((s.slide_id, SlideFeatures(s.slide_id, s.features, coords)))
    roc = np.full((len(splits), y.shape[1]), np.nan)
    prc = np.full_like(roc, np.nan)
    try:
        for k in range(y.shape[1]):
            known = np.flatnonzero(~np.isnan(y[:, k]))
            pos = {int(i): j for j, i in enumerate(known)}
            mil = make_cohort(
                [slides[i] for i in known], {slides[i][0]: (slides[i][0], int(y[i, k])) for i in known}, "binary"
            )
            for r, sp in enumerate(splits):
                tr = np.array([pos[int(i)] for i in sp.train if int(i) in pos])
                te = np.array([pos[int(i)] for i in sp.test if int(i) in pos])
                if tr.size < 2 or te.size == 0:
                    continue
                cfg = TrainConfig(epochs=epochs, batch_size=min(16, tr.size), n_tiles=n_tiles, device=device)
                build = partial(build_model, "abmil", mil.dim, 1)
                _, hist = fit(build, mil, tr, te, cfg, seed=seed + r)
                roc[r, k], prc[r, k] = binary_metrics(mil.labels[te].astype(int), np.asarray(hist.eval_scores)[:, 0])
    except (AttributeError, TypeError) as exc:
        return f"ABMIL baseline skipped: wsistream.mil API differs from the one expected ({exc})"
    names = list(label_names) if label_names is not None else [f"label{k}" for k in range(y.shape[1])]
    return ProbeScores("ABMIL (wsistream.mil)", names, roc, prc)
