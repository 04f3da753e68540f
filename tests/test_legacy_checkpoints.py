"""Model folders written by the code of commit 702a8d2 (before the model-interface refactor) still
load and render to the same pixels.

The fixture (tests/fixtures/legacy_models/, written by tests/fixtures/make_legacy_models.py with
that code and never regenerated) holds a tensorial avatar (triplane, feature lines, jaw bases) and
a GaussianAvatars one (SH degree 3, fine-tuned FLAME parameters), trained 20 iterations with
densification on the ``tiny`` fixture's data, and ``references.pt``: for two frames the FLAME
motion, the posed vertices, the camera and the image and alpha that the old code rendered (torch
backend, CPU). The saved config.yaml points at the deleted data of that run, so FLAME is passed
explicitly (the ``tiny`` fixture writes the same head; its digest is checked first).
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY = FIXTURES / "legacy_models"
MODELS = ("tensorial", "gaussian_avatars")
sys.path.insert(0, str(FIXTURES))

import render  # noqa: E402
from make_legacy_models import flame_digest  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from flame_model import frame_motion  # noqa: E402
from scene.rendering import render_avatar  # noqa: E402


def references(name: str) -> dict:
    return torch.load(LEGACY / name / "references.pt", weights_only=True)


def assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal to float32 rounding (the old code on this machine gives exactly the stored values)."""
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0, msg=lambda m: f"{what}: {m}")


def tiny_masks(tiny) -> Path:
    return Path(tiny["flame"]).parent / "FLAME_masks.pkl"


def test_tiny_fixture_writes_the_head_the_legacy_models_were_trained_with(tiny):
    for name in MODELS:
        assert flame_digest(Path(tiny["flame"]).parent) == references(name)["flame_digest"], (
            "tests/flame_fixtures.write_small_flame no longer writes the FLAME head of the legacy fixture")


@pytest.mark.parametrize("name", MODELS)
def test_legacy_model_renders_the_stored_references(name, tiny):
    refs = references(name)
    loaded = load_model(LEGACY / name, flame_path=str(tiny["flame"]), masks_path=str(tiny_masks(tiny)))
    assert loaded.iteration == refs["iteration"]
    assert len(loaded.avatar.gaussians) == refs["n_splats"]
    for frame in refs["frames"]:
        where = f"{name}, timestep {frame['timestep']}, camera {frame['camera_index']}"
        with torch.no_grad():
            # The identity (shape, static offset) read back poses FLAME as it did.
            vertices = loaded.flame.motion_vertices(loaded.shape, frame["motion"], loaded.static_offset)[0]
            result = render_avatar(loaded.avatar, frame["vertices"], frame_motion(frame["motion"]), frame["viewmat"],
                                   frame["K"], frame["width"], frame["height"], refs["background"], backend="torch")
        assert_same(vertices, frame["vertices"], f"{where}: vertices")
        assert_same(result.image, frame["image"], f"{where}: image")
        assert_same(result.alpha, frame["alpha"], f"{where}: alpha")


def relocated_copy(name: str, dest: Path, tiny) -> Path:
    """A copy of a legacy model folder whose config.yaml points at the ``tiny`` fixture's data
    (the same subject and head, written elsewhere) instead of the deleted originals."""
    shutil.copytree(LEGACY / name, dest)
    config = dest / "config.yaml"
    old_root = str(Path(yaml.safe_load(config.read_text())["flame_model"]).parent.parent)
    new_root = str(Path(tiny["flame"]).parent.parent)
    config.write_text(config.read_text().replace(old_root, new_root))
    saved = yaml.safe_load(config.read_text())
    assert Path(saved["source_path"]) == Path(tiny["subject"]) and Path(saved["flame_masks"]) == tiny_masks(tiny)
    return dest


@pytest.mark.parametrize("name", MODELS)
def test_render_cli_loads_legacy_model(name, tiny, tmp_path):
    """render.py renders the first val frame (GA: with its fine-tuned FLAME parameters) and the
    storage report; the PNG matches the stored render of that frame to one level."""
    model = relocated_copy(name, tmp_path / name, tiny)
    argv = ["-m", str(model), "--flame", str(tiny["flame"]), "--split", "val", "--max-frames", "1",
            "--device", "cpu", "--backend", "torch", "--quiet"]
    assert render.main(argv) == 0
    refs = references(name)
    assert (model / "storage.json").is_file()
    frame = refs["frames"][0]  # timestep 0 on camera 1, the val camera
    renders = model / "val" / f"ours_{refs['iteration']}" / "renders"
    png = renders / f"{frame['timestep']:05d}_{frame['camera_index']:02d}.png"
    written = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    expected = np.clip(np.rint(frame["image"].numpy() * 255.0), 0, 255).astype(np.int16)
    assert np.abs(written - expected).max() <= 1, f"{png} differs from the reference render"
