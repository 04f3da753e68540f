"""One prepared check of the GPU path: environment, each rasterizer backend's parity with the torch
reference, full-avatar rendering speed and training speed at NeRSemble's 550x802, and what the
Triton path costs on the device (registers, kernels per frame and step, ms per phase).

Writes ``OUT/gpu_check.json`` (every figure and every failure message) and ``OUT/gpu_check.md``
(the same as Markdown tables for docs/BENCHMARKS.md). A GPU session has 15 device-minutes in all
(machine start-up included, one call at most 10 minutes), so the check fits one call of at most
420 s, which leaves room to run it again if it fails: one total budget (``--budget``, default 350 s), split by :func:`plan`
into one cap per section, run in order of value. A section may use its cap plus what the sections
before it left unused, never more: it ends where the plan ends it, so every later section keeps
its whole cap (the backends and the tests run in subprocesses, killed at that point; a backend
writes its figures as it goes, so a time-out keeps what was measured). A section whose share of
the budget is below its minimum is recorded as skipped, with the reason. The plan, each section's
limit and the seconds it took are in the result.

Sections, in the order they run (default budget 350 s: caps 10 + 60 + 120 + 60 + 60, and 40 of the
torch backend's 80):
  environment  GPU, driver, torch and CUDA versions, nvcc and its CUDA version, ninja, gsplat and
               triton versions (cap 10 s);
  subject      a full-resolution synthetic subject (scripts/make_synthetic_subject.py --preset
               nersemble, 16 cameras at 550x802, 2 training timesteps; cap 60 s), which the backend
               sections need;
  triton       the headline backend, first so that nothing can starve it (cap 120 s);
  tests        the CUDA-only tests of the Triton and sync-free suites (tests/test_triton_backend.py,
               tests/test_sync_free_render.py) through pytest: the summary line and every failure
               (cap 60 s);
  methods      every built-in method's render speed (Table 1's FPS column): each method's paper
               config, untrained, on the first of the backends (triton by default) at the
               subject's resolution, the bound methods at the backend sections' splats per
               triangle, the free ones at as many splats; FPS, CUDA-graph FPS, ms per phase
               (``--methods``: which; none skips it; cap 60 s, shared evenly);
  torch        the reference backend on the GPU (cap 80 s);
  gsplat       only when asked (``--backends triton torch gsplat``), and only when ``ninja`` and an
               ``nvcc`` of torch's CUDA version are on the PATH (gsplat 1.5.3 compiles ~20 .cu
               files with ninja on first use); otherwise skipped with one line saying why. It does
               not fit the default budget: ``--budget 540`` gives it its minimum (150 s), ``--budget
               630`` its cap (240 s).

Each backend section records: available or the first line of why not; parity with the torch
backend on the CPU on the probe scene (image max abs difference, relative gradient error per
input); rendering of the full avatar (~100k splats: model.geometry.init_splats_per_triangle=12) at
550x802: FPS, ms per phase (decoders, rasterization), synchronised, after warm-up; the frame's
number of (tile, splat) pairs; the host-device syncs of one frame (CUDA's sync debug mode); the
device kernels launched per frame and per training step (torch.profiler; on the CPU the leaf ATen
operators instead, labelled so); training of the tensorial config: iterations per second, ms per
phase of the step, peak GPU memory, the syncs of one step. For triton also: the FPS of the frame
replayed as one CUDA graph (scene.rendering.GraphedAvatarRenderer), the syncs of a frame with a
fixed intersection capacity (must be 0), ms per phase (decoders, projection + binning,
compositing) of the eager frame and, on CUDA, inside the replayed graph (timing events captured
as graph nodes), and each compiled kernel's registers and spills. Frame and step counts shrink to
fit the section's cap (the counts used are recorded).

On a GPU machine with no network (python3 with torch, triton, numpy, scipy, scikit-learn, Pillow,
imageio, PyYAML, tqdm), gsplat and plyfile travel as wheels. Here, in the repository root:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl gsplat==1.5.3 plyfile==1.1.5

and there (the device tool's ``run`` with ``carry: [".whl"]`` and ``timeout_s: 420``, at most 420:
the budget's 350 s plus the install and a margin; a rerun on the still-warm machine reuses the
subject in /tmp/gpu_check_data and Triton's compiled kernels):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; \\
        python3 bench/gpu_check.py --budget 350 --data /tmp/gpu_check_data --out $OUT/gpu_check

On the CPU, the same code at tiny sizes (what tests/test_gpu_check.py runs, so it cannot rot; the
Triton kernels then run in Triton's interpreter, slowly: ``--backends torch`` for a quick look):

    python bench/gpu_check.py --device cpu --quick --out /tmp/gpu_check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

STARTED = time.perf_counter()  # a backend section's clock starts with its process, imports included
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# Sizes: full (a GPU machine) and quick (the CPU test). Frame and step counts are upper bounds: a
# backend section lowers them to fit its cap (see _fit). "tests": the files of the tests section
# (on the CPU only the sync-free suite, whose CUDA tests skip; the Triton suite would run its
# kernels in the interpreter for 20 s).
SIZES: dict[str, dict[str, Any]] = {
    "full": {"subject": ["--preset", "nersemble", "--timesteps", "2", "--test-timesteps", "1",
                         "--free-timesteps", "1", "--train-sequences", "1"],
             "splats_per_triangle": 12, "render_warmup": 5, "render_frames": 50, "train_warmup": 10,
             "train_steps": 50, "profile_frames": 3, "profile_steps": 2,
             "tests": ["tests/test_triton_backend.py", "tests/test_sync_free_render.py"]},
    "quick": {"subject": ["--downscale", "10", "--cameras", "9", "--timesteps", "2", "--test-timesteps", "1",
                          "--free-timesteps", "1", "--train-sequences", "1"],
              "splats_per_triangle": 1, "render_warmup": 1, "render_frames": 1, "train_warmup": 0,
              "train_steps": 1, "profile_frames": 1, "profile_steps": 1,
              "tests": ["tests/test_sync_free_render.py"]},
}
DEFAULT_BUDGET = 350.0  # seconds: what one 420-s device call holds besides start-up and install
# Seconds each section may take at most ("backend": any backend without a cap of its own) and the
# least worth starting it with. The defaults fill the default budget exactly (the torch backend,
# last, with 40 s of its 80); gsplat compiles its CUDA code on first use (minutes), so it only runs
# when the budget is raised for it.
CAPS = {"environment": 10.0, "subject": 60.0, "triton": 120.0, "tests": 60.0, "methods": 60.0, "backend": 80.0,
        "gsplat": 240.0}
MINIMUM = {"environment": 5.0, "subject": 20.0, "triton": 40.0, "tests": 20.0, "methods": 20.0, "backend": 30.0,
           "gsplat": 150.0}
# Every built-in method at its paper config, for the methods section's render speed (Table 1's FPS
# column): the bound ones at the backend sections' splats per triangle, the free ones at as many
# splats as the first bound avatar has.
METHOD_CONFIGS = {"tensorial": "configs/tensorial.yaml", "gaussian_avatars": "configs/gaussian_avatars.yaml",
                  "gaussian_head_avatar": "configs/gaussian_head_avatar.yaml",
                  "gaussian_blendshapes": "configs/gaussian_blendshapes.yaml", "npga": "configs/npga.yaml",
                  "gaussianhead": "configs/gaussianhead.yaml"}
MIN_BUDGET = MINIMUM["environment"] + MINIMUM["subject"] + MINIMUM["backend"]
DEFAULT_BACKENDS = ("triton", "torch")  # gsplat only on request (a first-use CUDA build)
HEADLINE, COMPILED_ON_FIRST_USE = "triton", "gsplat"
TOP_NAMES = 15  # kernel / operator names listed per frame and per step
KERNELS_MODULE = "gaussian_renderer.triton_kernels"
# Leaf ATen operators that launch no kernel on CUDA (views, allocations, metadata, conversions
# that were no-ops): left out of the CPU stand-in count of kernel launches.
NO_KERNEL_OPS = frozenset(f"aten::{op}" for op in (
    "as_strided", "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "permute", "transpose", "t",
    "select", "slice", "narrow", "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "chunk", "alias",
    "detach", "lift_fresh", "resolve_conj", "resolve_neg", "empty", "empty_strided", "empty_like", "to", "set_",
    "result_type", "is_same_size", "size", "stride", "numel", "dim", "contiguous", "view_as", "expand_as",
    "unfold", "diagonal", "movedim", "flatten", "unflatten", "new_empty", "new_empty_strided", "is_nonzero"))
# Shares of what is left of a backend section's cap that rendering and training may use when
# their frame / step counts are fitted (the rest: profiling, syncs, start-up, margin).
RENDER_SHARE, TRAIN_SHARE = 0.25, 0.35


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class Section:
    """One step of the check: ``name`` ("environment", "subject", "tests", "methods" or a backend name),
    ``cap_s`` its share of the budget in seconds (0 when skipped; at run time it may also use what
    the sections before it left unused), ``skipped`` why it will not run (None when it runs)."""

    name: str
    cap_s: float
    skipped: Optional[str] = None


def backend_order(backends: list[str]) -> list[str]:
    """``backends`` in order of value: triton (the headline) first, gsplat (a first-use CUDA build,
    minutes) last, any other in between in the registry's order."""
    from gaussian_renderer import backend_names

    registry = list(backend_names())
    rank = {HEADLINE: 0, COMPILED_ON_FIRST_USE: 2}
    return sorted(dict.fromkeys(backends), key=lambda n: (rank.get(n, 1), registry.index(n) if n in registry else 0))


