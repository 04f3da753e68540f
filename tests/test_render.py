"""render.py on a tiny trained avatar: splits, videos, reenactment, orbit, speed, storage, errors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

import render  # noqa: E402
from scene.model.components import SplatGeometry  # noqa: E402
from scene.renderer import reenactment_vertices  # noqa: E402
import train  # noqa: E402
from flame_model import FLAME  # noqa: E402
from scene.data.datasets import load_sequence  # noqa: E402
from utils.image_io import read_rgb  # noqa: E402


@pytest.fixture(scope="module")
def avatar(synthetic_dataset, tmp_path_factory):
    """A tensorial avatar trained for a few iterations (feature lines on) on the small subject."""
    model = tmp_path_factory.mktemp("render") / "avatar"
    args = ["-s", synthetic_dataset["subjects"]["s000"]["union"], "-m", model, "--flame", synthetic_dataset["flame_model"],
            "--config", REPO / "configs/tensorial.yaml", "--config", REPO / "configs/demo.yaml", "--iterations", "20",
            "--set", "model.opacity.feature_lines.warmup=0.25", "--eval", "--quiet"]
    assert train.main(list(map(str, args))) == 0
    return {"model": model, "data": synthetic_dataset}


def run_render(*args):
    return subprocess.run([sys.executable, str(REPO / "render.py"), *map(str, args)], cwd=REPO, capture_output=True, text=True)


def test_splits_render_beside_ground_truth_with_videos(avatar):
    model = avatar["model"]
    assert render.main(["-m", str(model), "--split", "val", "test", "--video", "--quiet"]) == 0
    for split, count in (("val", 2 * 4), ("test", 3 * 16)):
        out = model / split / "ours_20"
        renders = sorted(p.name for p in (out / "renders").glob("*.png"))
        assert len(renders) == count
        assert renders == sorted(p.name for p in (out / "gt").glob("*.png"))
        assert renders == sorted(p.name for p in (out / "masks").glob("*.png"))
        r, g = read_rgb(out / "renders" / renders[0]), read_rgb(out / "gt" / renders[0])
        assert r.shape == g.shape == (80, 55, 3)
        assert float((r - g).abs().mean()) < 0.2  # a head where the head is, not noise
        for video in ("render.mp4", "compare.mp4"):
            assert (out / video).stat().st_size > 1000
    storage = json.loads((model / "storage.json").read_text())
    assert {"splats", "triplane", "feature_lines", "color_decoder", "opacity_decoder"} <= set(storage["bytes"])
    # The triplane is 128 x 128 x (32 + 16 + 16) float32 values as saved (plus a small header).
    assert 128 * 128 * 64 * 4 <= storage["bytes"]["triplane"] < 128 * 128 * 64 * 4 + 10_000


def test_each_frame_gets_its_own_opacity_offsets(avatar):
    """Two test frames with different expressions get different offsets from the same avatar."""
    from scene.model.checkpoint import load_model
    loaded = load_model(avatar["model"])
    with torch.no_grad():  # give the lines content so that offsets depend on the expression
        loaded.avatar.opacity.lines.expr_lines.normal_(0, 1.0)
    canon = SplatGeometry.canonical(loaded.avatar.canonical_splat_positions())
    seq = load_sequence(avatar["data"]["subjects"]["s000"]["sequences"]["TEST"])
    expr, jaw = seq.flame["expr"], seq.flame["jaw_pose"]
    d0 = loaded.avatar.opacity(canon, expr[0], jaw[0])
    d1 = loaded.avatar.opacity(canon, expr[-1], jaw[-1])
    assert not torch.allclose(d0, d1)


def make_other_identity(sequence: Path, dest: Path, seed: int = 5) -> Path:
    """Copy a driving sequence and give it another identity (shape and static offset)."""
    target = dest / (sequence.name.replace("s000", "s099"))
    shutil.copytree(sequence, target)
    rng = np.random.default_rng(seed)
    shape = rng.normal(0, 1.5, 300).astype(np.float32)
    for npz in [target / "canonical_flame_param.npz", *sorted((target / "flame_param").glob("*.npz"))]:
        data = dict(np.load(npz))
        data["shape"] = shape
        data["static_offset"] = np.zeros_like(data["static_offset"])
        np.savez(npz, **data)
    return target


def test_cross_identity_reenactment_takes_shape_from_avatar_motion_from_target(avatar, tmp_path):
    data = avatar["data"]
    target = make_other_identity(Path(data["subjects"]["s000"]["sequences"]["FREE"]), tmp_path)
    model = avatar["model"]
    assert render.main(["-m", str(model), "--target", str(target), "--camera", "8", "--video", "--quiet"]) == 0
    out = model / f"reenact_{target.name}_cam08" / "ours_20"
    assert len(list((out / "renders").glob("*.png"))) == 3  # one per timestep, seen by camera 8
    assert (out / "render.mp4").is_file()

    # Vertex level: the avatar's identity with the target's motion.
    renderer = render.Renderer(render.options_from_args(render.parse_args(["-m", str(model), "--quiet"])))
    seq = load_sequence(target)
    motion = renderer.motion_from(seq)(seq.timesteps[1])
    verts = reenactment_vertices(renderer.model, motion)[0]
    flame = FLAME(data["flame_model"])
    m = {k: v.float() for k, v in motion.items()}
    expected = flame(renderer.model.shape, m["expr"], m["rotation"], m["neck_pose"], m["jaw_pose"], m["eyes_pose"],
                     m["translation"], static_offset=renderer.model.static_offset[None])[0]
    assert torch.allclose(verts, expected, atol=1e-6)
    targets_own = flame(seq.shape, m["expr"], m["rotation"], m["neck_pose"], m["jaw_pose"], m["eyes_pose"], m["translation"])[0]
    assert (verts - targets_own).norm(dim=-1).max() > 1e-3  # not the target's identity
    neutral = flame(renderer.model.shape, torch.zeros_like(m["expr"]), m["rotation"], m["neck_pose"], torch.zeros_like(m["jaw_pose"]),
                    m["eyes_pose"], m["translation"], static_offset=renderer.model.static_offset[None])[0]
    assert (verts - neutral).norm(dim=-1).max() > 1e-4  # the target's expression is applied


def test_self_reenactment_on_free_sequence_scores(avatar):
    seq = Path(avatar["data"]["subjects"]["s000"]["sequences"]["FREE"])
    model = avatar["model"]
    assert render.main(["-m", str(model), "--target", str(seq), "--max-frames", "6", "--quiet"]) == 0
    out = model / f"reenact_{seq.name}" / "ours_20"
    assert len(list((out / "gt").glob("*.png"))) == 6
    result = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "-m", str(model), "--split", f"reenact_{seq.name}",
                             "--lpips", "alex"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    scores = json.loads((model / "results.json").read_text())[f"reenact_{seq.name}"]
    assert scores["n_images"] == 6 and 5 < scores["PSNR"] < 60


def test_orbit_benchmark_and_half_export(avatar):
    model = avatar["model"]
    assert render.main(["-m", str(model), "--orbit", "--orbit-frames", "4", "--benchmark", "--benchmark-frames", "3",
                        "--half", "--video", "--quiet"]) == 0
    frames = sorted((model / "orbit" / "ours_20" / "renders").glob("*.png"))
    assert len(frames) == 4
    a, b = read_rgb(frames[0]), read_rgb(frames[2])
    assert (a < 0.95).any() and (b < 0.95).any()  # the head is in view from the front and the back
    assert not torch.equal(a, b)
    bench = json.loads((model / "benchmark.json").read_text())
    assert bench["fps"] > 0 and bench["ms_rasterization"] > 0 and bench["ms_decoders"] > 0
    assert bench["backend"] == "torch" and bench["device"].startswith("cpu") and bench["backend_reason"]
    half = json.loads((model / "export_half.json").read_text())
    assert half["bytes_half"] < half["bytes_full"]
    assert half["psnr_full_vs_half_db"] > 40


def test_bad_inputs_give_one_clear_error(avatar, tmp_path):
    result = run_render("-m", tmp_path / "nothing")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "config.yaml" in result.stderr
    model = tmp_path / "copy"
    shutil.copytree(avatar["model"], model)
    shutil.rmtree(model / "checkpoints")
    result = run_render("-m", model)
    assert result.returncode == 2 and "no checkpoint" in result.stderr and "train.py" in result.stderr
    result = run_render("-m", avatar["model"], "--target", tmp_path / "no_such_sequence")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "no_such_sequence" in result.stderr
    result = run_render("-m", avatar["model"], "--iteration", "12345")
    assert result.returncode == 2 and "12345" in result.stderr


def test_a_split_without_frames_is_said_even_when_quiet_and_evaluate_says_why(avatar, tmp_path):
    """Camera 9 sees no novel-view frame (protocol ga: val is camera 8): render.py says so under
    --quiet, and evaluate.py's error says what that means instead of only 'run render.py'."""
    model = tmp_path / "copy"
    shutil.copytree(avatar["model"], model, ignore=shutil.ignore_patterns("val", "test"))
    result = run_render("-m", model, "--split", "val", "--camera", "9", "--quiet")
    assert result.returncode == 0 and not (model / "val").exists()
    assert "split val has no frames seen by camera 9 under protocol ga; nothing to render or score" in result.stderr
    result = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "-m", str(model), "--split", "val"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no frames" in result.stderr and "leave 'val' out of --split" in result.stderr
