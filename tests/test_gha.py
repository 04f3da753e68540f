"""The GHA-style method (Gaussian Head Avatar, CVPR 2024; scene/methods/gha, docs/METHODS_GHA.md):
its blend weights, super-resolution stage, perceptual loss, gradients, a 20-step training with
densification that saves, loads, renders, exports and resumes bit-exactly, and a fit of one frame."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avatar_fixtures import sphere_strip  # noqa: E402
from test_train import assert_resume_reproduces  # noqa: E402

import export  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
from scene.config import resolve_config  # noqa: E402
from scene.interop.export_3dgs import read_3dgs_ply  # noqa: E402
from scene.methods.gha.color import GHAColor  # noqa: E402
from scene.methods.gha.geometry import FEATURE, GHAGeometry  # noqa: E402
from scene.methods.gha.landmarks import expression_weight, landmark_distance  # noqa: E402
from scene.methods.gha.networks import ConditionedMLP  # noqa: E402
from scene.methods.gha.super_resolution import GHASuperResolution, SuperResolutionCNN  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.model.components import BuildContext, FlameRig, padded_box  # noqa: E402
from utils.lpips import lpips_weights_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs/gaussian_head_avatar.yaml"
N_EXPR = 4


def tiny_config(tmp_path: Path, lambda_vgg: float = 0.0) -> Path:
    """GHA at toy sizes on the tiny FLAME fixture (its masks have lips and face only)."""
    path = tmp_path / "gha_tiny.yaml"
    path.write_text(
        "model:\n"
        "  geometry: {init_points: 150, feature_dim: 8, hidden: 16, hidden_layers: 1, position_frequencies: 2,\n"
        "             landmark_regions: [lips], mlp_lr: 1.0e-3, feature_lr: 1.0e-3}\n"
        "  color: {channels: 6, feature_dim: 8, hidden: 16, hidden_layers: 1, mlp_lr: 1.0e-3}\n"
        f"  screen: {{in_channels: 6, hidden: 4, scale: 2, lr: 1.0e-3, lambda_vgg: {lambda_vgg}}}\n")
    return path


def small_context(n_vertices: int = 60, dtype=torch.float64) -> BuildContext:
    """A sphere mesh with a "lips" region and a rig whose root joint is vertex 0."""
    verts, faces = sphere_strip(n_vertices)
    verts = verts.to(dtype) * 0.1
    lips = torch.zeros(n_vertices, dtype=torch.bool)
    lips[:8] = True
    regressor = torch.zeros(5, n_vertices, dtype=dtype)
    regressor[:, 0] = 1.0
    rig = FlameRig(regressor, torch.ones(n_vertices, 5, dtype=dtype) / 5, (-1, 0, 1, 1, 1),
                   torch.zeros(n_vertices, 3, N_EXPR, dtype=dtype))
    return BuildContext(faces=faces, canonical_vertices=verts, head_box=padded_box(verts, 0.1), box_padding=0.1,
                        vertex_masks={"lips": lips}, face_masks={}, n_expr=N_EXPR, rig=rig)


def small_model(**geometry):
    cfg = resolve_config([PAPER], [{"model": {"n_expr": N_EXPR, "geometry": {
        "init_points": 12, "feature_dim": 5, "hidden": 6, "hidden_layers": 1, "position_frequencies": 1,
        "landmark_regions": ["lips"], **geometry}, "color": {"channels": 4, "feature_dim": 5, "hidden": 6,
                                                             "hidden_layers": 1},
        "screen": {"in_channels": 4, "hidden": 3, "scale": 2}}}])
    return cfg.model


def random_motion(dtype=torch.float64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda n, s=0.2: (torch.randn(n, generator=g, dtype=torch.float64) * s).to(dtype)  # noqa: E731
    return {"expr": r(N_EXPR, 1.0), "jaw_pose": r(3), "rotation": r(3), "neck_pose": r(3), "eyes_pose": r(6),
            "translation": r(3, 0.05)}


# -- blend weights --------------------------------------------------------------------------------

def test_expression_weight_is_one_within_t1_zero_beyond_t2_and_linear_between():
    d = torch.tensor([0.0, 0.1, 0.15, 0.175, 0.2, 0.225, 0.25, 0.3, 1.0])
    expected = torch.tensor([1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0])
    assert torch.allclose(expression_weight(d, 0.15, 0.25), expected, atol=1e-6)


def test_the_geometry_weighs_splats_by_their_distance_in_head_lengths_to_the_nearest_landmark():
    ctx = small_context(dtype=torch.float32)
    geometry = GHAGeometry(small_model(n_landmarks=1).geometry, ctx)
    landmark, length = geometry.landmarks[0], float(geometry.head_length)
    assert geometry.landmarks.shape == (1, 3)
    assert length == pytest.approx(float((ctx.canonical_vertices.max(0).values
                                          - ctx.canonical_vertices.min(0).values).max()))
    direction = torch.tensor([0.6, 0.0, 0.8])
    distances = torch.tensor([0.0, 0.1, 0.15, 0.2, 0.25, 0.4])  # head lengths
    points = landmark + distances[:, None] * length * direction
    assert torch.allclose(landmark_distance(points, geometry.landmarks) / length, distances, atol=1e-5)
    assert torch.allclose(geometry.expression_weights(points), torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0]),
                          atol=1e-4)


# -- super-resolution -------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1, 2, 4])
def test_the_super_resolution_stage_makes_the_frame_size_from_its_scaled_features(scale):
    cfg = GHASuperResolution.Config(scale=scale, in_channels=7, hidden=4)
    stage = GHASuperResolution(cfg, None)
    width, height = 55, 81
    features = torch.rand(height // scale, width // scale, 7)
    image = stage(features, None, width, height)
    assert image.shape == (height, width, 3)
    # It starts as plain upsampling of the first three channels (its last convolution is zero).
    base = torch.nn.functional.interpolate(features.permute(2, 0, 1)[None, :3], size=(height, width),
                                           mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    assert torch.allclose(image, base if scale > 1 else features[..., :3], atol=1e-6)


def test_the_vgg_loss_of_identical_images_is_zero():
    if not lpips_weights_path("vgg").is_file():
        pytest.skip(f"the VGG weights are not at {lpips_weights_path('vgg')} (scripts/fetch_lpips_weights.py)")
    stage = GHASuperResolution(GHASuperResolution.Config(scale=1, in_channels=3), None)
    stage.set_step(1, 10)
    image = torch.rand(48, 40, 3)
    assert float(stage.perceptual(image, image)) == 0.0
    assert float(stage.perceptual(image, torch.rand(48, 40, 3))) > 0.01


def test_training_without_the_vgg_weights_is_one_error_naming_the_fetch_script(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "empty_cache"))
    config = tiny_config(tmp_path, lambda_vgg=0.1)
    args = ["-s", tiny["subject"], "-m", tmp_path / "m", "--flame", tiny["flame"], "--config", PAPER,
            "--config", config, "--iterations", "2", "--quiet"]
    assert train.main(list(map(str, args))) == 2
    err = capsys.readouterr().err
    assert "scripts/fetch_lpips_weights.py" in err and "gha_sr" in err and "Traceback" not in err
    assert not (tmp_path / "m/checkpoints").exists() or not any((tmp_path / "m/checkpoints").iterdir())


# -- gradients ------------------------------------------------------------------------------------

def test_gradients_of_the_networks_match_finite_differences():
    torch.manual_seed(0)
    mlp = ConditionedMLP(3, 2, 4, 1, 2, zero_output=False).double()
    a, c = torch.randn(5, 3, dtype=torch.float64, requires_grad=True), torch.randn(2, dtype=torch.float64,
                                                                                   requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: mlp(a, c), (a, c))
    cnn = SuperResolutionCNN(4, 3, 2).double()
    torch.nn.init.normal_(cnn.tail.weight, std=0.1)  # not the zero start: the whole network in the gradient
    x = torch.randn(1, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: cnn(x, (7, 9)), (x,))


@pytest.mark.parametrize("driven_by, t1, t2", [("expression", 10.0, 20.0), ("pose", 0.0, 1e-6)])
def test_gradients_through_the_geometry_and_colour_match_finite_differences(driven_by, t1, t2):
    """Every splat driven by the expression MLPs (lambda_exp 1), then by the pose MLPs (0): the
    weights themselves are a fixed function of where a splat is (no gradient through them)."""
    torch.manual_seed(0)
    model = small_model(t1=t1, t2=t2)
    ctx = small_context()
    geometry = GHAGeometry(model.geometry, ctx).double()
    color = GHAColor(model.color, ctx).double()
    for net in [*geometry.mlps.values(), *color.mlps.values()]:  # away from the zero start
        torch.nn.init.normal_(net.net[-1].weight, std=0.3)
    splats = geometry.initial_splats().double()
    assert bool((geometry.expression_weights(splats.params["xyz"]) == (driven_by == "expression")).all())
    motion = random_motion()
    names = ["xyz", "rotation", "log_scale", FEATURE]

    def frame(*tensors):
        one = dict(zip(motion, tensors[len(names):]))
        g = geometry(None, _Splats(splats, dict(zip(names, tensors))), torch.zeros(3, dtype=torch.float64), one)
        g.motion = one
        return g.means, g.quats, g.scales, g.opacity_shift, color(g)["colors"]

    inputs = [splats.params[n].detach().clone().requires_grad_() for n in names]
    inputs += [v.clone().requires_grad_() for v in motion.values()]
    assert torch.autograd.gradcheck(frame, tuple(inputs), atol=1e-6)


class _Splats:
    """The splats with some tensors replaced (gradcheck's inputs)."""

    def __init__(self, splats, replaced: dict):
        self.params = {**dict(splats.params.items()), **replaced}
        self.binding = splats.binding

    def __len__(self):
        return self.binding.shape[0]


# -- training -------------------------------------------------------------------------------------

def train_args(tiny, model: Path, config: Path, iterations: int = 20) -> list[str]:
    return list(map(str, ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"], "--config", PAPER,
                          "--config", config, "--iterations", iterations, "--eval", "--quiet",
                          "--set", "densify.densify_from_iter=4", "--set", "densify.densification_interval=5",
                          "--set", "densify.densify_until_iter=16", "--set", "densify.grad_threshold=0",
                          "--set", "densify.max_splats=400", "--set", "run.save_interval=10",
                          "--set", "run.eval_interval=1000"]))


