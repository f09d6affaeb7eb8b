"""Extraction reader and DataLoader scaling beside the box's own 2-process decode scaling (issue 15).

``python benchmarks/extract_scaling.py SLIDE [--tiles 1200] [--passes 2]``

On the first ``--tiles`` tissue tiles of ``SLIDE`` (DeepZoom tiling, grid order, batch 32, device resize):
the decode ceiling (libjpeg-turbo over exactly those stored tiles), the reader alone, the loader with 1
and 2 workers, and then the decode ceiling run in **two processes at once** against one: how far the
machine itself scales two CPU-bound decoders (memory bandwidth, shared caches, SMT siblings, frequency).
A loader's "2 workers ÷ 1" can only be judged against that number.  The model is a tiny randomly
initialised ViT of the Phikon architecture written to a temporary folder (no download, no GPU needed);
its forward pass is not timed (see ``wsistream extract-bench`` for the model and full-path rows).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path


def _dataset(slide: str, n_tiles: int, device_resize: bool = False):  # type: ignore[no-untyped-def]
    from wsistream.backends import OpenSlideBackend
    from wsistream.features.bench import grid_prefix
    from wsistream.features.dataset import SlideTileDataset
    from wsistream.features.extract import plan_slide_tiles
    from wsistream.features.tiling import DeepZoomTiling

    backend = OpenSlideBackend()
    tiles, _ = plan_slide_tiles(slide, DeepZoomTiling(), backend=backend)
    return SlideTileDataset(grid_prefix(tiles, n_tiles), backend, device_resize=device_resize)


def _ceiling(slide: str, n_tiles: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    from wsistream.features.bench import decode_ceiling

    dataset = _dataset(slide, n_tiles)
    out.put(decode_ceiling(dataset)[0])
    dataset.close()


def _ceilings_at_once(slide: str, n_tiles: int, processes: int) -> list[float]:
    """The decode ceiling in ``processes`` processes started together (spawned: nothing inherited)."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_ceiling, args=(slide, n_tiles, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return rates


def _tiny_phikon(folder: Path) -> str:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    patch_size=32, image_size=224, layer_norm_eps=1e-6)  # fmt: skip
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide")
    ap.add_argument("--tiles", type=int, default=1200)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()

    import torch

    from wsistream.features.bench import loader_rate, reader_rate
    from wsistream.features.encoders import load_encoder
    from wsistream.features.extract import ExtractionConfig, TileEncoderRunner

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder("phikon", _tiny_phikon(Path(tmp)))
        runner = TileEncoderRunner(
            encoder, ExtractionConfig(batch_size=32, num_workers=1, device="cpu", resize="device")
        )
        for _ in range(args.passes):
            row: dict[str, float] = {}
            (row["ceiling"],) = _ceilings_at_once(args.slide, args.tiles, 1)
            reader = _dataset(args.slide, args.tiles, runner.device_resize)
            row["reader"] = reader_rate(reader, 32)[0]
            reader.close()
            for workers in (1, 2):
                row[f"loader_{workers}"] = loader_rate(
                    runner, _dataset(args.slide, args.tiles, runner.device_resize), workers
                )
            two = _ceilings_at_once(args.slide, args.tiles, 2)
            (one,) = _ceilings_at_once(args.slide, args.tiles, 1)
            row["ceiling_2_processes_total"] = sum(two)
            row["reader_over_ceiling"] = row["reader"] / row["ceiling"]
            row["loader_2_over_1"] = row["loader_2"] / row["loader_1"]
            row["box_decode_2_over_1"] = sum(two) / one
            row["loader_scaling_over_box_scaling"] = row["loader_2_over_1"] / row["box_decode_2_over_1"]
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
