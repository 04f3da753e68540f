"""The Triton compositing kernels compiled ahead of time for sm_90 (H100 / H200), without a GPU:
registers, spills and the specialisation each launch would compile.

Each kernel is bound to the arguments ``triton_backend`` launches it with (small CPU tensors of
the right dtypes; only their dtypes and alignment matter), through Triton's own JIT binder for an
sm_90 target, so the specialisation key is the one a GPU launch computes: two image sizes with
the same key share one compiled kernel. The cubin's resources come from ``ptxas -v`` run on the
kernel's PTX with the flags Triton uses (``n_spills`` as the driver reports it: local-memory bytes
per thread / 4).

    python bench/triton_compile_report.py [--tile-sizes 16 8] [--channels 3 4 32] [--sizes 40x32 550x802]

Prints one line per (kernel, tile size, channels, image size) and whether the image sizes of a
(kernel, tile size, channels) share one variant. Needs the triton package (no GPU, no
TRITON_INTERPRET).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SM90 = (90, 32)  # compute capability, warp size


def _target():
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", *SM90)


def launch_args(kernel_name: str, tile_size: int, n_channels: int, width: int, height: int, n_splats: int = 64):
    """(positional args, launch options) with which ``triton_backend`` launches ``kernel_name``
    ("forward" / "backward") for one camera of ``width`` x ``height`` and ``n_splats`` splats;
    CPU tensors (the binder reads dtypes and pointer alignment only)."""
    import torch

    from gaussian_renderer import triton_backend as tb
    from gaussian_renderer.tiles import bin_gaussians

    C, N, D = 1, n_splats, n_channels
    means2d = torch.rand(C, N, 2) * torch.tensor([width, height])
    radii = torch.full((C, N, 2), 3, dtype=torch.int32)
    depths = torch.rand(C, N) + 1.0
    visible = torch.ones(C, N, dtype=torch.bool)
    n_tiles = C * -(-width // tile_size) * -(-height // tile_size)
    isects = bin_gaussians(means2d, radii, depths, visible, width, height, tile_size,
                           index_dtype=tb.isect_index_dtype(C * N, n_tiles, D))
    binning = tb._Binning(isects, C, width, height, tile_size)
    table = torch.zeros(C * N + 1, 10)
    feats = torch.zeros(C * N, D)
    cfg = tb._launch_config(tile_size, D)
    common = (table, feats, binning.isect, binning.offsets, binning.counts)
    if kernel_name == "forward":
        args = common + (torch.zeros(C, height, width, D), torch.zeros(C, height, width))
    else:
        args = common + (torch.zeros(C, height, width, D), torch.zeros(C, height, width),
                         torch.zeros(C * N, tb._G_COLS), torch.zeros(C * N, D))
    return args + binning.layout_args(D), cfg


def specialise(kernel, args, cfg):
    """What a launch of ``kernel(*args, **cfg)`` on an sm_90 GPU would compile: (cache key,
    ASTSource, options dict). Equal keys = one compiled kernel."""
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import compute_cache_key, create_function_from_signature

    backend = make_backend(_target())
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **cfg)
    key = compute_cache_key({}, specialization, options)
    options, signature, constexprs, attrs = kernel._pack_args(backend, dict(cfg), bound, specialization, options)
    return key, ASTSource(kernel, signature, constexprs, attrs), options.__dict__


def compile_sm90(src, options):
    """Compile an ASTSource to an sm_90 cubin (no GPU needed)."""
    import triton

    return triton.compile(src, target=_target(), options=options)


def ptxas_resources(ptx: str) -> dict:
    """Registers and spills of ``ptx`` assembled for sm_90a with Triton's ptxas and flags:
    {"n_regs", "n_spills" (local bytes / 4, as the CUDA driver reports them to Triton),
    "spill_store_bytes", "spill_load_bytes", "stack_bytes"}."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        Path(src).write_text(ptx)
        proc = subprocess.run([get_ptxas(SM90[0]).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                               "--gpu-name=sm_90a", src, "-o", os.path.join(tmp, "k.o")],
                              capture_output=True, text=True, check=True)
    log = proc.stdout + proc.stderr

    def num(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    stack = num(r"(\d+) bytes stack frame")
    return {"n_regs": num(r"Used (\d+) registers"), "n_spills": stack // 4, "stack_bytes": stack,
            "spill_store_bytes": num(r"(\d+) bytes spill stores"), "spill_load_bytes": num(r"(\d+) bytes spill loads")}


def report(tile_sizes, channels, sizes, out=print) -> list:
    """Compile every (kernel, tile size, channels, image size); print and return one record each."""
    from gaussian_renderer import triton_kernels as tk

    kernels = {"forward": tk.composite_forward_kernel, "backward": tk.composite_backward_kernel}
    records = []
    for name, kernel in kernels.items():
        for ts in tile_sizes:
            for d in channels:
                keys = set()
                for (w, h) in sizes:
                    args, cfg = launch_args(name, ts, d, w, h)
                    key, src, options = specialise(kernel, args, cfg)
                    keys.add(key)
                    res = ptxas_resources(compile_sm90(src, options).asm["ptx"])
                    constexprs = {k: v for k, v in cfg.items() if k != "num_warps"}
                    rec = dict(kernel=name, tile_size=ts, channels=d, size=f"{w}x{h}", num_warps=cfg["num_warps"],
                               constexprs=constexprs, **res)
                    records.append(rec)
                    out(f"{name:8s} tile {ts:2d} D {d:2d} {w:4d}x{h:<4d} {cfg['num_warps']} warps {constexprs}: "
                        f"{res['n_regs']} registers, {res['n_spills']} spills ({res['spill_store_bytes']} B spill "
                        f"stores, {res['spill_load_bytes']} B spill loads, {res['stack_bytes']} B stack)")
                out(f"{name:8s} tile {ts:2d} D {d:2d}: {len(keys)} compiled variant(s) for {len(sizes)} image sizes")
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tile-sizes", type=int, nargs="+", default=[16, 8])
    ap.add_argument("--channels", type=int, nargs="+", default=[3, 4, 32])
    ap.add_argument("--sizes", nargs="+", default=["40x32", "550x802"], help="image sizes WxH")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter compiles nothing")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in a.sizes]
    report(a.tile_sizes, a.channels, sizes)


if __name__ == "__main__":
    main()
