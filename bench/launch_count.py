"""Kernels one avatar frame launches, counted on the CPU: the frame rate of a fast GPU is bound by
them (each launch costs the host microseconds), not by the compositing (issue 22, part 4).

The frame is the product's (``scene.rendering.render_avatar``) through the Triton backend with a
fixed intersection capacity, as a GPU renders it (and a CUDA graph captures it): decoders,
projection, binning, the two compositing kernels. On the CPU the Triton backend takes CPU tensors
only in Triton's interpreter mode (this script sets ``TRITON_INTERPRET=1`` before triton is
imported).

What is counted (:class:`LaunchCounter`), a stand-in for CUDA kernel launches:

- every ATen operator the dispatcher runs (a ``TorchDispatchMode``, as ``tests/sync_audit.py``
  finds syncs), less those that launch nothing (views, allocations, metadata:
  ``gpu_check.NO_KERNEL_OPS``);
- every fused kernel of a ``torch.compile`` graph (inductor's C++ kernels, seen by the profiler:
  ``torch._inductor.config.cpp.enable_kernel_profile``, set on import) and the ATen operators the
  graph calls (matrix products...), which the dispatch mode sees;
- every Triton kernel call as one launch. The kernels are counted, not run: Triton's CPU
  interpreter would take many minutes per frame at 550x802, and what they write (the image) does
  not change what the frame launches.

    python bench/launch_count.py [--splats-per-triangle 12] [--compile] [--json OUT] [--data DIR]

Default: the full avatar (~100k splats, ``model.geometry.init_splats_per_triangle=12``, the
tensorial config) in a test frame of a synthetic subject at NeRSemble's 550x802 (the subject is
generated at 1/10 of that size into a scratch folder, or ``--data``, and its camera scaled up:
the count does not depend on the image size). ``--compile`` also counts the frame with the
decoders and the projection compiled (``render_avatar(compile=True)``; the first frame compiles,
which takes minutes on a small CPU). Prints the counts per part of the frame and the most frequent
operators; ``--json`` writes them.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported (see module doc)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Iterator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from gpu_check import NO_KERNEL_OPS  # noqa: E402

# Compiled C++ kernels name themselves to the profiler (a record per call): set before any compile.
inductor_config.cpp.enable_kernel_profile = True
NO_KERNEL = frozenset(name.removeprefix("aten::") for name in NO_KERNEL_OPS)
FUSED_MARK = "cpp_fused"  # inductor's CPU kernels: graph_<i>_cpp_fused_<ops>_<j>
TRITON_MARK = "triton kernel "
SUBJECT_ARGS = ["--downscale", "10", "--cameras", "9", "--timesteps", "2", "--test-timesteps", "1",
                "--free-timesteps", "1", "--train-sequences", "1"]
DOWNSCALE = 10


class LaunchCounter(TorchDispatchMode):
    """``with LaunchCounter() as c: ...`` then ``c.total`` and ``c.names`` (a Counter): the kernel
    launches of the block (module doc). ``torch.compile`` runs its graphs inside it (the mode
    ignores compile internals: compiling is not counted, running the graph is)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: Counter = Counter()
        self._profiler = None

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NO_KERNEL:
            self.names[name] += 1
        return func(*args, **(kwargs or {}))

    def add(self, name: str, n: int = 1) -> None:
        self.names[name] += n

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile
        self._profiler = profile(activities=[ProfilerActivity.CPU])
        self._profiler.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        self._profiler.__exit__(*exc)
        for event in self._profiler.events():
            if FUSED_MARK in event.name:
                self.names["compiled: " + event.name.split(FUSED_MARK, 1)[1].strip("_")] += 1
        return out

    @property
    def total(self) -> int:
        return sum(self.names.values())

    def compiled(self) -> int:
        """How many of the launches were fused kernels of compiled graphs."""
        return sum(n for name, n in self.names.items() if name.startswith("compiled: "))