def plan(backends: list[str], budget: float = DEFAULT_BUDGET, tests: bool = True,
         methods: bool = True) -> list[Section]:
    """The sections of one check, in the order they run, each with its cap in seconds.

    Order of value: environment, subject (the backend sections need it), the headline backend
    (triton), the CUDA-only tests, every method's render speed (``methods``), the other backends
    (gsplat last). Each section gets its cap (:data:`CAPS`) or what is left of ``budget``,
    whichever is less; one whose share is below its minimum (:data:`MINIMUM`) is skipped with the
    reason, as is gsplat when its build tools are missing (:func:`gsplat_toolchain_problem`). The
    caps sum to at most ``budget``.
    """
    left = float(budget)
    full_caps = 0.0  # the caps, uncut, of the sections that run so far: the budget they would need
    sections: list[Section] = []

    def add(name: str, kind: str, skipped: Optional[str] = None) -> None:
        nonlocal left, full_caps
        if skipped is None:
            cap = min(CAPS[kind], left)
            if cap < MINIMUM[kind]:
                skipped = (f"the budget ({budget:.0f} s) leaves {max(cap, 0):.0f} s for it, below its minimum of "
                           f"{MINIMUM[kind]:.0f} s (--budget {full_caps + MINIMUM[kind]:.0f} runs it, "
                           f"{full_caps + CAPS[kind]:.0f} gives it its whole cap of {CAPS[kind]:.0f} s)")
            else:
                left -= cap
                full_caps += CAPS[kind]
                sections.append(Section(name, cap))
                return
        sections.append(Section(name, 0.0, skipped))

    ordered = backend_order(backends)
    add("environment", "environment")
    add("subject", "subject")
    if HEADLINE in ordered:
        add(HEADLINE, HEADLINE)
    add("tests", "tests", None if tests else "not asked for (--no-tests)")
    add("methods", "methods", None if methods else "not asked for (--methods with no name)")
    for name in ordered:
        if name == HEADLINE:
            continue
        problem = gsplat_toolchain_problem() if name == COMPILED_ON_FIRST_USE else None
        add(name, name if name in CAPS else "backend", problem)
    return sections


# ---------------------------------------------------------------------------------------------
# environment


