"""Shared checks of the methods written from papers (tests/test_gha.py, tests/test_npga.py): the
short densification schedule of their 20-step trainings, and the fit of one synthetic frame."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

import train

#: --set overrides of a 20-step training that densifies at steps 5, 10 and 15 (every splat: no
#: gradient threshold), saves at 10 and 20 and never evaluates.
DENSIFY_SOON = ["--set", "densify.densify_from_iter=4", "--set", "densify.densification_interval=5",
                "--set", "densify.densify_until_iter=16", "--set", "densify.grad_threshold=0",
                "--set", "densify.max_splats=400", "--set", "run.save_interval=10", "--set", "run.eval_interval=1000"]


def one_frame_subject(synthetic_dataset: dict, name: str) -> Path:
    """A copy of the synthetic subject s000 whose training split is one frame (camera 9, the first
    timestep), made once per session under ``UNION_one_frame_<name>``."""
    union = Path(synthetic_dataset["subjects"]["s000"]["union"])
    one = union.parent / f"UNION_one_frame_{name}"
    if not one.exists():
        shutil.copytree(union, one)
        transforms = json.loads((one / "transforms_train.json").read_text())
        transforms["frames"] = [f for f in transforms["frames"] if f["camera_index"] == 9 and f["timestep_index"] == 0]
        (one / "transforms_train.json").write_text(json.dumps(transforms))
    return one


def training_frame_psnr(args: list, iterations: int) -> float:
    """Train the train.py command line ``args`` (a one-frame subject) for ``iterations`` steps in
    this process; the PSNR (dB) of its render of that frame against the frame."""
    trainer = train.Trainer(train.request_from_args(train.parse_args(list(map(str, args)))))
    assert len(trainer.train_frames) == 1
    for step in range(1, iterations + 1):
        trainer.step = step
        trainer.training_step(step)
    with torch.no_grad():
        result, _ = trainer.render_frame(trainer.train_frames[0], iterations)
        gt = trainer.loader.get(0)
        value = float(-10 * torch.log10(((result.image - gt) ** 2).mean()))
    print(f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB")
    return value


def render_one_val_frame(model: Path, iteration: int) -> None:
    """render.py renders one val frame of ``model`` at the ground truth's size."""
    import render
    from PIL import Image
    assert render.main(["-m", str(model), "--split", "val", "--max-frames", "1", "--quiet"]) == 0
    rendered = next((model / f"val/ours_{iteration}/renders").glob("*.png"))
    assert Image.open(rendered).size == Image.open(model / f"val/ours_{iteration}/gt" / rendered.name).size


def export_without_screen_stage(model: Path, ply: Path, capsys, stage: str) -> tuple[dict, dict]:
    """export.py writes a frame of ``model`` (whose screen stage ``stage`` a 3DGS file cannot hold)
    to ``ply``, says the stage is left out, and the file renders the splats' own RGB channels back
    (> 40 dB). Returns (the PLY as read back, the export report)."""
    import export
    from scene.interop.export_3dgs import read_3dgs_ply
    capsys.readouterr()
    assert export.main(["-m", str(model), "-o", str(ply), "--device", "cpu"]) == 0
    assert f"screen-space stage (model.screen '{stage}') is not in the file" in capsys.readouterr().out
    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["screen_stage_left_out"] == stage
    assert report["frames"][0]["check_psnr_db"] > 40
    return read_3dgs_ply(ply), report
