"""Issue 15's accelerator rows in one short call: extraction with a ViT-B/16 on a GPU, beside the ceilings.

A session that draws a device machine (``status``: ``can_start_another``) runs this once, through
``benchmarks/device_extract.sh`` (which installs the wheels the device image lacks first); a session
without one can run it on CPU with ``--quick --device cpu`` to check that it works
(``tests/features/test_device_extract.py`` does).

On each of two slides written by our synthetic writer (40x Aperio layout, 0.252 µm/px, levels 1/4/16;
and 20x, 0.5 µm/px; both 40000×30000; 8000×6000 with ``--quick``), DeepZoom tiles at 0.5 µm/px in grid order:

* the decode ceiling (libjpeg-turbo over each stored tile the tiles touch, once) and the reader alone,
  in one process: what one core gives;
* the device resize checked against Pillow on the first batch (``render_batch`` on the device vs the
  worker's Pillow thumbnail: max |diff| and the share of differing values; both 0 expected);
* the model alone (a randomly initialised ViT-B/16 in the Phikon layout, bf16 autocast on CUDA);
* the loader and the full path (:func:`embed_dataset`) for each ``--workers`` count.

The issue's target is "full path ≥ 0.8× model alone with enough workers"; where even all workers decode
slower than the model runs, the report says so (``loader_bound``) with the per-core ceiling, since no
reader can then feed the model (the 40x slide decodes ~3.8 stored tiles per tile).  Writes
``device_extract.json`` and prints a Markdown table.

    python benchmarks/device_extract.py --out OUT [--device cuda] [--workers 4 8 15] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def _write(args: tuple[str, int, int, float, int, int]) -> str:
    from wsistream.synthetic import write_synthetic_cohort

    root, width, height, mpp, mag, seed = args
    (path,) = write_synthetic_cohort(
        root, 1, width=width, height=height, mpp=mpp, app_mag=mag, downsamples=(1, 4, 16), seed=seed
    )
    return str(path)


def _vit_b16(folder: Path, quick: bool) -> str:
    """A randomly initialised ViT-B/16 at 224 px in the Phikon layout (``--quick``: a 2-layer ViT)."""
    from transformers import ViTConfig, ViTModel

    size = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    cfg = ViTConfig(image_size=224, patch_size=16, **(size if quick else {}))  # ViTConfig() is ViT-B/16
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


def _resize_check(tiles: Any, backend: Any, device: Any, batch_size: int) -> dict[str, Any]:
    """Device ``render_batch`` of the first batch vs the same tiles thumbnailed by Pillow (the CPU path)."""
    import torch

    from wsistream.features.dataset import SlideTileDataset
    from wsistream.features.lanczos import render_batch

    reads = SlideTileDataset(tiles, backend, device_resize=True)
    batch = reads.batches(batch_size)[0]
    z_size = reads.device_size(batch[0])
    if z_size is None:
        reads.close()
        return {"checked": False, "why": "tiles are read at their output size (no thumbnail)"}
    raw = torch.stack([reads[i][0] for i in batch]).to(device)
    on_device = render_batch(raw, z_size, tiles.tile_size).cpu()
    pillow = torch.stack([torch.from_numpy(reads.read(i)) for i in batch])
    reads.close()
    diff = (on_device.int() - pillow.int()).abs()
    return {
        "checked": True,
        "tiles": len(batch),
        "max_abs_diff": int(diff.max()),
        "share_differing": float((diff > 0).float().mean()),
    }


def _slide_rows(slide: str, encoder: Any, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    from wsistream.backends import OpenSlideBackend
    from wsistream.features.bench import decode_ceiling, full_rate, grid_prefix, loader_rate, model_rate, reader_rate
    from wsistream.features.dataset import SlideTileDataset
    from wsistream.features.extract import ExtractionConfig, TileEncoderRunner, plan_slide_tiles
    from wsistream.features.tiling import DeepZoomTiling

    backend = OpenSlideBackend()
    tiles, _ = plan_slide_tiles(slide, DeepZoomTiling(), backend=backend)
    tiles = grid_prefix(tiles, args.max_tiles)
    runner = TileEncoderRunner(encoder, ExtractionConfig(batch_size=args.batch_size, device=args.device))

    def fresh() -> SlideTileDataset:
        return SlideTileDataset(tiles, backend, device_resize=runner.device_resize)

    out: dict[str, Any] = {"slide": Path(slide).name, "tiles": len(tiles), "device": str(runner.device)}
    probe = fresh()
    out["ceiling_tiles_per_s"], out["stored_tiles"] = decode_ceiling(probe)
    out["reader_tiles_per_s"] = reader_rate(probe, args.batch_size)[0]
    out["resize_check"] = _resize_check(tiles, backend, runner.device, args.batch_size)
    out["model_tiles_per_s"] = model_rate(runner, probe, max(len(tiles), 8 * args.batch_size))
    probe.close()
    out["workers"] = {}
    for workers in args.workers:
        if time.monotonic() > deadline:
            out["workers"][str(workers)] = {"skipped": "past --budget-s"}
            continue
        cfg = ExtractionConfig(batch_size=args.batch_size, num_workers=workers, device=args.device)
        run = TileEncoderRunner(encoder, cfg)
        loader = loader_rate(run, fresh(), workers)
        dataset = fresh()
        full = full_rate(run, dataset)
        dataset.close()
        out["workers"][str(workers)] = {
            "loader_tiles_per_s": loader,
            "full_tiles_per_s": full,
            "full_vs_model": full / out["model_tiles_per_s"],
            "loader_bound": loader < out["model_tiles_per_s"],
        }
    return out


def _table(report: dict[str, Any]) -> str:
    lines = [
        "| slide | tiles | ceiling (1 core) | reader | model alone | workers | loader | full | full ÷ model |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["slides"]:
        for w, r in s["workers"].items():
            if "skipped" in r:
                continue
            lines.append(
                f"| {s['slide']} | {s['tiles']} | {s['ceiling_tiles_per_s'] or 0:.0f} | {s['reader_tiles_per_s']:.0f}"
                f" | {s['model_tiles_per_s']:.0f} | {w} | {r['loader_tiles_per_s']:.0f} | {r['full_tiles_per_s']:.0f}"
                f" | {r['full_vs_model']:.2f}{' (loader-bound)' if r['loader_bound'] else ''} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8, 15])
    parser.add_argument("--max-tiles", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip worker counts after this many seconds")
    parser.add_argument("--quick", action="store_true", help="small slides and a 2-layer ViT (a CPU check)")
    args = parser.parse_args()
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from wsistream.features.encoders import load_encoder

    side = (8000, 6000) if args.quick else (40000, 30000)
    with tempfile.TemporaryDirectory(prefix="wsistream-device-") as tmp:
        jobs = [(tmp, *side, 0.252, 40, 40), (tmp, *side, 0.5, 20, 20)]
        with mp.get_context("spawn").Pool(2) as pool:  # the two slides written at once
            slides = pool.map(_write, jobs)
        written_s = time.monotonic() - start
        encoder = load_encoder("phikon", _vit_b16(Path(tmp) / "vit", args.quick))
        report: dict[str, Any] = {
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "encoder": "ViT-B/16 (random init, Phikon layout)" if not args.quick else "2-layer ViT (quick)",
            "batch_size": args.batch_size,
            "slides_written_s": round(written_s, 1),
            "slides": [],
        }
        for slide in slides:
            report["slides"].append(_slide_rows(slide, encoder, args, start + args.budget_s))
    report["elapsed_s"] = round(time.monotonic() - start, 1)
    (args.out / "device_extract.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "slides"}))
    for s in report["slides"]:
        print(s["slide"], "resize check:", s["resize_check"])
    print(_table(report))


if __name__ == "__main__":
    main()