def _command_line(cmd: list[str], timeout: float = 20) -> str:
    """The last line ``cmd`` prints, or why it could not run."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return f"{cmd[0]} not found"
    try:
        res = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]} failed: {exc}"
    return (res.stdout.strip() or res.stderr.strip()).splitlines()[-1] if (res.stdout or res.stderr) else ""


def nvcc_cuda_version(timeout: float = 10) -> Optional[str]:
    """The CUDA version ("12.8") of the ``nvcc`` on the PATH (from ``nvcc --version``'s "release
    12.8, V12.8.93"), or None when there is none or it says no version."""
    exe = shutil.which("nvcc")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", res.stdout + res.stderr)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def gsplat_toolchain_problem(timeout: float = 10) -> Optional[str]:
    """None when gsplat can build its CUDA code here, else why not (one line).

    gsplat 1.5.3 compiles ~20 .cu files on first use, through torch's cpp_extension: it needs
    ``ninja`` and an ``nvcc`` whose CUDA version (major.minor) is torch's (``torch.version.cuda``);
    without them the build fails after minutes, or hangs, and would eat the budget."""
    import torch

    if shutil.which("ninja") is None:
        return "ninja is not on the PATH (gsplat 1.5.3 builds its CUDA code with ninja on first use)"
    if shutil.which("nvcc") is None:
        return "nvcc is not on the PATH (gsplat 1.5.3 compiles its CUDA code on first use)"
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build: gsplat needs a CUDA build of torch"
    nvcc = nvcc_cuda_version(timeout)
    if nvcc is None:
        return "nvcc --version names no CUDA release"
    torch_cuda = ".".join(torch.version.cuda.split(".")[:2])
    if nvcc != torch_cuda:
        return f"nvcc is CUDA {nvcc} but torch is built for CUDA {torch_cuda}: gsplat's build needs the two to match"
    return None


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception as exc:  # not installed
        return f"not installed ({type(exc).__name__})"


def environment(cap_s: float = CAPS["environment"]) -> dict:
    """Versions and tools (see the module doc); each command gets a third of ``cap_s``."""
    import torch
    timeout = max(cap_s / 3, 1.0)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvcc": _command_line(["nvcc", "--version"], timeout),
        "nvcc_cuda": nvcc_cuda_version(timeout),
        "ninja": shutil.which("ninja") or "not found",
        "nvidia_smi": _command_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"], timeout),
        "gsplat": _package_version("gsplat"),
        "triton": _package_version("triton"),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                   multiprocessors=props.multi_processor_count)
    return env


# ---------------------------------------------------------------------------------------------
# figures of one backend (measured in its own subprocess)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sync_points(fn: Callable[[], object], device) -> dict:
    """Host-device synchronisations while ``fn()`` runs (CUDA's sync debug mode): their count and
    where in the code they happen (file:line -> count)."""
    import torch
    if device.type != "cuda":
        return {"count": None, "where": "not measured on the CPU"}
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    where: dict[str, int] = {}
    for w in caught:
        key = f"{Path(w.filename).relative_to(REPO) if str(w.filename).startswith(str(REPO)) else w.filename}:{w.lineno}"
        where[key] = where.get(key, 0) + 1
    return {"count": sum(where.values()), "where": where}


