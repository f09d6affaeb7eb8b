"""``slide-pretrain`` and ``slide-probe`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsistream.slide_ssl.cli import app
from wsistream.slide_ssl.synthetic import make_spatial_cohort

TINY = [
    "--dim", "32", "--depth", "1", "--heads", "4", "--ffn-dim", "64", "--segment-lengths", "32,128",
    "--dilations", "1,2", "--out-dim", "16", "--ibot-out-dim", "16", "--n-local", "2", "--max-tiles", "64",
    "--min-tiles", "4", "--batch-size", "2", "--grad-accum", "1", "--no-progress",
]  # fmt: skip


def test_pretrain_then_probe(tmp_path):
    syn = make_spatial_cohort(tmp_path / "feats", n_slides=12, dim=8, n_labels=2, side=(6, 7), seed=0)
    (tmp_path / "feats" / "broken.h5").write_bytes(b"junk")
    held_out = ",".join(f"slide_{i:03d}.h5" for i in range(8, 12))  # suffixes are ignored when matching ids
    runner = CliRunner()
    res = runner.invoke(
        app, ["slide-pretrain", "--features", str(syn.root), "--method", "dinov2-grid", "--out", str(tmp_path / "run"),
              "--steps", "3", "--checkpoint-every", "2", "--exclude", held_out, *TINY],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "8 slides used, 1 skipped, 4 excluded" in res.output
    for name in ("checkpoint.pt", "slide_encoder.pt", "loss.csv", "loss.png", "skipped.jsonl"):
        assert (tmp_path / "run" / name).exists(), name
    assert (tmp_path / "run" / "skipped.jsonl").read_text().count('"excluded"') == 4

    encoder = str(tmp_path / "run" / "slide_encoder.pt")
    with pytest.warns(UserWarning, match="8 of the 12 probed slides were in its pretraining cohort"):
        res = runner.invoke(
            app, ["slide-probe", "--encoder", encoder, "--features", str(syn.root), "--labels", str(syn.labels_csv),
                  "--out", str(tmp_path / "probe"), "--repeats", "2", "--random-inits", "2", "--abmil-epochs", "1",
                  "--head-epochs", "2", "--layers", "-1"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert summary["protocol"] == {"probe": "head", "cv": "reference", "splits": 2, "layers": [-1], "concat_mean": True}
    assert summary["notes"][0].startswith("WARNING: 8 probed slides")
    names = [r["name"] for r in summary["results"]]
    assert names[:3] == [
        "pretrained (slide_encoder.pt)", "random-init encoder (init seed 0)", "random-init encoder (init seed 1)"
    ]  # fmt: skip
    assert summary["labels"] == ["label0", "label1"] and summary["n_slides"] == 12
    assert summary["encoder_format"] == "wsistream" and summary["scan"]["order"] == "row_major"
    has_abmil = "ABMIL (wsistream.mil)" in names
    assert has_abmil or any("ABMIL baseline skipped" in n for n in summary["notes"])
    for r in summary["results"]:
        assert 0.0 <= r["auroc_mean"] <= 1.0 and set(r["per_label_auroc_std"]) == {"label0", "label1"}
    assert (tmp_path / "probe" / "probe_scores.csv").read_text().count("\n") == 1 + 2 * 2 * len(names)
    assert "label1" in res.output and "macro" in res.output and "AUPRC" in res.output

    kfold = runner.invoke(
        app, ["slide-probe", "--encoder", encoder, "--features", str(syn.root), "--labels", str(syn.labels_csv),
              "--out", str(tmp_path / "probe-kfold"), "--probe", "logreg", "--cv", "kfold", "--folds", "4",
              "--no-abmil", "--random-inits", "0", "--layers", "-1"],
    )  # fmt: skip
    assert kfold.exit_code == 0, kfold.output
    result = json.loads((tmp_path / "probe-kfold" / "probe.json").read_text())["results"]
    assert len(result) == 1 and result[0]["repeats"] == 4
    bad = runner.invoke(
        app, ["slide-probe", "--encoder", encoder, "--features", str(syn.root), "--labels", str(syn.labels_csv),
              "--out", str(tmp_path / "p3")],
    )  # fmt: skip
    assert bad.exit_code != 0 and "the encoder has 1 layers" in bad.output  # default -4..-1 needs >= 4 layers


def test_the_relative_encoder_is_pretrained_saved_and_probed_from_the_cli(tmp_path):
    from wsistream.slide_ssl.probe import load_slide_encoder

    syn = make_spatial_cohort(tmp_path / "feats", n_slides=8, dim=8, side=(6, 7), seed=0)
    runner = CliRunner()
    res = runner.invoke(
        app, ["slide-pretrain", "--features", str(syn.root), "--out", str(tmp_path / "run"), "--steps", "2",
              "--grid-stem", "3", "--no-absolute-positions", *TINY],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    encoder = load_slide_encoder(tmp_path / "run" / "slide_encoder.pt")
    assert encoder.cfg.grid_stem == 3 and not encoder.cfg.absolute_positions
    assert encoder.grid_stem is not None and encoder.grid_stem.conv.kernel_size == (3, 3)
    with pytest.warns(UserWarning, match="8 of the 8 probed slides were in its pretraining cohort"):
        res = runner.invoke(
            app, ["slide-probe", "--encoder", str(tmp_path / "run" / "slide_encoder.pt"), "--features", str(syn.root),
                  "--labels", str(syn.labels_csv), "--out", str(tmp_path / "probe"), "--repeats", "2",
                  "--probe", "logreg", "--layers", "-1"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["slide-pretrain", "--features", str(syn.root), "--out", str(tmp_path / "x"),
                              "--grid-stem", "2", *TINY])  # fmt: skip
    assert res.exit_code != 0 and "grid_stem=2; pass 0 (off) or an odd kernel size" in res.output


def test_bad_options_are_reported(tmp_path):
    syn = make_spatial_cohort(tmp_path / "feats", n_slides=4, dim=8, seed=0)
    runner = CliRunner()
    args = ["slide-pretrain", "--features", str(syn.root), "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--method", "byol"])
    assert res.exit_code != 0 and "pass one of dino, dinov2, dinov2-grid" in res.output
    res = runner.invoke(app, [*args, "--dilations", "1,x"])
    assert res.exit_code != 0 and "comma-separated integers" in res.output
    (tmp_path / "bad.csv").write_text("id\nslide_000\n")
    res = runner.invoke(app, [*args, "--exclude", str(tmp_path / "bad.csv")])
    assert res.exit_code != 0 and "'slide_id'" in res.output and "bad.csv" in res.output


def test_help_shows_every_preset_default():
    # rich markup swallowed "[preset: ...]" help texts; these defaults must survive rendering
    res = CliRunner().invoke(app, ["slide-pretrain", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for shown in (
        "dinov2-grid 32",
        "dinov2-grid 65536",
        "dino 5e-4 x B/256",
        "[1024,2048,4096,8192,16384]",
        "[1,2,4,8,16]",
    ):
        assert shown in text, shown


@pytest.mark.parametrize("command", ["slide-pretrain", "slide-probe"])
def test_every_optional_option_states_its_default(command):
    # typer prints "[default: X]" only for non-None defaults; an option whose default is None (preset- or
    # data-dependent) must state it in its help text, and the rendered help must keep it (rich markup
    # swallowed "[preset: ...]" once)
    import typer.main

    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    text = " ".join(res.output.replace("│", " ").split())
    for p in cmd.params:
        if p.required or p.name == "help":
            continue
        if p.default is None:
            assert "default" in p.help or "[" in p.help, f"--{p.name} states no default"
            assert " ".join(p.help.split()[-3:]) in text, f"--{p.name}: help text lost in rendering"
        elif isinstance(p.default, bool):
            flag = (p.opts if p.default else p.secondary_opts)[0].lstrip("-")
            assert f"[default: {flag}]" in text, f"--{p.name}"
        else:
            assert f"[default: {p.default}]" in text, f"--{p.name}"


GIGAPATH_WEIGHTS = Path(__file__).parent / "fixtures" / "gigapath_tiny_slide_encoder.pth"


def test_a_prov_gigapath_file_is_probed_in_reference_mode(tmp_path):
    """The seed's "Prov-GigaPath full model (linear probe)" row: the released file format, found by itself."""
    from wsistream.slide_ssl import load_gigapath_slide_encoder
    from wsistream.slide_ssl.probe import load_slide_encoder, slide_encoder_format

    assert slide_encoder_format(GIGAPATH_WEIGHTS) == "gigapath"
    enc = load_slide_encoder(GIGAPATH_WEIGHTS)
    assert enc.cfg.mode == "reference" and not enc.training
    ref = load_gigapath_slide_encoder(GIGAPATH_WEIGHTS).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in enc.state_dict().items()) and enc.state_dict().keys() == ref.keys()
    with pytest.raises(ValueError, match=r"neither a slide_encoder\.pt nor a slide_ssl checkpoint"):
        load_slide_encoder(GIGAPATH_WEIGHTS, encoder_format="wsistream")

    syn = make_spatial_cohort(tmp_path / "feats", n_slides=8, dim=16, n_labels=1, side=(5, 6), seed=0)
    res = CliRunner().invoke(
        app, ["slide-probe", "--encoder", str(GIGAPATH_WEIGHTS), "--features", str(syn.root), "--labels",
              str(syn.labels_csv), "--out", str(tmp_path / "probe"), "--repeats", "2", "--random-inits", "1",
              "--no-abmil", "--head-epochs", "2", "--layers", "-2,-1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert summary["encoder_format"] == "gigapath" and summary["n_slides"] == 8
    assert summary["scan"] == {"tile_size": 256, "order": "file"}  # prov-gigapath's coords_to_pos frame
    assert summary["results"][0]["name"] == "pretrained (gigapath_tiny_slide_encoder.pth)"
    bad = CliRunner().invoke(
        app, ["slide-probe", "--encoder", str(GIGAPATH_WEIGHTS), "--features", str(syn.root), "--labels",
              str(syn.labels_csv), "--out", str(tmp_path / "p2"), "--encoder-format", "clam"],
    )  # fmt: skip
    assert bad.exit_code != 0 and "--encoder-format must be" in bad.output
