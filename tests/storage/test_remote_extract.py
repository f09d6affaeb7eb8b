"""``wsistream extract`` over an S3 prefix writes the features a local copy gives (through the storage layer)."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest


def test_cli_extract_from_an_s3_prefix_equals_the_local_file(s3_slides, proxy, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from transformers import ViTConfig, ViTModel
    from typer.testing import CliRunner

    from wsistream.cli.main import app
    from wsistream.features.formats import read_features
    from wsistream.storage.loopback import LOOPBACK_CREDENTIALS

    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=224,
        patch_size=32, layer_norm_eps=1e-6, qkv_bias=True,
    )  # fmt: skip
    ViTModel(config, add_pooling_layer=True).save_pretrained(tmp_path / "vit")  # random weights, Phikon-shaped
    # what FSSPEC_S3_* variables give (fsspec reads them at import, so set its config directly)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": proxy.endpoint_url, **LOOPBACK_CREDENTIALS})
    monkeypatch.setenv("WSISTREAM_CACHE_DIR", str(tmp_path / "cache"))
    local, _ = s3_slides["CMU-1-Small-Region.svs"]

    def extract(slides: str, out: str, *backend: str) -> np.ndarray:
        run = CliRunner().invoke(
            app,
            ["extract", "--encoder", "phikon", "--weights", str(tmp_path / "vit"), "--slides", slides, "--out", out,
             "--format", "h5", "--n-tiles", "4", "--batch-size", "2", "--num-workers", "0", "--device", "cpu",
             *backend, "--no-progress", "--cohort", "c"],
        )  # fmt: skip
        assert run.exit_code == 0, run.output
        found = read_features(tmp_path / out / "phikon" / "c" / "CMU-1-Small-Region.h5")
        return np.concatenate([found.coords.astype(np.float64), found.features.astype(np.float64)], axis=1)

    # no --backend: URLs are read through TiffSlide by default (OpenSlide reads local files only)
    remote = extract("s3://slides/cohort/*.svs", str(tmp_path / "s3"))  # also lists synthetic-40x.svs
    np.testing.assert_array_equal(remote, extract(local, str(tmp_path / "local"), "--backend", "tiffslide"))