def launches_per_call(fn: Callable[[], object], calls: int, device) -> dict:
    """The device work one call of ``fn`` launches, from torch.profiler over ``calls`` calls.

    On CUDA: the CUDA kernel events (copies and memsets counted apart), which is what bounds a
    frame on a fast GPU (each launch costs the host microseconds; a CUDA graph replays them as
    one). On the CPU there are no kernels; the leaf ATen operators (those calling no other ATen
    operator: roughly one kernel each on CUDA), less those that launch none (:data:`NO_KERNEL_OPS`),
    are counted instead, so the code path is the same. Triton kernels in the CPU interpreter are
    no ATen operators and are not counted.

    Returns {"what": what was counted, "per_call": count per call, "calls": calls profiled,
    "top": [[name, count per call], ...] the TOP_NAMES most frequent names (names cut at 120
    characters)}, on CUDA also "copies_per_call" (memcpy and memset events per call).
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        _sync(device)  # the kernels must have run before the trace closes
    events = prof.events()
    copies = 0
    if cuda:
        names = []
        for e in events:
            if e.device_type != DeviceType.CUDA:
                continue
            if e.name.startswith(("Memcpy", "Memset")):
                copies += 1
            else:
                names.append(e.name)
        what = "CUDA kernels"
    else:
        names = [e.name for e in events if e.name.startswith("aten::") and e.name not in NO_KERNEL_OPS
                 and not any(c.name.startswith("aten::") for c in e.cpu_children)]
        what = ("CPU ATen operators (leaf calls, views and allocations left out; no GPU: a stand-in for CUDA "
                "kernels)")
    counts = Counter(n[:120] for n in names)
    out = {"what": what, "per_call": len(names) / calls, "calls": calls,
           "top": [[name, n / calls] for name, n in counts.most_common(TOP_NAMES)]}
    if cuda:
        out["copies_per_call"] = copies / calls
        if not names:
            out["note"] = "the profiler recorded no CUDA kernel (CUPTI unavailable?)"
    return out


def _compiled_kernels(fn: Any) -> list:
    """The compiled kernels in one Triton JITFunction's caches: triton >= 3.2 keeps
    ``device_caches`` {device: (kernel_cache, ...)}, older ones ``cache`` {device: kernel_cache};
    kernel_cache is {specialisation key: CompiledKernel}."""
    caches = getattr(fn, "device_caches", None)
    tables = [entry[0] for entry in caches.values()] if caches is not None else list(getattr(fn, "cache", {}).values())
    return [kernel for table in tables for kernel in table.values()]


def _kernel_record(function: str, fn: Any, kernel: Any) -> dict:
    """Registers and spills of one compiled kernel (see :func:`triton_kernel_resources`)."""
    record: dict = {"function": function}
    try:
        if not hasattr(kernel, "n_regs") and hasattr(kernel, "_init_handles"):
            kernel._init_handles()  # triton loads a binary (and reads its registers) on first launch only
        meta = getattr(kernel, "metadata", None)
        record.update(name=getattr(kernel, "name", function), n_regs=int(kernel.n_regs), n_spills=int(kernel.n_spills),
                      num_warps=getattr(meta, "num_warps", None), num_stages=getattr(meta, "num_stages", None),
                      shared_bytes=getattr(meta, "shared", None))
        constexprs = getattr(getattr(kernel, "src", None), "constexprs", None) or {}
        names = getattr(fn, "arg_names", [])
        record["constexprs"] = {
            (names[k[0]] if isinstance(k, tuple) and len(k) == 1 and k[0] < len(names) else str(k)):
            (v if isinstance(v, (int, float, bool, str)) else str(getattr(v, "value", v)))
            for k, v in constexprs.items()}
    except Exception as exc:
        record["unavailable"] = _first_line(exc)
    return record


def triton_kernel_resources(module: Any = None) -> dict:
    """Registers and spills of every Triton kernel compiled in this process from
    gaussian_renderer/triton_kernels.py (or ``module``), read from the JIT functions' caches.

    Returns {"status": "compiled", "kernels": [{"function": the @triton.jit function, "name":
    the kernel's name, "n_regs": 32-bit registers per thread, "n_spills": spilled registers per
    thread (0 is the goal: a spill is a local-memory round trip), "num_warps", "num_stages",
    "shared_bytes": static shared memory, "constexprs": the specialisation}, ...]} (one entry per
    specialisation), or {"status": "interpreted: ..."} on the CPU (the interpreter compiles
    nothing), or {"status": "unavailable: <reason>"}. Never raises.
    """
    try:
        if module is None:
            module = sys.modules.get(KERNELS_MODULE)
            if module is None:
                return {"status": "unavailable: the Triton kernels were not loaded in this process"}
        if getattr(module, "INTERPRETED", False):
            return {"status": "interpreted: the kernels ran in Triton's CPU interpreter (TRITON_INTERPRET=1), "
                              "which compiles nothing: no registers or spills to read"}
        from triton.runtime.jit import JITFunction
        kernels = [_kernel_record(attr, fn, kernel) for attr, fn in sorted(vars(module).items())
                   if isinstance(fn, JITFunction) for kernel in _compiled_kernels(fn)]
        if not kernels:
            return {"status": "unavailable: no compiled kernel in the JIT caches (none launched yet?)"}
        return {"status": "compiled", "kernels": kernels}
    except Exception as exc:
        return {"status": f"unavailable: {_first_line(exc)}"}


# The phases of the Triton frame: render_avatar charges "decoders" (and "rasterization", the
# rest); the rasterizer's own parts are charged by wrapping the functions rasterize_triton calls.
TRITON_PHASES = ("decoders", "projection_binning", "compositing")


@contextmanager
def charge_triton_phases(timer: Callable[[str], Any]) -> Iterator[None]:
    """While active, the Triton backend charges its projection (``prepare_splats``) and binning
    (``bin_gaussians``) to phase "projection_binning" and its compositing (the kernels' autograd
    Function, table set-up included) to "compositing" of ``timer`` (a PhaseTimer or anything called
    as ``with timer(name):``).

    The rasterizer has no phase hooks of its own (the product should not pay for them), so the
    module globals that ``rasterize_triton`` calls are wrapped here and restored on exit."""
    from gaussian_renderer import triton_backend as tb

    originals = {name: getattr(tb, name) for name in ("prepare_splats", "bin_gaussians", "_TritonComposite")}

    def charged(phase: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            with timer(phase):
                return fn(*args, **kwargs)
        return call

    tb.prepare_splats = charged("projection_binning", originals["prepare_splats"])
    tb.bin_gaussians = charged("projection_binning", originals["bin_gaussians"])
    tb._TritonComposite = SimpleNamespace(apply=charged("compositing", originals["_TritonComposite"].apply))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(tb, name, fn)


def _phase_record(ms: dict, how: str, frames: int) -> dict:
    """{"ms": {phase: ms per frame, "other": the rest of the frame (camera centre, argument checks,
    meta)}, "ms_frame": the whole frame, ms, "frames": frames averaged, "how": how it was timed}."""
    phases = {p: ms.get(p, 0.0) for p in TRITON_PHASES}
    phases["other"] = max(ms.get("frame", 0.0) - sum(phases.values()), 0.0)
    return {"ms": phases, "ms_frame": ms.get("frame", 0.0), "frames": frames, "how": how}


def triton_phase_split_eager(frame: Callable[[Any], object], device, frames: int) -> dict:
    """ms per phase (:data:`TRITON_PHASES`) of the ordinary (eager) Triton frame: ``frame(timer)``
    renders one frame through the Triton backend, charging its decoders to ``timer``. A
    PhaseTimer synchronises the device at every phase edge, so each phase is charged its own
    kernels (and the frame is slower than unsynchronised)."""
    import torch

    from utils.phase_timer import PhaseTimer

    timer = PhaseTimer(enabled=True, device=device)
    with torch.no_grad(), charge_triton_phases(timer):
        for _ in range(frames):
            with timer("frame"):
                frame(timer)
    return _phase_record(timer.mean_ms(frames), "eager frame, the device synchronised at each phase edge", frames)


class GraphPhaseEvents:
    """Called as ``with events(name):``, records a pair of CUDA timing events around the phase on
    the current stream. Made external (``cudaEventRecordExternal``), events recorded while a CUDA
    graph is captured become nodes of the graph, so every replay re-times the phases inside it."""

    def __init__(self) -> None:
        self.pairs: dict[str, list] = defaultdict(list)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        import torch
        start = torch.cuda.Event(enable_timing=True, external=True)
        end = torch.cuda.Event(enable_timing=True, external=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self.pairs[name].append((start, end))

    def elapsed_ms(self) -> dict:
        """{phase: ms} of the last replay (call after synchronising)."""
        return {name: sum(s.elapsed_time(e) for s, e in pairs) for name, pairs in self.pairs.items()}


def triton_phase_split_graph(frame: Callable[..., Any], device, frames: int, capacity: int) -> dict:
    """ms per phase (:data:`TRITON_PHASES`) inside the frame replayed as one CUDA graph: the frame
    ``frame(timer, capacity)`` (Triton, fixed intersection capacity: sync-free) is captured with
    timing events between its phases (:class:`GraphPhaseEvents`), and each replay reads them. The
    capture is the one GraphedAvatarRenderer makes (warm-up on a side stream, then capture)."""
    import torch

    from utils.phase_timer import DISABLED

    events = GraphPhaseEvents()
    with torch.no_grad():
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                frame(DISABLED, capacity)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with charge_triton_phases(events), torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            with events("frame"):
                result = frame(events, capacity)
        totals: dict[str, float] = defaultdict(float)
        for _ in range(frames):
            graph.replay()
            torch.cuda.synchronize(device)
            for name, ms in events.elapsed_ms().items():
                totals[name] += ms
        if bool(result.meta["isect_overflow"]):
            raise RuntimeError(f"the captured frame dropped (tile, splat) pairs beyond its capacity {capacity}")
    return _phase_record({k: v / frames for k, v in totals.items()},
                         "inside the replayed CUDA graph (timing events captured as graph nodes)", frames)


def _fit(upper: int, seconds: float, per_unit: float) -> int:
    """How many units of ``per_unit`` seconds fit in ``seconds``: at least 1, at most ``upper``."""
    return max(1, min(upper, int(seconds / max(per_unit, 1e-6))))


def _timed(fn: Callable[[], Any], device) -> tuple[float, Any]:
    """(seconds, result) of one synchronised call."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _one_training_step(trainer) -> None:
    trainer.training_step(trainer.step + 1)
    trainer.step += 1


