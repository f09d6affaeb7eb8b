"""torchrun with two CPU processes (gloo): ranks stay in sync and rank 0 alone writes the outputs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, os, sys
    import torch
    from wsistream.slide_ssl.config import EncoderConfig
    from wsistream.slide_ssl.presets import method_preset
    from wsistream.slide_ssl.objective import SSLModel
    from wsistream.slide_ssl.train import pretrain

    sums = []  # student parameter checksum after every optimizer step, per rank
    real_update = SSLModel.update_teacher

    def update_teacher(self, m):
        sums.append(float(sum(p.double().sum() for p in self.student.parameters())))
        real_update(self, m)

    SSLModel.update_teacher = update_teacher

    torch.set_num_threads(1)
    features, out, report = sys.argv[1:4]
    enc = EncoderConfig(in_dim=8, dim=32, depth=1, heads=4, ffn_dim=64, segment_lengths=(32, 128), dilations=(1, 2))
    cfg = method_preset("dinov2", steps=3, batch_size=1, checkpoint_every=2, encoder=enc)
    cfg = dataclasses.replace(
        cfg,
        crops=dataclasses.replace(cfg.crops, n_local=2, max_tiles=64, min_tiles=8),
        objective=dataclasses.replace(cfg.objective, out_dim=16, head_hidden_dim=32, head_bottleneck_dim=16),
        optim=dataclasses.replace(cfg.optim, grad_accum=2),
    )
    res = pretrain(features, out, cfg, progress=False)
    rank = int(os.environ["RANK"])
    with open(f"{report}.{rank}", "w") as fh:
        json.dump({"world": int(os.environ["WORLD_SIZE"]), "losses": res.losses, "sums": sums}, fh)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run(feature_dir, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(script), str(feature_dir), str(tmp_path / "out"), str(tmp_path / "rep"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rep.{r}").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 3  # logged values are all-reduced
    assert len(r0["sums"]) == 3 and r0["sums"] == r1["sums"]  # same init, all-reduced gradients
    assert (tmp_path / "out" / "loss.csv").exists() and (tmp_path / "out" / "slide_encoder.pt").exists()