@contextlib.contextmanager
def triton_kernels_counted(counter: LaunchCounter) -> Iterator[None]:
    """While active, each call of a Triton kernel of the backend counts as one launch and is not
    run (module doc). The kernel module's JIT functions are replaced (whatever their names) and
    restored on exit."""
    from gaussian_renderer.triton_backend import _kernels

    module = _kernels()
    kinds = tuple(cls for cls in _triton_function_classes())
    originals = {name: obj for name, obj in vars(module).items() if isinstance(obj, kinds)}

    class Counted:
        def __init__(self, name, fn):
            self.name, self.fn = name, fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                counter.add(TRITON_MARK + self.name)
            return launch

    for name, fn in originals.items():
        setattr(module, name, Counted(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def _triton_function_classes() -> list:
    from triton.runtime.jit import JITFunction
    classes = [JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction
        classes.append(InterpretedFunction)
    except ImportError:
        pass
    return classes


def count_frame(frame: Callable[[], object]) -> LaunchCounter:
    """The launches of one call of ``frame()`` (under no_grad; Triton kernels counted, not run)."""
    counter = LaunchCounter()
    with torch.no_grad(), triton_kernels_counted(counter), counter:
        frame()
    return counter


def avatar_frame(avatar, vertices, motion, viewmat, K, width, height, background,
                 compile: bool = False, headroom: float = 1.5) -> Callable[[], object]:
    """``frame()``: one Triton frame of ``avatar`` with a fixed intersection capacity (the first
    frame's pairs x ``headroom``, as GraphedAvatarRenderer sizes it), warmed up (kernels and
    graphs compiled, caches filled) before it is returned."""
    from scene.rendering import render_avatar

    options = {"compile": True} if compile else {}  # the option is new: the script also counts older code

    def render(capacity=None):
        return render_avatar(avatar, vertices, motion, viewmat, K, width, height, background,
                             backend="triton", isect_capacity=capacity, **options)

    with torch.no_grad(), triton_kernels_counted(LaunchCounter()):  # warm-up: kernels not run
        capacity = max(1024, int(int(render().meta["n_isects"]) * headroom))
        first = render(capacity)
        if bool(first.meta["isect_overflow"]):
            raise RuntimeError("the counted frame dropped (tile, splat) pairs")
    return lambda: render(capacity)


def full_avatar_inputs(data: Path, splats_per_triangle: int, quiet: bool = True) -> tuple:
    """(avatar, vertices, motion, viewmat, K, width, height, background) of a test frame
    of the synthetic subject in ``data`` (generated when missing) at 550x802."""
    from step_profile import build_trainer

    manifest = data / "synthetic_manifest.json"
    if not manifest.is_file():
        subprocess.run([sys.executable, str(REPO / "scripts/make_synthetic_subject.py"), "--out", str(data),
                        "--quiet", *SUBJECT_ARGS], check=True)
    paths = json.loads(manifest.read_text())["paths"]
    trainer = build_trainer(paths["subjects"]["s000"]["union"], paths["flame_model"], data / "model",
                            ["configs/tensorial.yaml"],
                            [f"model.geometry.init_splats_per_triangle={splats_per_triangle}", "densify.enabled=false"],
                            "cpu", "torch", iterations=1)
    trainer.loader.close()
    frame = (trainer.subject.frames["test"] or trainer.subject.frames["val"])[0]
    row = trainer.subject.timestep_row[frame.timestep]
    rows = trainer.row_index[row:row + 1]
    params = trainer.sequence.row_params(rows)
    trainer.avatar.set_step(None, 1)  # trained: everything on
    K = frame.K.clone()
    K[:2] *= DOWNSCALE
    with torch.no_grad():
        vertices = trainer.sequence.vertices(rows)[0]
    return (trainer.avatar, vertices, {k: v[0].detach() for k, v in params.items()}, frame.viewmat,
            K, frame.width * DOWNSCALE, frame.height * DOWNSCALE, trainer.background)


def report(counter: LaunchCounter, top: int = 12) -> dict:
    return {"launches": counter.total, "compiled_kernels": counter.compiled(),
            "top": [[name, n] for name, n in counter.names.most_common(top)]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Count the kernels one avatar frame launches (CPU stand-in).")
    p.add_argument("--splats-per-triangle", type=int, default=12, help="12: the full avatar (~100k splats)")
    p.add_argument("--compile", action="store_true", help="also count the frame with render_avatar(compile=True)")
    p.add_argument("--data", help="folder of the synthetic subject (generated when missing; default: a scratch one)")
    p.add_argument("--json", help="also write the result here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("error: run with TRITON_INTERPRET=1 (or unset: the script sets it)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="launch_count_") as scratch:
        data = Path(args.data) if args.data else Path(scratch) / "data"
        inputs = full_avatar_inputs(data, args.splats_per_triangle)
        result = {"splats": len(inputs[0].gaussians), "width": inputs[5], "height": inputs[6],
                  "what": "ATen operators that launch a kernel + fused kernels of compiled graphs + Triton kernels, "
                          "one Triton frame with a fixed capacity (CPU)"}
        start = time.perf_counter()
        result["eager"] = report(count_frame(avatar_frame(*inputs)))
        result["eager"]["seconds_to_ready"] = time.perf_counter() - start
        if args.compile:
            start = time.perf_counter()
            frame = avatar_frame(*inputs, compile=True)
            ready = time.perf_counter() - start
            result["compiled"] = report(count_frame(frame))
            result["compiled"]["seconds_to_ready"] = ready
    print(f"{result['splats']} splats at {result['width']}x{result['height']}: kernel launches per frame "
          "(Triton backend, fixed capacity; CPU stand-in count)")
    for key in ("eager", "compiled"):
        if key in result:
            r = result[key]
            print(f"  {key:9s} {r['launches']:5d}  ({r['compiled_kernels']} fused kernels of compiled graphs); "
                  f"most frequent: " + ", ".join(f"{n} x{c}" for n, c in r["top"][:8]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
