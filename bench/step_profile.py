"""Where the time of one training step goes: data, FLAME, decoders, rasterization, loss, backward,
optimisers, densification; on any device, through the product's Trainer (scene/training/trainer.py).

The step is timed with :class:`utils.phase_timer.PhaseTimer`, which synchronises CUDA at every
phase edge, so each phase is charged its own kernels; the unsynchronised rate (what training
runs at) is measured separately over the same number of steps. Feature lines are on from the first
step (``model.opacity.feature_lines.warmup=0``) so the whole method is timed.

    python bench/step_profile.py -s SUBJECT --flame FLAME_PKL [--config configs/tensorial.yaml ...]
        [--device auto] [--backend auto] [--warmup 10] [--steps 50] [--set section.key=value ...]
        [--json FILE]

Examples (docs/BENCHMARKS.md):
    # the demo subject that ./run.sh trains
    python bench/step_profile.py -s data/synthetic/s000/UNION_s000_v16_DS5_whiteBg_staticOffset \\
        --flame data/synthetic/flame/flame2023.pkl
    # a full-resolution subject at a real splat count (~100k)
    python scripts/make_synthetic_subject.py --out data/synthetic_full --preset nersemble
    python bench/step_profile.py -s data/synthetic_full/s000/UNION_s000_v16_DS1_whiteBg_staticOffset \\
        --flame data/synthetic_full/flame/flame2023.pkl --set model.geometry.init_splats_per_triangle=12
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from scene.training.trainer import Trainer, TrainRequest  # noqa: E402
from utils.config import parse_assignment  # noqa: E402
from utils.phase_timer import DISABLED, PhaseTimer  # noqa: E402

PHASES = ("data", "flame", "decoders", "rasterization", "loss", "backward", "optimisers", "densification")
DEFAULT_CONFIGS = ["configs/tensorial.yaml", "configs/demo.yaml"]
# Whole method from step 1; no densification event inside the measured steps (they would time
# the surgery, not the step); no evaluation or checkpoint writes.
PROFILE_SETTINGS = ["model.opacity.feature_lines.warmup=0", "densify.densify_from_iter=1000000000",
                    "run.eval_interval=1000000000", "run.save_interval=1000000000", "run.log_interval=1000000000"]


def build_trainer(subject: str, flame: str, model_dir: Path, configs: list[str], sets: list[str], device: str,
                  backend: str, iterations: int) -> Trainer:
    """A Trainer on ``subject`` writing into ``model_dir`` (a scratch folder), in its step-0 state."""
    overrides = [{"run": {"device": device, "backend": backend}}, {"optim": {"iterations": iterations}}]
    overrides += [parse_assignment(text) for text in PROFILE_SETTINGS + list(sets)]
    return Trainer(TrainRequest(model_path=str(model_dir), source_path=subject, flame=flame, protocol="ga", quiet=True,
                                config_files=[str(REPO / c) if not Path(c).is_absolute() else c for c in configs],
                                overrides=overrides))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(trainer: Trainer, n: int, timer: PhaseTimer = DISABLED) -> float:
    """Run ``n`` training steps (the loop body of Trainer.train without logging); seconds taken."""
    trainer.timer = timer
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(n):
        trainer.training_step(trainer.step + 1)
        trainer.step += 1
    _sync(trainer.device)
    trainer.timer = DISABLED
    return time.perf_counter() - start


def profile(trainer: Trainer, warmup: int, steps: int) -> dict:
    """{"phases_ms": {phase: ms per step}, "step_ms": synchronised total, "unsynced_step_ms",
    "iterations_per_second", "peak_memory_mb" (CUDA only), "splats", "width", "height"}."""
    device = trainer.device
    run_steps(trainer, warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    unsynced = run_steps(trainer, steps) / steps
    timer = PhaseTimer(enabled=True, device=device)
    synced = run_steps(trainer, steps, timer) / steps
    phases = timer.mean_ms(steps)
    frame = trainer.train_frames[0]
    return {
        "phases_ms": {p: phases.get(p, 0.0) for p in PHASES},
        "step_ms": 1000.0 * synced,
        "unsynced_step_ms": 1000.0 * unsynced,
        "iterations_per_second": 1.0 / unsynced,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None,
        "splats": len(trainer.avatar.gaussians),
        "width": frame.width,
        "height": frame.height,
        "device": trainer.runtime["device"],
        "backend": trainer.backend.name,
    }


def format_profile(result: dict) -> str:
    lines = [f"{result['splats']} splats at {result['width']}x{result['height']} on {result['device']}, "
             f"rasterizer {result['backend']}",
             "| phase | ms / step | share |", "|---|---|---|"]
    total = sum(result["phases_ms"].values()) or 1.0
    for name, ms in result["phases_ms"].items():
        lines.append(f"| {name} | {ms:.2f} | {100 * ms / total:.0f}% |")
    lines.append(f"| **step (phases synchronised)** | {result['step_ms']:.2f} | |")
    lines.append(f"| **step (as training runs)** | {result['unsynced_step_ms']:.2f} | "
                 f"{result['iterations_per_second']:.1f} it/s |")
    if result["peak_memory_mb"] is not None:
        lines.append(f"| peak GPU memory | {result['peak_memory_mb']:.0f} MB | |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time each phase of one training step.")
    p.add_argument("-s", "--source_path", required=True, help="subject folder")
    p.add_argument("--flame", required=True, help="FLAME model pickle (masks beside it)")
    p.add_argument("--config", action="append", help=f"configs (default {' '.join(DEFAULT_CONFIGS)})")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", help="also write the result here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from utils.errors import UserFacingError
    with tempfile.TemporaryDirectory(prefix="step_profile_") as scratch:
        try:
            trainer = build_trainer(args.source_path, args.flame, Path(scratch) / "model",
                                    args.config or DEFAULT_CONFIGS, args.set, args.device, args.backend,
                                    iterations=args.warmup + 2 * args.steps + 1)
        except UserFacingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            result = profile(trainer, args.warmup, args.steps)
        finally:
            trainer.loader.close()
    print(format_profile(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