def frame_inputs(trainer, device) -> tuple:
    """:func:`scene.rendering.render_avatar`'s inputs for the trainer's first test (else val)
    frame: (avatar, vertices (V, 3), motion, viewmat (4, 4), K (3, 3), width, height, background)."""
    from flame_model import frame_motion

    frame = (trainer.subject.frames["test"] or trainer.subject.frames["val"])[0]
    row = trainer.subject.timestep_row[frame.timestep]
    rows = trainer.row_index[row:row + 1]
    params = trainer.sequence.row_params(rows)
    return (trainer.avatar, trainer.sequence.vertices(rows)[0], frame_motion(params),
            frame.viewmat.to(device), frame.K.to(device), frame.width, frame.height, trainer.background)


def check_backend(name: str, device_name: str, subject: str, flame: str, size: dict, scratch: Path,
                  seconds: float, save: Callable[[dict], None]) -> dict:
    """Availability, parity, rendering and training figures of one backend (see module doc), in
    ``seconds`` at most: frame and step counts are fitted to what is left. ``save(figures)`` is
    called after each part, so a section killed at its cap keeps what it measured."""
    import torch

    from gaussian_renderer.parity import compare_with_reference
    from gaussian_renderer.registry import get_backend
    from scene.rendering import measure_render_speed, render_avatar
    from step_profile import build_trainer, profile, run_steps

    deadline = time.perf_counter() + seconds
    left = lambda: max(deadline - time.perf_counter(), 0.0)  # noqa: E731
    device = torch.device(device_name)
    out: dict = {"backend": name}
    reason = get_backend(name).import_error()
    if reason is not None:
        out["available"] = False
        out["why_not"] = reason
        return out
    out["available"] = True
    try:
        out["parity"] = compare_with_reference(name, device)
    except Exception as exc:
        out["parity_error"] = _first_line(exc)
        return out
    save(out)

    sets = [f"model.geometry.init_splats_per_triangle={size['splats_per_triangle']}", "densify.enabled=false"]
    iterations = size["train_warmup"] + 2 * size["train_steps"] + size["profile_steps"] + 4
    try:
        trainer = build_trainer(subject, flame, scratch / f"model_{name}", ["configs/tensorial.yaml"], sets,
                                device_name, name, iterations)
    except Exception as exc:
        out["setup_error"] = _first_line(exc)
        return out
    try:
        inputs = frame_inputs(trainer, device)

        def render(timer=None, capacity=None, backend=name):
            kwargs = {} if timer is None else {"timer": timer}
            return render_avatar(*inputs, backend=backend, isect_capacity=capacity, **kwargs)

        with torch.no_grad():
            render()  # first use: kernels compile, caches fill
            frame_s, first = _timed(render, device)
        pairs = first.meta.get("n_isects")
        out["pairs"] = int(pairs) if pairs is not None else None  # (tile, splat) pairs of the frame
        frames = _fit(size["render_frames"], RENDER_SHARE * left(), 5 * frame_s)
        speed = measure_render_speed(*inputs, name, frames=frames, warmup=size["render_warmup"])
        with torch.no_grad():
            syncs = _sync_points(render, device)
        out["render"] = {**speed, "splats": len(trainer.avatar.gaussians), "width": inputs[5],
                         "height": inputs[6], "sync_points_per_frame": syncs}
        if "isect_capacity" in speed:  # triton on CUDA: the CUDA-graph path, which must show none
            with torch.no_grad():
                out["render"]["sync_points_per_frame_fixed_capacity"] = _sync_points(
                    lambda: render(capacity=speed["isect_capacity"]), device)
        save(out)
        if get_backend(name).takes_isect_capacity:
            out["phases"] = {}
            try:
                out["phases"]["eager"] = triton_phase_split_eager(lambda timer: render(timer), device, frames)
            except Exception as exc:
                out["phases"]["eager"] = {"unavailable": _first_line(exc)}
            if "isect_capacity" in speed:
                try:
                    out["phases"]["cuda_graph"] = triton_phase_split_graph(
                        lambda timer, capacity: render(timer, capacity), device, frames, speed["isect_capacity"])
                except Exception as exc:
                    out["phases"]["cuda_graph"] = {"unavailable": f"{_first_line(exc)} (the eager split stands)"}
            else:
                out["phases"]["cuda_graph"] = {"unavailable": "no CUDA graph on this device (the eager split stands)"}
        if name == HEADLINE:  # the forward kernel's now; read again at the end, after the backward one ran
            out["kernel_resources"] = triton_kernel_resources()
        save(out)
    except Exception as exc:
        out["render_error"] = _first_line(exc)
        inputs = None
    try:
        run_steps(trainer, 1)  # first use: kernels compile, the loader and the optimisers settle
        step_s = run_steps(trainer, 1)  # what one step costs, to fit the step counts
        steps = _fit(size["train_steps"], TRAIN_SHARE * left(), 2 * step_s)
        out["train"] = profile(trainer, min(size["train_warmup"], steps), steps)
        out["train"].update(steps_timed=steps, warmup=min(size["train_warmup"], steps))
        out["train"]["sync_points_per_step"] = _sync_points(lambda: _one_training_step(trainer), device)
        save(out)
    except Exception as exc:
        out["train_error"] = _first_line(exc)
    try:
        launches = {}
        if inputs is not None:
            with torch.no_grad():
                launches["per_frame"] = launches_per_call(render, size["profile_frames"], device)
        launches["per_step"] = launches_per_call(lambda: _one_training_step(trainer), size["profile_steps"], device)
        out["launches"] = launches
    except Exception as exc:
        out["launches_error"] = _first_line(exc)
    finally:
        trainer.loader.close()
    if name == HEADLINE:
        out["kernel_resources"] = triton_kernel_resources()
    return out