def test_gha_trains_with_densification_saves_loads_renders_exports_and_resumes(tiny, tmp_path, capsys):
    config = tiny_config(tmp_path)
    straight = tmp_path / "straight"
    assert train.main(train_args(tiny, straight, config)) == 0
    ckpt = straight / "checkpoints/iteration_0000020"
    assert {p.name for p in ckpt.iterdir()} >= {"splats.ply", "gha_deformation.pt", "gha_color.pt", "gha_sr.pt"}

    loaded = load_model(straight, flame_path=tiny["flame"])
    avatar = loaded.avatar
    n = len(avatar.gaussians)
    assert n > 150, "densification never ran"
    features = avatar.gaussians.params[FEATURE]
    assert features.shape == (n, 8)
    state = torch.load(ckpt / "training_state.pt", weights_only=True)["splat_optimizers"][FEATURE]["state"]
    assert state[0]["exp_avg"].shape == (n, 8)
    assert any(float(v.abs().max()) > 0 for k, v in avatar.geometry.mlps.state_dict().items() if "net.2" in k)

    assert render.main(["-m", str(straight), "--split", "val", "--max-frames", "1", "--quiet"]) == 0
    from PIL import Image
    rendered = next((straight / "val/ours_20/renders").glob("*.png"))
    assert Image.open(rendered).size == Image.open(straight / "val/ours_20/gt" / rendered.name).size

    ply = tmp_path / "frame.ply"
    capsys.readouterr()
    assert export.main(["-m", str(straight), "-o", str(ply), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "screen-space stage (model.screen 'gha_sr') is not in the file" in out
    assert read_3dgs_ply(ply)["means"].shape[0] == n
    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["colour"].startswith("frame colour") and report["screen_stage_left_out"] == "gha_sr"
    assert report["frames"][0]["check_psnr_db"] > 40  # the file renders the splats' own RGB channels

    assert_resume_reproduces(train_args(tiny, tmp_path / "resumed", config), 10, ckpt)


def test_gha_fits_one_training_frame_of_the_synthetic_subject(synthetic_dataset, tmp_path):
    """One frame (camera 9, the first timestep), small networks, no densification: >= 30 dB."""
    union = Path(synthetic_dataset["subjects"]["s000"]["union"])
    one = union.parent / "UNION_one_frame_gha"
    if not one.exists():
        shutil.copytree(union, one)
        transforms = json.loads((one / "transforms_train.json").read_text())
        transforms["frames"] = [f for f in transforms["frames"] if f["camera_index"] == 9 and f["timestep_index"] == 0]
        (one / "transforms_train.json").write_text(json.dumps(transforms))
    config = tmp_path / "fit.yaml"
    config.write_text(
        "model:\n"
        "  geometry: {init_points: 2000, feature_dim: 16, hidden: 32, hidden_layers: 1, mlp_lr: 1.0e-3,\n"
        "             feature_lr: 1.0e-2}\n"
        "  color: {channels: 8, feature_dim: 16, hidden: 32, hidden_layers: 1, mlp_lr: 3.0e-3}\n"
        "  screen: {in_channels: 8, hidden: 8, scale: 1, lambda_vgg: 0.0, lr: 1.0e-3}\n"
        "optim: {position_lr_init: 1.0e-4, position_lr_final: 1.0e-4, scaling_lr: 5.0e-3, opacity_lr: 2.0e-2,\n"
        "        rotation_lr: 1.0e-3}\n"
        "densify: {enabled: false}\n")
    iterations = 150
    args = ["-s", one, "-m", tmp_path / "fit", "--flame", synthetic_dataset["flame_model"], "--config", PAPER,
            "--config", config, "--iterations", iterations, "--eval", "--quiet", "--set", "run.eval_interval=100000",
            "--set", "run.save_interval=100000"]
    trainer = train.Trainer(train.request_from_args(train.parse_args(list(map(str, args)))))
    assert len(trainer.train_frames) == 1
    for step in range(1, iterations + 1):
        trainer.step = step
        trainer.training_step(step)
    frame = trainer.train_frames[0]
    with torch.no_grad():
        result, _ = trainer.render_frame(frame, iterations)
        gt = trainer.loader.get(0)
        value = float(-10 * torch.log10(((result.image - gt) ** 2).mean()))
    print(f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB")
    assert value >= 30.0, f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB"
