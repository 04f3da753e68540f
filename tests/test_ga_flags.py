"""GaussianAvatars' train.py / render.py flags: each works with GA's meaning, or is one clear line (exit 2)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402
import train  # noqa: E402
from scene.config import load_saved_config  # noqa: E402

ITERATIONS = 3
# test_train.py's small schedule, less its run.eval_interval (a --set would win over --interval).
SCHEDULE = ["--config", REPO / "configs/tensorial.yaml", "--config", REPO / "configs/demo.yaml",
            "--set", "densify.densify_from_iter=5", "--set", "densify.densification_interval=10",
            "--set", "model.opacity.feature_lines.warmup=0.2", "--set", "sampling.n_classes=2", "--set", "run.eval_max_frames=2", "--eval", "--quiet"]


def saved_run(model: Path):
    """The run section of the config saved in OUTPUT/config.yaml."""
    return load_saved_config(model)[0].run


def saved_data(model: Path) -> Path:
    """The folder that holds the training subject's UNION and sequence folders."""
    return Path(load_saved_config(model)[1]["source_path"]).parent


def train_with(tiny, model: Path, *flags) -> int:
    args = ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"], *SCHEDULE,
            "--iterations", ITERATIONS, *flags]
    return train.main(list(map(str, args)))


@pytest.fixture(scope="module")
def avatar(tiny, tmp_path_factory):
    """An avatar trained for a few iterations on the tiny subject (protocol ga: val = camera 1,
    test = the SEQ_TEST sequence, all cameras)."""
    model = tmp_path_factory.mktemp("ga_flags") / "avatar"
    assert train_with(tiny, model) == 0
    return model


def rendered(model: Path, name: str) -> list[str]:
    return sorted(p.stem for p in (model / name / f"ours_{ITERATIONS}" / "renders").glob("*.png"))


# -- train.py -----------------------------------------------------------------------------------

def check_white_background(tiny, tmp_path):
    black = tmp_path / "black.yaml"
    black.write_text("run:\n  background: [0.0, 0.0, 0.0]\n")
    model = tmp_path / "m"
    assert train_with(tiny, model, "--config", black, "-w") == 0
    assert saved_run(model).background == [1.0, 1.0, 1.0]
    overrides = train.cli_overrides(train.parse_args(["-m", "x", "--white_background"]))
    assert overrides == [{"run": {"background": [1.0, 1.0, 1.0]}}]


def check_interval(tiny, tmp_path):
    model = tmp_path / "m"
    assert train_with(tiny, model, "--interval", "2") == 0
    assert saved_run(model).eval_interval == saved_run(model).save_interval == 2
    evaluated = [json.loads(line)["iteration"] for line in (model / "train_log.jsonl").read_text().splitlines()]
    assert evaluated == [2, 3]  # every 2 iterations, and the last
    overrides = train.cli_overrides(train.parse_args(["-m", "x", "--interval", "7"]))
    assert overrides == [{"run": {"eval_interval": 7}}, {"run": {"save_interval": 7}}]


def check_bind_to_mesh(tiny, tmp_path):
    assert train_with(tiny, tmp_path / "m", "--bind_to_mesh") == 0
    assert (tmp_path / "m" / "checkpoints" / f"iteration_{ITERATIONS:07d}" / "splats.ply").is_file()
    help_text = subprocess.run([sys.executable, str(REPO / "train.py"), "--help"], cwd=REPO, capture_output=True,
                               text=True).stdout
    assert "--bind_to_mesh" in help_text and "ignored" in help_text