def check_methods(methods: list[str], backend: str, device_name: str, subject: str, flame: str, size: dict,
                  scratch: Path, seconds: float, save: Callable[[dict], None]) -> dict:
    """Render speed of each method of ``methods`` (names of :data:`METHOD_CONFIGS`) at its paper
    config, untrained, on ``backend``, in ``seconds`` at most, shared evenly among the methods not
    yet measured. A method's figures are those of ``render.py --benchmark`` (the whole frame: its
    decoders, rasterization and screen-space stage) at the subject's resolution, with its splat
    count: the bound methods at the size's splats per triangle, the free ones at the first bound
    avatar's count (their configs' own count when none was built). A method that fails records
    its error and the next one runs. ``save(figures)`` after each method."""
    import torch

    from scene.config import resolve_config
    from scene.rendering import measure_render_speed, render_avatar
    from step_profile import build_trainer

    deadline = time.perf_counter() + seconds
    device = torch.device(device_name)
    out: dict = {"backend": backend, "methods": {}}
    matched = None  # the first bound avatar's splat count, for the free methods
    for i, name in enumerate(methods):
        share = max(deadline - time.perf_counter(), 0.0) / (len(methods) - i)
        started = time.perf_counter()
        record: dict = {}
        out["methods"][name] = record
        trainer = None
        try:
            geometry = resolve_config([REPO / METHOD_CONFIGS[name]], []).model.geometry
            bound = hasattr(geometry, "init_splats_per_triangle")
            sets = ["densify.enabled=false"]
            if bound:
                sets.append(f"model.geometry.init_splats_per_triangle={size['splats_per_triangle']}")
            elif matched is not None:
                sets.append(f"model.geometry.init_points={matched}")
            trainer = build_trainer(subject, flame, scratch / f"method_{name}", [METHOD_CONFIGS[name]], sets,
                                    device_name, backend, iterations=1)
            inputs = frame_inputs(trainer, device)
            record.update(splats=len(trainer.avatar.gaussians), width=inputs[5], height=inputs[6],
                          screen_stage=trainer.avatar.screen.enabled())
            if bound and matched is None:
                matched = record["splats"]
            with torch.no_grad():
                render_avatar(*inputs, backend=backend)  # first use: kernels compile, caches fill
                frame_s, _ = _timed(lambda: render_avatar(*inputs, backend=backend), device)
            # measure_render_speed renders warm-up + 2 x frames (+ a CUDA graph's frames).
            frames = _fit(size["render_frames"], 0.6 * (share - (time.perf_counter() - started)), 4 * frame_s)
            try:
                speed = measure_render_speed(*inputs, backend, frames=frames, warmup=size["render_warmup"])
            except Exception as exc:
                if not (device.type == "cuda" and backend == HEADLINE):
                    raise
                # The eager frame alone: if it renders, what failed was this method's CUDA graph.
                speed = measure_render_speed(*inputs, backend, frames=frames, warmup=size["render_warmup"],
                                             cuda_graph=False)
                record["cuda_graph_error"] = _first_line(exc)
            record.update(speed)
        except Exception as exc:
            record["error"] = _first_line(exc)
        finally:
            if trainer is not None:
                trainer.loader.close()
            record["seconds"] = time.perf_counter() - started
        save(out)
    return out


# ---------------------------------------------------------------------------------------------
# orchestration


def _tail(text: Any, n: int = 5) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
    return "\n".join(text.strip().splitlines()[-n:])


def _run_group(cmd: list[str], limit: float, env: Optional[dict] = None) -> tuple[Optional[int], str, str]:
    """Run ``cmd`` in the repository root for at most ``limit`` s: (exit code, or None on a
    time-out; stdout; stderr). It runs in a process group of its own, and on a time-out the whole
    group is killed: a section must not leave children running into the next one (the subject's
    rendering workers, pytest's, a gsplat build's compilers)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=max(limit, 1))
        return proc.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            stdout, stderr = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild of its own session still holds the pipes
            proc.kill()
            stdout, stderr = "", ""
        return None, stdout, stderr


def _run_limited(cmd: list[str], limit: float, env: Optional[dict] = None) -> tuple[Optional[int], str]:
    """(exit code or None on time-out, the last lines of stderr) of :func:`_run_group`."""
    code, _, stderr = _run_group(cmd, limit, env)
    return code, _tail(stderr)


def make_subject(data: Path, size_name: str, limit: float) -> tuple[Optional[dict], Optional[str]]:
    """Generate (or reuse, when ``data`` already holds it) the synthetic subject in ``limit`` s:
    ({"union", "flame", "seconds", "settings"}, None) or (None, why not)."""
    args = [sys.executable, str(REPO / "scripts/make_synthetic_subject.py"), "--out", str(data), "--quiet",
            *SIZES[size_name]["subject"]]
    start = time.perf_counter()
    code, err = _run_limited(args, limit)
    if code != 0:
        return None, f"subject generation {'timed out' if code is None else f'failed ({code})'}: {err}"
    manifest = json.loads((data / "synthetic_manifest.json").read_text())
    union = manifest["paths"]["subjects"]["s000"]["union"]
    return {"union": union, "flame": manifest["paths"]["flame_model"], "seconds": time.perf_counter() - start,
            "settings": manifest["settings"]}, None


def run_cuda_tests(files: list[str], limit: float) -> dict:
    """pytest over ``files`` in a subprocess, in ``limit`` s: its summary line and the FAILED /
    ERROR lines (on a time-out, the last lines of its progress)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *files]
    code, stdout, stderr = _run_group(cmd, limit)
    if code is None:
        return {"files": files, "error": f"timed out after {limit:.0f} s", "progress": _tail(stdout, 3),
                "seconds": time.perf_counter() - start}
    lines = (stdout + stderr).strip().splitlines()
    summary = next((ln.strip("= ") for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                                   or "error" in ln)), "")
    return {"files": files, "exit_code": code, "summary": summary or "\n".join(lines[-3:]),
            "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:40],
            "seconds": time.perf_counter() - start}


def methods_backend(args: argparse.Namespace) -> str:
    """The backend the methods section renders with: the first of ``--backends`` in order of value."""
    return backend_order(args.backends)[0]


def run_backend_section(name: str, args: argparse.Namespace, subject: dict, out: Path, limit: float) -> dict:
    """One backend's figures (or, for ``name`` "methods", every method's render speed on
    :func:`methods_backend`) from a subprocess killed after ``limit`` s (what it saved before is kept)."""
    backend = methods_backend(args) if name == "methods" else name
    part_file = out / f"part_{name}.json"
    part_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--device", args.device,
           "--section", name, "--subject", subject["union"], "--flame", subject["flame"],
           "--section-out", str(part_file), "--section-seconds", f"{limit:.1f}"] + (["--quick"] if args.quick else [])
    if name == "methods":
        cmd += ["--backends", backend, "--methods", *args.methods]
    # On the CPU the Triton kernels run in Triton's interpreter (slow, but the same code); it must
    # be set before triton is first imported, hence in the subprocess's environment.
    env = dict(os.environ, TRITON_INTERPRET="1") if backend == HEADLINE and args.device == "cpu" else None
    code, tail = _run_limited(cmd, limit, env)
    part = json.loads(part_file.read_text()) if part_file.is_file() else {"backend": backend}
    part_file.unlink(missing_ok=True)
    if code is None:
        part["section_error"] = f"timed out after {limit:.0f} s (figures measured before are kept): {tail}"
    elif code != 0:
        part["section_error"] = f"exited with {code}: {tail}"
    return part


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None or value == "" else format(value, spec)


