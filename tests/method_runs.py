"""Runs the method tests share (tests/test_gha.py, tests/test_gaussianhead.py): a short training
with densification on the tiny fixture, and the fit of one frame of the synthetic subject."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

import train

__all__ = ["short_training_args", "one_frame_subject", "fit_one_frame"]


def short_training_args(tiny, model: Path, configs: list, iterations: int = 20, extra: tuple = ()) -> list[str]:
    """train.py arguments: ``iterations`` steps on the tiny fixture under ``configs``, densifying
    every 5 steps from 4 to 16 (every splat a candidate, at most 400), saving every 10."""
    return list(map(str, ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"],
                          *[a for c in configs for a in ("--config", c)], "--iterations", iterations, "--eval",
                          "--quiet", "--set", "densify.densify_from_iter=4", "--set",
                          "densify.densification_interval=5", "--set", "densify.densify_until_iter=16", "--set",
                          "densify.grad_threshold=0", "--set", "densify.max_splats=400", "--set",
                          "run.save_interval=10", "--set", "run.eval_interval=1000", *extra]))


def one_frame_subject(union: Path, name: str) -> Path:
    """A copy of the synthetic subject ``union`` (beside it, as ``name``) whose training split is
    one frame: camera 9 at the first timestep."""
    one = union.parent / name
    if not one.exists():
        shutil.copytree(union, one)
        transforms = json.loads((one / "transforms_train.json").read_text())
        transforms["frames"] = [f for f in transforms["frames"] if f["camera_index"] == 9 and f["timestep_index"] == 0]
        (one / "transforms_train.json").write_text(json.dumps(transforms))
    return one


def fit_one_frame(subject: Path, flame, configs: list, iterations: int, model: Path) -> float:
    """PSNR (dB) of the training frame of a one-frame ``subject`` after ``iterations`` steps."""
    args = ["-s", subject, "-m", model, "--flame", flame, *[a for c in configs for a in ("--config", c)],
            "--iterations", iterations, "--eval", "--quiet", "--set", "run.eval_interval=100000",
            "--set", "run.save_interval=100000"]
    trainer = train.Trainer(train.request_from_args(train.parse_args(list(map(str, args)))))
    assert len(trainer.train_frames) == 1
    for step in range(1, iterations + 1):
        trainer.step = step
        trainer.training_step(step)
    with torch.no_grad():
        result, _ = trainer.render_frame(trainer.train_frames[0], iterations)
        gt = trainer.loader.get(0)
        return float(-10 * torch.log10(((result.image - gt) ** 2).mean()))