def check_port_refused(tiny, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "-s", str(tiny["subject"]), "-m",
                             str(tmp_path / "m"), "--port", "6009"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --port")
    assert "no training viewer" in result.stderr
    assert not (tmp_path / "m").exists()


# -- render.py ----------------------------------------------------------------------------------

def check_select_camera_id(avatar, tmp_path):
    for flag in ("--select_camera_id", "--camera"):
        assert render.main(["-m", str(avatar), "--split", "test", flag, "2", "--quiet"]) == 0
        names = rendered(avatar, "test")
        assert len(names) == 3 and all(n.endswith("_02") for n in names), names


def check_skip_flags(avatar, tmp_path):
    model = tmp_path / "copy"
    shutil.copytree(avatar, model)
    assert render.main(["-m", str(model), "--skip_train", "--skip_val", "--max-frames", "2", "--quiet"]) == 0
    assert not (model / "val").exists() and not (model / "train").exists()
    assert len(rendered(model, "test")) == 2
    assert render.main(["-m", str(model), "--skip_test", "--max-frames", "2", "--quiet"]) == 0
    assert len(rendered(model, "train")) == 2 and len(rendered(model, "val")) == 2
    result = subprocess.run([sys.executable, str(REPO / "render.py"), "-m", str(model), "--skip_train", "--skip_val",
                             "--skip_test"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.count("\n") == 1 and "nothing to render" in result.stderr


def check_target_path(avatar, tmp_path):
    target = saved_data(avatar) / "SEQ_TEST"
    for flag in ("-t", "--target_path"):
        assert render.main(["-m", str(avatar), flag, str(target), "--max-frames", "2", "--quiet"]) == 0
        assert len(rendered(avatar, "reenact_SEQ_TEST")) == 2


def check_source_path(avatar, tmp_path):
    """-s reads the subject from a moved copy: its (changed) photos become the saved ground truth."""
    data = saved_data(avatar)
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    gray = np.full((64, 48, 3), 77, dtype=np.uint8)
    for image in (moved / "SEQ_TEST" / "images").glob("*_02.png"):
        Image.fromarray(gray).save(image)
    model = tmp_path / "copy"
    shutil.copytree(avatar, model)
    result = subprocess.run([sys.executable, str(REPO / "render.py"), "-m", str(model), "-s", str(moved / "UNION"),
                             "--split", "test", "--camera", "2"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "(-s)" in result.stdout + result.stderr
    gt = sorted((model / "test" / f"ours_{ITERATIONS}" / "gt").glob("*.png"))
    assert len(gt) == 3 and all((np.asarray(Image.open(p)) == 77).all() for p in gt)
    bad = subprocess.run([sys.executable, str(REPO / "render.py"), "-m", str(model), "-s", str(tmp_path / "gone")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "gone" in bad.stderr


TRAIN_FLAGS = {"-w / --white_background": check_white_background, "--interval": check_interval,
               "--bind_to_mesh": check_bind_to_mesh, "--port": check_port_refused}
RENDER_FLAGS = {"--select_camera_id / --camera": check_select_camera_id,
                "--skip_train / --skip_val / --skip_test": check_skip_flags,
                "-t / --target_path": check_target_path, "-s / --source_path": check_source_path}


@pytest.mark.parametrize("flag", TRAIN_FLAGS)
def test_train_flag(flag, tiny, tmp_path):
    TRAIN_FLAGS[flag](tiny, tmp_path)


@pytest.mark.parametrize("flag", RENDER_FLAGS)
def test_render_flag(flag, avatar, tmp_path):
    RENDER_FLAGS[flag](avatar, tmp_path)


def test_tensorboard_images_of_val_and_test(tiny, tmp_path):
    """Each evaluation writes render | ground truth | error of the first val and test frame."""
    pytest.importorskip("torch.utils.tensorboard", reason="tensorboard is not installed (requirements-dev.txt)")
    from tensorboard.backend.event_processing import event_accumulator
    model = tmp_path / "m"
    assert train_with(tiny, model, "--interval", "2") == 0
    events = event_accumulator.EventAccumulator(str(model / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    for split in ("val", "test"):
        images = events.Images(f"{split}/render_gt_error")
        assert [image.step for image in images] == [2, 3]
        assert (images[-1].width, images[-1].height) == (3 * 48, 64)
