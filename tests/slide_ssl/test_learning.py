"""End to end on a synthetic cohort: pretraining lowers the loss and its probe beats a random-init encoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wsistream.slide_ssl.config import EncoderConfig, method_preset
from wsistream.slide_ssl.data import SlideCohort
from wsistream.slide_ssl.encoder import SlideEncoder
from wsistream.slide_ssl.probe import embed_slides, linear_probe, load_encoder, repeated_splits
from wsistream.slide_ssl.synthetic import make_spatial_cohort
from wsistream.slide_ssl.train import pretrain


@pytest.mark.slow
def test_short_dino_run_learns_the_spatial_pattern(tmp_path):
    # 48 slides of 8x8 tiles; label = horizontal-stripe motif xor vertical-stripe motif (see synthetic.py)
    syn = make_spatial_cohort(tmp_path / "features", n_slides=48, dim=16, strength=3.0, seed=1)
    enc = EncoderConfig(
        in_dim=16, dim=32, depth=2, heads=4, ffn_dim=64, segment_lengths=(64, 128, 256), dilations=(1, 2, 4), dropout=0
    )
    cfg = method_preset("dino", steps=150, batch_size=8, checkpoint_every=150, encoder=enc)
    cfg = dataclasses.replace(
        cfg,
        crops=dataclasses.replace(cfg.crops, n_local=2),
        # few prototypes for 4 pattern combinations; a fast teacher for a 150-step run
        objective=dataclasses.replace(
            cfg.objective, out_dim=8, head_hidden_dim=64, head_bottleneck_dim=32, momentum_teacher=0.95
        ),
        optim=dataclasses.replace(cfg.optim, base_lr=2e-3, lr_scaling="none", freeze_last_layer_frac=0.0),
    )
    res = pretrain(syn.root, tmp_path / "run", cfg, progress=False)
    first, last = np.mean(res.losses[:10]), np.mean(res.losses[-10:])
    assert last < 0.8 * first, (first, last)

    cohort = SlideCohort.scan(syn.root)
    y = syn.labels[[syn.slide_ids.index(s) for s in cohort.slide_ids]]
    splits = repeated_splits(len(cohort), repeats=10, seed=0)

    def auroc(encoder: SlideEncoder) -> float:
        return linear_probe(embed_slides(encoder, cohort), y, splits).summary()["auroc_mean"]

    torch.manual_seed(0)
    random_init = auroc(SlideEncoder(enc))
    pretrained = auroc(load_encoder(res.encoder_path))
    assert pretrained > random_init + 0.05, (pretrained, random_init)


def test_kfold_splits_test_every_slide_once_and_keep_parts_disjoint():
    from wsistream.slide_ssl.probe import kfold_splits

    splits = kfold_splits(23, folds=10, val_fraction=0.1, seed=3)
    assert len(splits) == 10
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(23))  # each slide tested exactly once
    for s in splits:
        parts = [set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())]
        assert all(parts) and sum(map(len, parts)) == 23 and len(set.union(*parts)) == 23
        assert len(s.val) == 2 and len(s.test) in (2, 3)
    assert [s.test.tolist() for s in kfold_splits(23, folds=10, seed=3)] == [s.test.tolist() for s in splits]
    with pytest.raises(ValueError, match="folds <= number of slides"):
        kfold_splits(5, folds=10)