def methods_markdown(part: dict) -> list[str]:
    """The methods section's lines: one table row per method, then its failures."""
    if "skipped" in part:
        return [f"Methods: skipped: {part['skipped']}"]
    lines = [f"Render speed of every method, untrained at its paper config, backend {part.get('backend')} "
             "(the whole frame, as `render.py --benchmark`):", "",
             "| method | splats | size | FPS | CUDA-graph FPS | ms / frame | decoders ms | rasterization ms | "
             "screen-space stage |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in part.get("methods", {}).items():
        size = f"{r['width']}x{r['height']}" if "width" in r else ""
        stage = "" if "screen_stage" not in r else ("yes" if r["screen_stage"] else "no")
        lines.append(f"| {name} | {_fmt(r.get('splats'), 'd')} | {size} | {_fmt(r.get('fps'), '.1f')} | "
                     f"{_fmt(r.get('fps_cuda_graph'), '.1f')} | {_fmt(r.get('ms_per_frame'), '.2f')} | "
                     f"{_fmt(r.get('ms_decoders'), '.2f')} | {_fmt(r.get('ms_rasterization'), '.2f')} | {stage} |")
    errors = [f"- {name} ({key}): {r[key]}" for name, r in part.get("methods", {}).items()
              for key in ("error", "cuda_graph_error") if key in r]
    if part.get("section_error"):
        errors.append(f"- the section: {part['section_error']}")
    return lines + (["", "Methods' failures:", ""] + errors if errors else [])


def summary_markdown(result: dict) -> str:
    """The result as Markdown (docs/BENCHMARKS.md)."""
    env = result["environment"]
    lines = ["# GPU check", "",
             f"{env.get('gpu', 'no GPU')} ({env.get('nvidia_smi', '')}); torch {env.get('torch')} (CUDA "
             f"{env.get('torch_cuda')}); nvcc: {env.get('nvcc')}; ninja: {env.get('ninja')}; gsplat {env.get('gsplat')}; "
             f"triton {env.get('triton')}; device {result['device']}, sizes {result['size']}; "
             f"{result['seconds']:.0f} s in all (budget {result['budget']:.0f} s).", "",
             "| section | cap s | limit s (cap + unused before) | took s | outcome |", "|---|---|---|---|---|"]
    for s in result["sections"]:
        lines.append(f"| {s['section']} | {s['cap_s']:.0f} | {s['limit_s']:.0f} | {_fmt(s.get('seconds'), '.1f')} | "
                     f"{s['outcome']} |")
    lines.append("")
    tests = result.get("tests")
    if tests and "files" in tests:
        lines += [f"Tests ({', '.join(tests['files'])}): {tests.get('summary') or tests.get('error')}", ""]
        lines += [f"- {ln}" for ln in tests.get("failures", [])] + ([""] if tests.get("failures") else [])
    if result.get("subject_error"):
        lines += [f"Subject: {result['subject_error']}", ""]
    methods = result.get("methods")
    if methods:
        lines += methods_markdown(methods) + [""]
    lines += ["| backend | available | image max abs diff | worst relative grad error | render FPS | CUDA-graph FPS | "
              "decoders ms | rasterization ms | (tile, splat) pairs | syncs / frame | launches / frame | train it/s | "
              "train peak MB | syncs / step | launches / step |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in result["backends"].items():
        par, ren, tr, la = b.get("parity", {}), b.get("render", {}), b.get("train", {}), b.get("launches", {})
        worst = max(par.get("grad_rel", {}).items(), key=lambda kv: kv[1], default=("", None))
        syncs = tr.get("sync_points_per_step", {}).get("count")
        frame_syncs = ren.get("sync_points_per_frame", {}).get("count")
        fixed_syncs = ren.get("sync_points_per_frame_fixed_capacity", {}).get("count")
        if fixed_syncs is not None:
            frame_syncs = f"{frame_syncs} ({fixed_syncs} with a fixed capacity)"
        available = "skipped" if "skipped" in b else ("yes" if b.get("available") else "no")
        lines.append(
            f"| {name} | {available} | {_fmt(par.get('image_max_abs'), '.2e')} | "
            f"{_fmt(worst[1], '.2e')} {worst[0]} | {_fmt(ren.get('fps'), '.1f')} | {_fmt(ren.get('fps_cuda_graph'), '.1f')} | "
            f"{_fmt(ren.get('ms_decoders'), '.2f')} | {_fmt(ren.get('ms_rasterization'), '.2f')} | {_fmt(b.get('pairs'), 'd')} | "
            f"{'' if frame_syncs is None else frame_syncs} | {_fmt(la.get('per_frame', {}).get('per_call'), '.0f')} | "
            f"{_fmt(tr.get('iterations_per_second'), '.1f')} | {_fmt(tr.get('peak_memory_mb'), '.0f')} | "
            f"{'' if syncs is None else syncs} | {_fmt(la.get('per_step', {}).get('per_call'), '.0f')} |")
    whats = {part["what"] for b in result["backends"].values() for part in b.get("launches", {}).values()}
    if whats:
        lines += ["", "Launches counted: " + "; ".join(sorted(whats)) + "."]
    skipped = [(name, b["skipped"]) for name, b in result["backends"].items() if "skipped" in b]
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {name}: skipped: {why}" for name, why in skipped]
    failures = [(name, key, b[key]) for name, b in result["backends"].items() for key in b
                if key.endswith("_error") or key == "why_not"]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {name} ({key}): {msg}" for name, key, msg in failures]
    for name, b in result["backends"].items():
        for kind, split in b.get("phases", {}).items():
            if "ms" in split:
                lines += ["", f"Frame of {name}, {split['how']}, ms per phase: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in split["ms"].items()) + f" (frame {split['ms_frame']:.2f})"]
            else:
                lines += ["", f"Frame of {name}, {kind} phases: {split['unavailable']}"]
        resources = b.get("kernel_resources")
        if resources:
            lines += ["", f"Compiled Triton kernels ({name} section), registers and spills per thread: "
                          f"{resources['status']}"]
            lines += [f"- {k['function']} {k.get('constexprs', '')}: {k.get('n_regs')} registers, "
                      f"{k.get('n_spills')} spills, {k.get('num_warps')} warps, {k.get('shared_bytes')} B shared"
                      + (f" ({k['unavailable']})" if "unavailable" in k else "") for k in resources.get("kernels", [])]
        for kind, part in b.get("launches", {}).items():
            lines += ["", f"Launches {kind.replace('_', ' ')} of {name} ({part['what']}), {part['per_call']:.0f} in all: "
                      + ", ".join(f"{n} x{c:g}" for n, c in part["top"])]
        if "train" in b:
            lines += ["", f"Training step of {name}, ms per phase: " + ", ".join(
                f"{k} {v:.2f}" for k, v in b["train"]["phases_ms"].items())]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    from gaussian_renderer import backend_names  # every registered backend, in registration order

    names = list(backend_names())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    p.add_argument("--backends", nargs="+", default=[n for n in DEFAULT_BACKENDS if n in names], choices=names,
                   help=f"which backends to check, run triton first, gsplat last (default: {' '.join(DEFAULT_BACKENDS)}; "
                        f"registered: {' '.join(names)})")
    p.add_argument("--data", help="where the synthetic subject goes; kept, and reused by a rerun "
                                  "(default: a temporary folder, removed)")
    p.add_argument("--no-tests", dest="tests", action="store_false",
                   help="skip the CUDA-only tests (" + ", ".join(SIZES["full"]["tests"]) + ")")
    p.add_argument("--methods", nargs="*", default=list(METHOD_CONFIGS), choices=list(METHOD_CONFIGS),
                   help="the methods whose render speed the methods section measures, untrained at their paper "
                        "configs, on the first of --backends in order of value (triton first; default: all; "
                        "none: skip the section)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help=f"seconds for the whole check, split into one cap per section (default {DEFAULT_BUDGET:.0f})")
    # internal: one backend's section in a subprocess
    p.add_argument("--section", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--flame", help=argparse.SUPPRESS)
    p.add_argument("--section-out", help=argparse.SUPPRESS)
    p.add_argument("--section-seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.budget >= MIN_BUDGET:  # also refuses nan
        p.error(f"--budget must be at least {MIN_BUDGET:.0f} seconds (environment, subject and one backend), "
                f"got {args.budget:g}")
    return args


def _save_json(path: Path, data: dict) -> None:
    """Write ``data`` so that a reader never sees half a file (the section may be killed any time)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    size_name = "quick" if args.quick else "full"
    size = SIZES[size_name]
    if args.section:
        part_file = Path(args.section_out)
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
            seconds = (args.section_seconds or CAPS["backend"]) - (time.perf_counter() - STARTED)
            save = lambda figures: _save_json(part_file, figures)  # noqa: E731
            if args.section == "methods":
                part = check_methods(args.methods, args.backends[0], args.device, args.subject, args.flame, size,
                                     Path(scratch), seconds, save)
            else:
                part = check_backend(args.section, args.device, args.subject, args.flame, size, Path(scratch),
                                     seconds, save)
        _save_json(part_file, part)
        return 0

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = plan(args.backends, args.budget, args.tests, bool(args.methods))
    result: dict = {"device": args.device, "size": size_name, "budget": args.budget,
                    "plan": [asdict(s) for s in sections], "sections": [], "environment": {}, "backends": {}}
    data_dir = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="gpu_check_data_"))
    subject: Optional[dict] = None
    no_gpu: Optional[str] = None  # why nothing after the environment can run
    planned_end = start  # where the plan says the current section ends, from the start
    for section in sections:
        t0 = time.perf_counter()
        planned_end += section.cap_s
        # A section may use its cap plus what the sections before it left unused: it still ends
        # where the plan ends it, so every later section keeps its whole cap.
        limit = planned_end - t0
        name, outcome = section.name, "ran"
        is_backend = name not in ("environment", "subject", "tests", "methods")
        why_not = section.skipped
        if why_not is None and name != "environment":
            if no_gpu:
                why_not = no_gpu
            elif (is_backend or name == "methods") and subject is None:
                why_not = f"no subject ({result.get('subject_error')})"
            elif limit < 1:
                why_not = "the sections before it used up its time"
        if why_not is not None:
            outcome = f"skipped: {why_not}"
            if is_backend:
                result["backends"][name] = {"backend": name, "skipped": why_not}
            elif name in ("tests", "methods"):
                result[name] = {"skipped": why_not}
        elif name == "environment":
            result["environment"] = environment(section.cap_s)
            if args.device.startswith("cuda") and not result["environment"]["cuda_available"]:
                result["error"] = no_gpu = "CUDA is not available to this torch"
                outcome = f"failed: {no_gpu}"
        elif name == "subject":
            subject, err = make_subject(data_dir, size_name, limit)
            if subject is None:
                result["subject_error"] = err
                outcome = f"failed: {err.splitlines()[0]}"
            else:
                result["subject"] = subject
        elif name == "tests":
            result["tests"] = run_cuda_tests(size["tests"], limit)
            outcome = result["tests"].get("summary") or result["tests"].get("error", "")
        elif name == "methods":
            result["methods"] = run_backend_section(name, args, subject, out, limit)
            measured = [m for m, r in result["methods"].get("methods", {}).items() if "fps" in r]
            outcome = result["methods"].get("section_error", f"{len(measured)} of {len(args.methods)} measured")
            outcome = outcome.splitlines()[0]
        else:
            result["backends"][name] = run_backend_section(name, args, subject, out, limit)
            outcome = result["backends"][name].get("section_error", "ran").splitlines()[0]
        seconds = time.perf_counter() - t0
        if is_backend:
            result["backends"][name]["seconds"] = seconds
        result["sections"].append({"section": name, "cap_s": section.cap_s, "limit_s": max(limit, 0.0),
                                   "seconds": seconds, "outcome": outcome})
        shown = result["backends"][name] if is_backend else result.get(name, outcome)
        print(f"[gpu_check] {name} ({seconds:.0f} s, limit {max(limit, 0):.0f} s): {json.dumps(shown)[:600]}",
              flush=True)
    if not args.data:
        shutil.rmtree(data_dir, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(summary_markdown(result))
    print(summary_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
