"""Frames per second of render.py's split rendering, the PNGs written on the main thread or by
the writer pool (``--write-workers``), on a synthetic subject.

    python bench/render_io.py [--work DIR] [--downscale 2] [--frames 16] [--workers 0 2 4]
                              [--model MODEL]    # an already trained model folder instead

Builds (or reuses, in ``--work``) a synthetic subject (``scripts/make_synthetic_subject.py``:
one identity, 16 cameras, images 550x802 / ``--downscale``) and a tensorial avatar trained for a
few iterations on it, then prints two tables:

- ``render.py``: frames/s of ``Renderer.render_splits(["test"])`` (render, GT decode, three PNGs
  a frame: render, GT, mask) over ``--frames`` frames, for each ``--workers`` (0: the PNGs
  written on the main thread, as render.py did before the pool), into a fresh output folder each
  time (nothing resumed);
- ``write path``: frames/s of writing those frames' three PNGs alone (pre-rendered images, the
  GT decoded by the writer, as in render.py) on the main thread and with the pool: the ceiling
  a fast (GPU) render meets, where the render itself takes a few milliseconds.

On the CPU the render dominates (seconds a frame at 550x802 with the torch rasterizer), so the
first table moves little; the second shows what the pool does for the disk work.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flame_model import frame_motion  # noqa: E402
from scene.renderer import Renderer, RenderOptions, reenactment_vertices, write_frame  # noqa: E402
from utils.cli_common import even_subset  # noqa: E402
from utils.write_pool import WritePool  # noqa: E402


def run(cmd: list) -> None:
    proc = subprocess.run(list(map(str, cmd)), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{cmd[1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def build_model(work: Path, downscale: int) -> Path:
    """A synthetic subject at 550x802 / downscale and a tensorial avatar trained 3 iterations on it."""
    data, model = work / f"data_ds{downscale}", work / f"model_ds{downscale}"
    if not (data / "synthetic_manifest.json").is_file():
        print(f"[bench] generating the synthetic subject into {data} ...", flush=True)
        run([sys.executable, "scripts/make_synthetic_subject.py", "--out", data, "--downscale", downscale,
             "--identities", "1", "--timesteps", "2", "--train-sequences", "1", "--test-timesteps", "2",
             "--free-timesteps", "1", "--seed", "0", "--quiet"])
    if not (model / "checkpoints").is_dir():
        print(f"[bench] training a tensorial avatar into {model} ...", flush=True)
        union = next((data / "s000").glob("UNION*"))
        run([sys.executable, "train.py", "-s", union, "-m", model, "--flame", data / "flame/flame2023.pkl",
             "--config", "configs/tensorial.yaml", "--config", "configs/demo.yaml", "--iterations", 3, "--eval",
             "--set", "run.eval_max_frames=1", "--quiet"])
    return model


def time_render_splits(model: Path, frames: int, workers: int) -> tuple[float, int, str]:
    renderer = Renderer(RenderOptions(str(model), max_frames=frames, write_workers=workers, quiet=True))
    out = renderer.out_dir("test")
    shutil.rmtree(out.parent, ignore_errors=True)
    start = time.perf_counter()
    renderer.render_splits(["test"])
    seconds = time.perf_counter() - start
    size = f"{renderer.subject.frames['test'][0].width}x{renderer.subject.frames['test'][0].height}"
    return seconds, len(list((out / "renders").glob("*.png"))), size


def rendered_frames(model: Path, frames: int) -> tuple[object, list]:
    """The subject and ``frames`` test frames rendered once: [(name, {subfolder: image or loader})]."""
    renderer = Renderer(RenderOptions(str(model), quiet=True))
    subject = renderer.subject
    motion_fn = renderer.motion_from(subject)
    outputs = []
    for f in even_subset(subject.frames["test"], frames):
        m = motion_fn(f.timestep)
        image = renderer.render(reenactment_vertices(renderer.model, m)[0], frame_motion(m), f.viewmat,
                                f.K, f.width, f.height).cpu()
        outputs.append((f.image_name, {"gt": lambda f=f: subject.load_image(f),
                                       "masks": lambda f=f: subject.load_mask(f), "renders": image}))
    return subject, outputs


def time_write_path(subject, outputs: list, workers: int, tmp: Path) -> float:
    subject.image_cache.clear()  # GT decoded from disk in the timed part, as render.py does
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    with WritePool(workers) as pool:
        for name, out in outputs:
            pool.submit(write_frame, tmp, name, out)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/avatar_bench_render_io"))
    p.add_argument("--downscale", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    p.add_argument("--model", type=Path, help="a trained model folder (its test split is rendered)")
    args = p.parse_args()
    model = args.model or build_model(args.work, args.downscale)
    print(f"| render.py test split, {args.frames} frames | seconds | frames/s |\n|---|---|---|")
    for workers in args.workers:
        seconds, n, size = time_render_splits(model, args.frames, workers)
        label = "main thread (before the pool)" if workers == 0 else f"{workers} writer threads"
        print(f"| {label}, {n} frames at {size} | {seconds:.2f} | {n / seconds:.2f} |", flush=True)
    print(f"\n| write path alone (3 PNGs a frame, GT decoded), {args.frames} frames | seconds | frames/s |\n|---|---|---|")
    subject, outputs = rendered_frames(model, args.frames)
    for workers in args.workers:
        seconds = time_write_path(subject, outputs, workers, args.work / "write_path")
        label = "main thread" if workers == 0 else f"{workers} writer threads"
        print(f"| {label} | {seconds:.2f} | {args.frames / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
