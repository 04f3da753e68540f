"""One prepared check of the GPU path: environment, every rasterizer backend's parity with the
torch reference, full-avatar rendering speed and training speed at NeRSemble's 550x802.

Writes ``OUT/gpu_check.json`` (every figure and every failure message) and ``OUT/gpu_check.md``
(the same as Markdown tables for docs/BENCHMARKS.md). Each backend runs in its own subprocess
under its own time limit (gsplat compiles its CUDA code on first use, which can take minutes or
fail or hang), inside one overall budget, so the whole check fits one call of at most 10 minutes.

Sections:
  environment  GPU, driver, torch and CUDA versions, nvcc, gsplat and triton versions;
  tests        the test files whose CUDA-only tests the CPU suite skips (CUDA graphs, compiled
               Triton kernels, gsplat and the torch backend on CUDA), through pytest: the summary
               line and every failure;
  subject      a full-resolution synthetic subject (scripts/make_synthetic_subject.py --preset
               nersemble, fewer timesteps), generated on all cores;
  per backend  available or the first line of why not; parity with the torch backend on the CPU
               on the probe scene (image max abs difference, relative gradient error per input);
               rendering of the full avatar (~100k splats: model.geometry.init_splats_per_triangle=12) at
               550x802: FPS and ms per phase (decoders, rasterization), synchronised, after
               warm-up, the host-device syncs of one frame, and for triton the FPS of the same
               frame replayed as one CUDA graph (scene.rendering.GraphedAvatarRenderer) and the
               syncs of a frame with a fixed intersection capacity (must be 0);
               training of the tensorial config: iterations per second, ms per phase of the
               step, peak GPU memory, and the host-device synchronisations of one step.

On a GPU machine with no network (python3 with torch, triton, numpy, scipy, scikit-learn, Pillow,
imageio, PyYAML, tqdm; nvcc), gsplat and plyfile travel as wheels. Here, in the repository root:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl gsplat==1.5.3 plyfile==1.1.5

and there (the device tool's ``run`` with ``carry: [".whl"]``, timeout 600):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; python3 bench/gpu_check.py --out $OUT/gpu_check

On the CPU, the same code at tiny sizes (what tests/test_gpu_check.py runs, so it cannot rot):

    python bench/gpu_check.py --device cpu --quick --out /tmp/gpu_check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# Sizes: full (a GPU machine) and quick (the CPU test).
SIZES = {
    "full": {"subject": ["--preset", "nersemble", "--timesteps", "4", "--test-timesteps", "2",
                         "--free-timesteps", "1"],
             "splats_per_triangle": 12, "render_frames": 100, "train_warmup": 20, "train_steps": 200},
    "quick": {"subject": ["--downscale", "10", "--cameras", "9", "--timesteps", "2", "--test-timesteps", "1",
                          "--free-timesteps", "1", "--train-sequences", "1"],
              "splats_per_triangle": 1, "render_frames": 1, "train_warmup": 1, "train_steps": 1},
}
# The test files whose CUDA-only tests the CPU suite skips (CUDA graphs, compiled Triton kernels,
# gsplat against torch, the torch backend on CUDA); on the CPU only the first (the section's own test).
CUDA_TESTS = ["tests/test_sync_free_render.py", "tests/test_triton_backend.py", "tests/test_rasterizer.py",
              "tests/test_backends.py"]
# Seconds each part may take at most (the overall budget may cut them shorter): each backend
# "backend" seconds, gsplat more (it compiles its CUDA code on first use).
LIMITS = {"tests": 150, "subject": 180, "backend": 150, "gsplat": 240}


# ---------------------------------------------------------------------------------------------
# environment


def _command_line(cmd: list[str], timeout: float = 20) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        return f"{cmd[0]} not found"
    try:
        res = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]} failed: {exc}"
    return (res.stdout.strip() or res.stderr.strip()).splitlines()[-1] if (res.stdout or res.stderr) else ""


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception as exc:  # not installed
        return f"not installed ({type(exc).__name__})"


def environment() -> dict:
    import torch
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvcc": _command_line(["nvcc", "--version"]),
        "nvidia_smi": _command_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"]),
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
# one backend (runs in its own subprocess)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _sync_points(fn, device) -> dict:
    """Host-device synchronisations while ``fn()`` runs (CUDA's sync debug mode): their count and
    where in the code they happen."""
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
    where = {}
    for w in caught:
        key = f"{Path(w.filename).relative_to(REPO) if str(w.filename).startswith(str(REPO)) else w.filename}:{w.lineno}"
        where[key] = where.get(key, 0) + 1
    return {"count": sum(where.values()), "where": where}


def _one_training_step(trainer) -> None:
    trainer.training_step(trainer.step + 1)
    trainer.step += 1


def check_backend(name: str, device_name: str, subject: str, flame: str, size: dict, scratch: Path) -> dict:
    """Availability, parity, rendering and training figures of one backend (see module doc)."""
    import torch

    from gaussian_renderer.parity import compare_with_reference
    from gaussian_renderer.registry import get_backend
    from scene.rendering import measure_render_speed, render_avatar
    from step_profile import build_trainer, profile

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

    sets = [f"model.geometry.init_splats_per_triangle={size['splats_per_triangle']}", "densify.enabled=false"]
    iterations = size["train_warmup"] + 2 * size["train_steps"] + 4
    try:
        trainer = build_trainer(subject, flame, scratch / f"model_{name}", ["configs/tensorial.yaml"], sets,
                                device_name, name, iterations)
    except Exception as exc:
        out["setup_error"] = _first_line(exc)
        return out
    try:
        frame = (trainer.subject.frames["test"] or trainer.subject.frames["val"])[0]
        row = trainer.subject.timestep_row[frame.timestep]
        rows = trainer.row_index[row:row + 1]
        params = trainer.sequence.row_params(rows)
        inputs = (trainer.avatar, trainer.sequence.vertices(rows)[0], params["expr"][0], params["jaw_pose"][0],
                  frame.viewmat.to(device), frame.K.to(device), frame.width, frame.height, trainer.background)
        render = measure_render_speed(*inputs, name, frames=size["render_frames"])
        with torch.no_grad():
            syncs = _sync_points(lambda: render_avatar(*inputs, backend=name), device)
        out["render"] = {**render, "splats": len(trainer.avatar.gaussians), "width": frame.width,
                         "height": frame.height, "sync_points_per_frame": syncs}
        if "isect_capacity" in render:  # triton on CUDA: the CUDA-graph path, which must show none
            with torch.no_grad():
                out["render"]["sync_points_per_frame_fixed_capacity"] = _sync_points(
                    lambda: render_avatar(*inputs, backend=name, isect_capacity=render["isect_capacity"]), device)
    except Exception as exc:
        out["render_error"] = _first_line(exc)
    try:
        out["train"] = profile(trainer, size["train_warmup"], size["train_steps"])
        out["train"]["sync_points_per_step"] = _sync_points(lambda: _one_training_step(trainer), device)
    except Exception as exc:
        out["train_error"] = _first_line(exc)
    finally:
        trainer.loader.close()
    return out


# ---------------------------------------------------------------------------------------------
# orchestration


def _run_limited(cmd: list[str], limit: float, env: dict | None = None) -> tuple[int | None, str]:
    """(exit code or None on time-out, the last lines of stderr)."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(limit, 1), cwd=REPO, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, "\n".join(tail.strip().splitlines()[-5:])
    return res.returncode, "\n".join(res.stderr.strip().splitlines()[-5:])


def make_subject(data: Path, size_name: str, limit: float) -> tuple[dict | None, str | None]:
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
    """pytest over ``files`` in a subprocess: its summary line and the FAILED / ERROR lines."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *files]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(limit, 1), cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"files": files, "error": f"timed out after {limit:.0f} s", "seconds": time.perf_counter() - start}
    lines = (res.stdout + res.stderr).strip().splitlines()
    summary = next((ln.strip("= ") for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                                   or "error" in ln)), "")
    return {"files": files, "exit_code": res.returncode, "summary": summary or "\n".join(lines[-3:]),
            "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:40],
            "seconds": time.perf_counter() - start}


def summary_markdown(result: dict) -> str:
    env = result["environment"]
    lines = ["# GPU check", "",
             f"{env.get('gpu', 'no GPU')} ({env.get('nvidia_smi', '')}); torch {env['torch']} (CUDA {env['torch_cuda']}); "
             f"nvcc: {env['nvcc']}; gsplat {env['gsplat']}; triton {env['triton']}; device {result['device']}, "
             f"sizes {result['size']}; {result['seconds']:.0f} s in all.", ""]
    tests = result.get("tests")
    if tests:
        lines += [f"Tests ({', '.join(tests['files'])}): {tests.get('summary') or tests.get('error')}", ""]
        lines += [f"- {ln}" for ln in tests.get("failures", [])] + ([""] if tests.get("failures") else [])
    if result.get("subject_error"):
        lines += [f"Subject: {result['subject_error']}", ""]
    lines += ["| backend | available | image max abs diff | worst relative grad error | render FPS | CUDA-graph FPS | "
              "decoders ms | rasterization ms | syncs / frame | train it/s | train peak MB | syncs / step |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in result["backends"].items():
        par, ren, tr = b.get("parity", {}), b.get("render", {}), b.get("train", {})
        worst = max(par.get("grad_rel", {}).items(), key=lambda kv: kv[1], default=("", float("nan")))
        syncs = tr.get("sync_points_per_step", {}).get("count")
        frame_syncs = ren.get("sync_points_per_frame", {}).get("count")
        fixed_syncs = ren.get("sync_points_per_frame_fixed_capacity", {}).get("count")
        if fixed_syncs is not None:
            frame_syncs = f"{frame_syncs} ({fixed_syncs} with a fixed capacity)"
        fmt = lambda v, f: "" if v is None or v == "" else format(v, f)  # noqa: E731
        lines.append(
            f"| {name} | {'yes' if b.get('available') else 'no'} | {fmt(par.get('image_max_abs'), '.2e')} | "
            f"{fmt(worst[1], '.2e')} {worst[0]} | {fmt(ren.get('fps'), '.1f')} | {fmt(ren.get('fps_cuda_graph'), '.1f')} | "
            f"{fmt(ren.get('ms_decoders'), '.2f')} | {fmt(ren.get('ms_rasterization'), '.2f')} | "
            f"{'' if frame_syncs is None else frame_syncs} | {fmt(tr.get('iterations_per_second'), '.1f')} | "
            f"{fmt(tr.get('peak_memory_mb'), '.0f')} | {'' if syncs is None else syncs} |")
    failures = [(name, key, b[key]) for name, b in result["backends"].items() for key in b
                if key.endswith("_error") or key == "why_not"]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {name} ({key}): {msg}" for name, key, msg in failures]
    for name, b in result["backends"].items():
        if "train" in b:
            lines += ["", f"Training step of {name}, ms per phase: " + ", ".join(
                f"{k} {v:.2f}" for k, v in b["train"]["phases_ms"].items())]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    from gaussian_renderer import backend_names  # every registered backend, in registration order

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    p.add_argument("--backends", nargs="+", default=list(backend_names()), choices=backend_names(),
                   help="which backends to check (default: all: " + " ".join(backend_names()) + ")")
    p.add_argument("--data", help="where the synthetic subject goes (default: a temporary folder)")
    p.add_argument("--no-tests", dest="tests", action="store_false",
                   help="skip the CUDA-only tests (run first: " + ", ".join(CUDA_TESTS) + ")")
    p.add_argument("--budget", type=float, default=560.0, help="overall seconds (one 10-minute call)")
    # internal: one backend's section in a subprocess
    p.add_argument("--section", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--flame", help=argparse.SUPPRESS)
    p.add_argument("--section-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    size_name = "quick" if args.quick else "full"
    if args.section:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
            part = check_backend(args.section, args.device, args.subject, args.flame, SIZES[size_name], Path(scratch))
        Path(args.section_out).write_text(json.dumps(part, indent=2))
        return 0

    start = time.perf_counter()
    deadline = start + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": args.device, "size": size_name, "environment": environment(), "backends": {}}
    print(f"[gpu_check] environment: {json.dumps(result['environment'])}", flush=True)
    if args.device.startswith("cuda") and not result["environment"]["cuda_available"]:
        result["error"] = "CUDA is not available to this torch"
    if args.tests and not result.get("error"):
        files = CUDA_TESTS if size_name == "full" else CUDA_TESTS[:1]
        result["tests"] = run_cuda_tests(files, min(LIMITS["tests"], deadline - time.perf_counter()))
        print(f"[gpu_check] tests: {json.dumps(result['tests'])[:600]}", flush=True)
    data_dir = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="gpu_check_data_"))
    subject, err = (None, result.get("error")) if result.get("error") else make_subject(
        data_dir, size_name, min(LIMITS["subject"], deadline - time.perf_counter()))
    if subject is not None:
        result["subject"] = subject
        print(f"[gpu_check] subject in {subject['seconds']:.0f} s: {subject['union']}", flush=True)
        for name in args.backends:
            limit = min(LIMITS.get(name, LIMITS["backend"]), deadline - time.perf_counter())
            if limit < 10:
                result["backends"][name] = {"backend": name, "skipped_error": "the overall budget ran out"}
                continue
            part_file = out / f"part_{name}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--device", args.device,
                   "--section", name, "--subject", subject["union"], "--flame", subject["flame"],
                   "--section-out", str(part_file)] + (["--quick"] if args.quick else [])
            # On the CPU the Triton kernels run in Triton's interpreter (slow, but the same code).
            env = dict(os.environ, TRITON_INTERPRET="1") if name == "triton" and args.device == "cpu" else None
            t0 = time.perf_counter()
            code, tail = _run_limited(cmd, limit, env)
            if code == 0 and part_file.is_file():
                result["backends"][name] = json.loads(part_file.read_text())
                part_file.unlink()
            else:
                why = f"timed out after {limit:.0f} s" if code is None else f"exited with {code}"
                result["backends"][name] = {"backend": name, "section_error": f"{why}: {tail}"}
            result["backends"][name]["seconds"] = time.perf_counter() - t0
            print(f"[gpu_check] {name}: {json.dumps(result['backends'][name])[:600]}", flush=True)
    else:
        result["subject_error"] = err
    if not args.data:
        shutil.rmtree(data_dir, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(summary_markdown(result))
    print(summary_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
