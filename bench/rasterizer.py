"""Benchmark the torch rasterizer backend: forward and forward+backward time, peak memory.

Scenes resemble head avatars: splats near the surface of a ~0.1 m blob 1 m in front of the camera,
scales of a few mm, fx ~= 3.7 * image width (NeRSemble-like). Each configuration runs in its own
subprocess so that the CPU peak (``ru_maxrss`` above the pre-render resident set) is not polluted
by earlier runs.

    python bench/rasterizer.py [--device cpu|cuda] [--runs 7] [--backend torch] [--threads N] [--tile-size 16]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = [
    # (splats, width, height, with backward)
    (1_000, 128, 128, True),
    (5_000, 128, 128, True),
    (20_000, 128, 128, True),
    (1_000, 110, 160, True),
    (5_000, 110, 160, True),
    (20_000, 110, 160, True),
    (100_000, 550, 802, False),
]


def make_scene(n, width, height, device, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, 3, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    radius = 0.1 * (0.8 + 0.2 * torch.rand(n, 1, generator=g))  # a shell: splats near the surface
    means = dirs * radius + torch.tensor([0.0, 0.0, 1.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(torch.log(torch.tensor(1e-3)).item(),
                                                  torch.log(torch.tensor(5e-3)).item(), generator=g))
    opacities = torch.empty(n).uniform_(0.1, 1.0, generator=g)
    colors = torch.rand(n, 3, generator=g)
    fx = 3.7 * width
    K = torch.tensor([[[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]]])
    viewmats = torch.eye(4)[None]
    bg = torch.ones(1, 3)
    return [t.to(device) for t in (means, quats, scales, opacities, colors, viewmats, K, bg)]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_single(n, width, height, backward, device, runs, backend, tile_size=16):
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from gaussian_renderer import rasterize

    means, quats, scales, opac, colors, viewmats, K, bg = make_scene(n, width, height, device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.synchronize()
        base_gpu = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_bytes()

    def fwd():
        with torch.no_grad():
            out = rasterize(means, quats, scales, opac, colors, viewmats, K, width, height,
                            backgrounds=bg, backend=backend, tile_size=tile_size)
        sync()
        return out

    leaves = [means, quats, scales, opac, colors]

    def fwd_bwd():
        ins = [t.detach().requires_grad_(True) for t in leaves]
        img, alpha, meta = rasterize(*ins, viewmats, K, width, height, backgrounds=bg, backend=backend,
                                     tile_size=tile_size)
        (img.sum() + 0.5 * alpha.sum()).backward()
        sync()
        return meta

    def timed(fn):
        fn()  # warm-up
        fn()
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return [statistics.median(ts), min(ts)]

    _, _, meta = fwd()
    result = {
        "splats": n, "width": width, "height": height,
        "visible": int(meta["visible"].sum()), "isects": int(meta.get("n_isects", -1)),
        "fwd_s": timed(fwd),
        "fwd_bwd_s": timed(fwd_bwd) if backward else None,
    }
    if cuda:
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    else:
        result["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss) / 2**20
    return result


def main():
    from gaussian_renderer import backend_choices, backend_choices_text

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--backend", default="torch", choices=backend_choices(),
                    help=f"rasterizer: {backend_choices_text()} (default torch)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--tile-size", type=int, default=16, help="tile edge in pixels (default 16)")
    ap.add_argument("--only", type=int, default=-1, help="run a single configuration index")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.single:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        n, w, h, b = json.loads(args.single)
        print(json.dumps(run_single(n, w, h, b, args.device, args.runs, args.backend, args.tile_size)))
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    dev_desc = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                else f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch threads")
    print(f"# rasterizer benchmark: backend={args.backend} device={args.device} ({dev_desc}), "
          f"tile_size={args.tile_size}, torch {torch.__version__}")
    print(f"# times in ms: median (min) of {args.runs} runs after 2 warm-ups; fwd+bwd = render + backward of "
          "img.sum() + 0.5 alpha.sum() w.r.t. means, quats, scales, opacities, colours")
    print("# peak = "
          + ("torch.cuda.max_memory_allocated above the pre-render allocation" if args.device.startswith("cuda")
             else "ru_maxrss above the pre-render resident set (fresh process per row)"))
    hdr = (f"| {'splats':>7} | {'image (WxH)':>11} | {'tile isects':>11} | {'forward (min)':>17} "
           f"| {'fwd+bwd (min)':>17} | {'peak MB':>7} |")
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    configs = CONFIGS if args.only < 0 else [CONFIGS[args.only]]
    for n, w, h, b in configs:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", json.dumps([n, w, h, b]),
               "--device", args.device, "--runs", str(args.runs), "--backend", args.backend,
               "--threads", str(args.threads), "--tile-size", str(args.tile_size)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {n:>7} | {w}x{h:<7} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr else '?'}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        def ms(t):
            return f"{t[0] * 1000:6.1f} ({t[1] * 1000:6.1f})" if t is not None else "-"

        print(f"| {n:>7} | {f'{w}x{h}':>11} | {r['isects']:>11} | {ms(r['fwd_s']):>17} | {ms(r['fwd_bwd_s']):>17} "
              f"| {r['peak_mb']:7.0f} |", flush=True)


if __name__ == "__main__":
    main()
