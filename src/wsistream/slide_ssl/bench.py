"""Peak memory and time of the slide encoder against the number of tiles.

Run ``python -m wsistream.slide_ssl.bench`` (options: ``--help``). Every
measurement runs in a fresh subprocess: the peak memory column is the peak
resident set size during the first call *above* the resident size just before
it (model, inputs and imports excluded) on CPU, or the growth of
``torch.cuda.max_memory_allocated`` on GPU; the time column is the mean of
``--repeats`` later calls. ``dense`` is the same encoder with
one branch whose segment covers the sequence (exact full attention).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * (resource.getpagesize() // 1024)


def _measure(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from wsistream.slide_ssl.config import EncoderConfig
    from wsistream.slide_ssl.encoder import SlideEncoder

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    n = args.tokens[0]
    segs = tuple(args.segments) if not args.dense else (n + 1,)
    dils = tuple(args.dilations) if not args.dense else (1,)
    cfg = EncoderConfig(
        in_dim=args.in_dim,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        ffn_dim=4 * args.dim,
        segment_lengths=segs,
        dilations=dils,
        dropout=0.0,
    )
    dev = torch.device(args.device)
    enc = SlideEncoder(cfg).to(dev)
    x = torch.randn(1, n, args.in_dim, device=dev)
    side = int(n**0.5) + 1
    k = torch.arange(n, device=dev)
    pos = torch.stack([k % side, k // side], -1).unsqueeze(0)

    def run() -> None:
        if args.backward:
            enc.train()
            enc(x, pos).cls.sum().backward()
        else:
            enc.eval()
            with torch.no_grad():
                enc(x, pos)

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib() * 1024
    run()  # first call: its peak memory is reported
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    t0 = time.perf_counter()
    for _ in range(args.repeats):  # later calls: their mean time is reported
        run()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": (time.perf_counter() - t0) / args.repeats, "peak_mib": max(peak, 0) / 2**20}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--in-dim", type=int, default=1536)
    p.add_argument("--segments", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--dense-up-to", type=int, default=16384, help="also time dense attention up to this many tokens")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    return p


def _child_command(args: argparse.Namespace) -> list[str]:
    """The ``--one`` command line of a measurement with the encoder of ``args`` (without tokens and mode)."""
    flags = {"--dim": args.dim, "--depth": args.depth, "--heads": args.heads, "--in-dim": args.in_dim}
    flags |= {"--device": args.device, "--threads": args.threads, "--repeats": args.repeats}
    cmd = [sys.executable, "-m", "wsistream.slide_ssl.bench", "--one"]
    for flag, value in flags.items():
        cmd += [flag, str(value)]
    return [*cmd, "--segments", *map(str, args.segments), "--dilations", *map(str, args.dilations)]


def main(argv: list[str] | None = None) -> None:
    """Print a Markdown table of time and peak memory for each token count and mode."""
    args = _parser().parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args)))
        return
    print(
        f"encoder: dim={args.dim} depth={args.depth} heads={args.heads} in_dim={args.in_dim} "
        f"segments={args.segments} dilations={args.dilations} device={args.device} threads={args.threads}"
    )
    print("| tokens | attention | pass | time (s) | peak extra memory (MiB) |")
    print("|---:|---|---|---:|---:|")
    base = _child_command(args)
    for n in args.tokens:
        for dense in (False, True):
            if dense and n > args.dense_up_to:
                continue
            for backward in (False, True):
                cmd = (
                    [*base, "--tokens", str(n)] + (["--dense"] if dense else []) + (["--backward"] if backward else [])
                )
                res = json.loads(
                    subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                )
                print(
                    f"| {n} | {'dense' if dense else 'dilated'} | {'fwd+bwd' if backward else 'forward'} "
                    f"| {res['seconds']:.2f} | {res['peak_mib']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
