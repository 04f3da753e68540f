"""The GaussianHead-style method (GaussianHead, TVCG 2025; scene/methods/gaussianhead,
docs/METHODS_GAUSSIANHEAD.md): the tilted triplane against the flagship's untilted one, a known
rotation, the Hadamard / concatenation layout, the SH rotation, gradients, a 20-step training with
densification that saves, loads, renders, exports and resumes bit-exactly, and a fit of one frame."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_gha import N_EXPR, _Splats, random_motion, small_context  # noqa: E402
from method_runs import fit_one_frame, one_frame_subject, short_training_args  # noqa: E402
from test_train import assert_resume_reproduces  # noqa: E402

import evaluate  # noqa: E402
import export  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
from gaussian_renderer.sh import eval_sh, num_sh_bases, sh_basis  # noqa: E402
from scene.config import resolve_config  # noqa: E402
from scene.interop.export_3dgs import read_3dgs_ply  # noqa: E402
from scene.methods.gaussianhead.color import TILT, GaussianHeadColor  # noqa: E402
from scene.methods.gaussianhead.geometry import GaussianHeadGeometry  # noqa: E402
from scene.methods.gaussianhead.heads import OpacityFeatureHead, SHHead  # noqa: E402
from scene.methods.gaussianhead.opacity import GaussianHeadOpacity  # noqa: E402
from scene.methods.gaussianhead.sh_rotation import fit_directions, rotate_sh, sh_rotation  # noqa: E402
from scene.methods.gaussianhead.tilted_triplane import TiltedTriplane, tilt_quaternions  # noqa: E402
from scene.methods.tensorial.triplane import Triplane  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.model.components import PluginContractError  # noqa: E402
from scene.model.gaussian_model import inverse_sigmoid  # noqa: E402
from scene.training.densification import BindingAwareDensification, DensifyConfig  # noqa: E402
from scene.training.optimizer_ops import make_splat_optimizers  # noqa: E402
from utils.errors import InputFileError  # noqa: E402
from utils.rotations import axis_angle_to_quat, quat_to_matrix  # noqa: E402
from flame_model import axis_angle_to_matrix  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs/gaussianhead.yaml"
LO, HI = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 3.0, 4.0])


def tilted(channels: int = 8, rotations: int = 4, resolution: int = 5) -> TiltedTriplane:
    torch.manual_seed(0)
    field = TiltedTriplane(resolution, channels, rotations, LO, HI, init_std=0.5)
    return field


def identity_tilts(n: int, k: int) -> torch.Tensor:
    return tilt_quaternions(torch.zeros(n, k, 4))


def inside(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return LO + (HI - LO) * (0.05 + 0.9 * torch.rand(n, 3, generator=g))


# -- the tilted triplane ------------------------------------------------------------------------------

def test_tilted_lookups_at_identity_rotations_equal_the_untilted_triplane_planes_multiplied():
    field = tilted()
    untilted = Triplane(5, (8, 8, 8), LO, HI)
    untilted.load_state_dict(field.triplane.state_dict())
    points = torch.cat([inside(20), torch.stack([LO - 1, HI + 1])])  # outside the box: the border's features
    expected = untilted(points).reshape(-1, 3, 8).prod(1)  # XY * XZ * YZ, channel by channel
    out = field(points, identity_tilts(22, 4))
    assert out.shape == (22, 8)
    assert torch.equal(out, expected)


def _bilinear(plane: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """plane (C, R, R) indexed [c, j along b, i along a] at grid coordinates a, b in [0, R - 1]."""
    R = plane.shape[-1]
    i0, j0 = min(int(math.floor(a)), R - 2), min(int(math.floor(b)), R - 2)
    fa, fb = a - i0, b - j0
    return (plane[:, j0, i0] * (1 - fa) * (1 - fb) + plane[:, j0, i0 + 1] * fa * (1 - fb)
            + plane[:, j0 + 1, i0] * (1 - fa) * fb + plane[:, j0 + 1, i0 + 1] * fa * fb)


def test_each_tilted_copy_samples_its_own_channel_slice_of_the_three_planes_multiplied_then_concatenated():
    """By hand: copy k rotates the box coordinates by its own quaternion, samples channels
    [2k, 2k + 2) of XY, XZ and YZ there, multiplies them; the copies are concatenated in order."""
    field = tilted(channels=8, rotations=4)
    g = torch.Generator().manual_seed(3)
    quats = torch.nn.functional.normalize(torch.randn(1, 4, 4, generator=g), dim=-1)
    quats[0, :, 0] = quats[0, :, 0].abs() + 2.0  # small tilts: the rotated point stays inside the box
    point = ((LO + HI) / 2 + torch.tensor([0.13, -0.2, 0.07]))[None]
    out = field(point, quats)[0]
    u = 2 * (point[0] - LO) / (HI - LO) - 1
    planes = [p[0].detach() for p in field.triplane.planes()]
    for k in range(4):
        rotated = quat_to_matrix(quats[0, k]) @ u
        assert bool((rotated.abs() < 1).all())
        x, y, z = ((rotated + 1) / 2 * 4).tolist()  # grid coordinates, R = 5
        channels = slice(2 * k, 2 * k + 2)
        expected = (_bilinear(planes[0][channels], x, y) * _bilinear(planes[1][channels], x, z)
                    * _bilinear(planes[2][channels], y, z))
        assert torch.allclose(out[2 * k:2 * k + 2], expected, atol=1e-5), k


def test_a_quarter_turn_about_z_moves_the_lookup_to_the_turned_point():
    """In box coordinates a quarter turn about z takes (x, y, z) to (-y, x, z): the tilted lookup
    of u is the untilted lookup of the turned point (here with a cube box, box coordinates = positions)."""
    cube_lo, cube_hi = -torch.ones(3), torch.ones(3)
    torch.manual_seed(1)
    field = TiltedTriplane(6, 4, 1, cube_lo, cube_hi, init_std=0.5)
    untilted = Triplane(6, (4, 4, 4), cube_lo, cube_hi)
    untilted.load_state_dict(field.triplane.state_dict())
    points = torch.rand(10, 3) * 1.6 - 0.8
    turn = axis_angle_to_quat(torch.tensor([0.0, 0.0, math.pi / 2]))
    out = field(points, turn.expand(10, 1, 4))
    turned = torch.stack([-points[:, 1], points[:, 0], points[:, 2]], 1)
    assert torch.allclose(out, untilted(turned).reshape(10, 3, 4).prod(1), atol=1e-5)
    assert not torch.allclose(out, untilted(points).reshape(10, 3, 4).prod(1), atol=1e-3)


def test_the_tilts_are_stored_as_offsets_from_the_identity():
    offsets = torch.zeros(3, 4, 4)
    assert torch.equal(quat_to_matrix(tilt_quaternions(offsets)), torch.eye(3).expand(3, 4, 3, 3))


def test_channels_that_do_not_split_into_the_copies_are_one_config_error():
    with pytest.raises(InputFileError, match="channels .* multiple of .*rotations"):
        resolve_config([PAPER], [{"model": {"color": {"channels": 30}}}])
    with pytest.raises(InputFileError, match="model.geometry to \\{type: gaussianhead\\}"):
        resolve_config([PAPER], [{"model": {"geometry": {"type": "flame_bound"}}}])


# -- the heads and the SH rotation ------------------------------------------------------------------

def test_the_opacity_head_starts_at_zero_shift_and_the_sh_head_at_grey():
    torch.manual_seed(0)
    head = OpacityFeatureHead(32, 64, 2, 32)
    assert [m.out_features for m in head.mlp.net if isinstance(m, torch.nn.Linear)] == [64, 64, 33]
    with torch.no_grad():
        shift, feature = head(torch.randn(7, 32))
    assert torch.equal(shift, torch.zeros(7)) and feature.shape == (7, 32) and float(feature.abs().max()) > 0
    with torch.no_grad():
        sh = SHHead(32, 64, 1, 3)(feature)
    assert sh.shape == (7, 16, 3) and torch.equal(sh, torch.zeros_like(sh))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_rotated_sh_give_in_the_world_the_colour_of_the_direction_in_the_heads_frame(degree):
    dirs = fit_directions()
    pinv = torch.linalg.pinv(sh_basis(degree, dirs))
    R = axis_angle_to_matrix(torch.tensor([[0.3, -1.1, 0.6]], dtype=torch.float64))[0]
    sh = torch.randn(5, num_sh_bases(degree), 3, dtype=torch.float64)
    M = sh_rotation(degree, R, dirs, pinv)
    world = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    assert torch.allclose(eval_sh(degree, rotate_sh(sh, M), world), eval_sh(degree, sh, world @ R), atol=1e-10)
    assert torch.allclose(sh_rotation(degree, torch.eye(3, dtype=torch.float64), dirs, pinv),
                          torch.eye(num_sh_bases(degree), dtype=torch.float64), atol=1e-12)


# -- gradients --------------------------------------------------------------------------------------

def test_gradients_of_the_tilted_triplane_and_heads_match_finite_differences():
    field = tilted(channels=4, rotations=2, resolution=4).double()
    g = torch.Generator().manual_seed(0)
    points = inside(6).double().requires_grad_()
    tilts = (torch.randn(6, 2, 4, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, t: field(p, tilt_quaternions(t)), (points, tilts))
    names = [f"triplane.plane_{n}" for n in ("xy", "xz", "yz")]

    def of_planes(*planes):
        return torch.func.functional_call(field, dict(zip(names, planes)), (points.detach(),
                                                                            tilt_quaternions(tilts.detach())))

    assert torch.autograd.gradcheck(of_planes, tuple(p.detach().clone().requires_grad_()
                                                     for p in field.triplane.planes()))
    opacity = OpacityFeatureHead(4, 5, 2, 3).double()
    sh = SHHead(3, 5, 1, 2).double()
    torch.nn.init.normal_(sh.mlp.net[-1].weight, std=0.3)  # away from the zero start
    torch.nn.init.normal_(opacity.mlp.net[-1].weight, std=0.3)
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: (opacity(f)[0], sh(opacity(f)[1])), (f,))


def small_model(**color):
    cfg = resolve_config([PAPER], [{"model": {"n_expr": N_EXPR, "geometry": {
        "init_points": 12, "hidden": 6, "hidden_layers": 1, "position_frequencies": 1},
        "color": {"resolution": 4, "channels": 4, "rotations": 2, "feature_dim": 3, "hidden": 5, "hidden_layers": 1,
                  "sh_hidden": 5, "degree": 1, **color}}}])
    return cfg.model


def test_gradients_through_the_geometry_colour_and_opacity_match_finite_differences():
    """Positions, rotations, scales, tilts and every FLAME parameter of the frame, through the
    deformation, the head pose, the tilted triplane, both heads and the SH rotation."""
    torch.manual_seed(0)
    model = small_model()
    ctx = small_context()
    geometry = GaussianHeadGeometry(model.geometry, ctx).double()
    color = GaussianHeadColor(model.color, ctx).double()
    for net in (geometry.deformation, color.heads["sh"].mlp, color.heads["opacity_feature"].mlp):
        torch.nn.init.normal_(net.net[-1].weight, std=0.3)  # away from the zero start
    splats = geometry.initial_splats().double()
    splats.add_attribute(TILT, color.splat_attributes()[TILT])
    splats = splats.double()
    with torch.no_grad():
        splats.params[TILT].normal_(std=0.1)
    motion = random_motion()
    names = ["xyz", "rotation", "log_scale", TILT]

    def frame(*tensors):
        one = dict(zip(motion, tensors[len(names):]))
        g = geometry(None, _Splats(splats, dict(zip(names, tensors))), torch.zeros(3, dtype=torch.float64), one)
        sh = color(g)["sh"]
        return g.means, g.quats, g.scales, g.opacity_shift, sh

    inputs = [splats.params[n].detach().clone().requires_grad_() for n in names]
    inputs += [v.clone().requires_grad_() for v in motion.values()]
    assert torch.autograd.gradcheck(frame, tuple(inputs), atol=1e-6)


def test_the_opacity_of_a_frame_the_colour_has_not_shaded_is_one_contract_error_naming_the_colour():
    """The opacity head runs in the colour (it shares the tilted-triplane feature with the SH head);
    an opacity asked first, or with another colour, says so instead of failing on None."""
    torch.manual_seed(0)
    model = small_model()
    ctx = small_context()
    geometry = GaussianHeadGeometry(model.geometry, ctx)
    color = GaussianHeadColor(model.color, ctx)
    opacity = GaussianHeadOpacity(model.opacity, ctx)
    splats = geometry.initial_splats()
    splats.add_attribute(TILT, color.splat_attributes()[TILT])
    motion = random_motion(torch.float32)
    frame = geometry(None, _Splats(splats, dict(splats.params)), torch.zeros(3), motion)
    with pytest.raises(PluginContractError, match="gaussianhead colour"):
        opacity(frame, motion["expr"], motion["jaw_pose"])
    color(frame)
    assert torch.equal(opacity(frame, motion["expr"], motion["jaw_pose"]), frame.opacity_shift)


# -- training -------------------------------------------------------------------------------------

def tiny_config(tmp_path: Path) -> Path:
    """GaussianHead at toy sizes on the tiny FLAME fixture."""
    path = tmp_path / "gaussianhead_tiny.yaml"
    path.write_text(
        "model:\n"
        "  geometry: {init_points: 150, hidden: 16, hidden_layers: 1, position_frequencies: 2, mlp_lr: 1.0e-3}\n"
        "  color: {resolution: 8, channels: 8, rotations: 4, feature_dim: 8, hidden: 16, sh_hidden: 16, degree: 2}\n")
    return path


def train_args(tiny, model: Path, config: Path, iterations: int = 20) -> list[str]:
    # min_opacity 0.09: the splats start at 0.1, so some are pruned at the densification steps.
    return short_training_args(tiny, model, [PAPER, config], iterations, ("--set", "densify.min_opacity=0.09"))


def test_gaussianhead_trains_with_densification_saves_loads_renders_exports_and_resumes(tiny, tmp_path, capsys):
    config = tiny_config(tmp_path)
    straight = tmp_path / "straight"
    assert train.main(train_args(tiny, straight, config)) == 0
    ckpt = straight / "checkpoints/iteration_0000020"
    assert {p.name for p in ckpt.iterdir()} >= {"splats.ply", "gaussianhead_deformation.pt", "tilted_triplane.pt",
                                                "gaussianhead_heads.pt"}

    loaded = load_model(straight, flame_path=tiny["flame"])
    avatar = loaded.avatar
    n = len(avatar.gaussians)
    assert n > 150, "densification never ran"
    tilts = avatar.gaussians.params[TILT]
    assert tilts.shape == (n, 4, 4)
    # The tilts learnt (away from the identity) and their Adam moments follow the splats.
    assert float(tilts.detach().abs().max()) > 0
    state = torch.load(ckpt / "training_state.pt", weights_only=True)["splat_optimizers"][TILT]["state"]
    assert state[0]["exp_avg"].shape == (n, 4, 4)
    assert any(float(v.abs().max()) > 0 for k, v in avatar.geometry.deformation.state_dict().items()
               if k.endswith("net.2.weight"))

    assert render.main(["-m", str(straight), "--split", "val", "--max-frames", "1", "--quiet"]) == 0
    from PIL import Image
    rendered = next((straight / "val/ours_20/renders").glob("*.png"))
    assert Image.open(rendered).size == Image.open(straight / "val/ours_20/gt" / rendered.name).size

    assert evaluate.main(["-m", str(straight), "--split", "val", "--lpips", "alex", "--device", "cpu"]) == 0
    scores = json.loads((straight / "results.json").read_text())["val"]
    assert scores["n_images"] >= 1 and math.isfinite(scores["PSNR"])

    assert_views_in_the_viewer(straight)

    ply = tmp_path / "frame.ply"
    capsys.readouterr()
    assert export.main(["-m", str(straight), "-o", str(ply), "--device", "cpu"]) == 0
    exported = read_3dgs_ply(ply)
    assert exported["means"].shape[0] == n and exported["sh_degree"] == 2
    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["frames"][0]["check_psnr_db"] > 40  # the file renders as the avatar does
    assert report["colour"] == "the avatar's own SH (the frame's)"  # the heads' SH of this frame

    assert_resume_reproduces(train_args(tiny, tmp_path / "resumed", config), 10, ckpt)


def assert_views_in_the_viewer(model: Path) -> None:
    """The viewer renders the avatar from a rig camera as render.py does."""
    pytest.importorskip("viser", reason="viser is in requirements.txt; this environment lacks it")
    import socket

    import numpy as np

    import viewer
    from flame_model import frame_motion
    from scene.data.cameras import camera_pose
    from scene.renderer import reenactment_vertices
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    v = viewer.AvatarViewer(viewer.options_from_args(viewer.parse_args(
        ["-m", str(model), "--port", str(port), "--quiet", "--resolution", "32", "--device", "cpu"])))
    try:
        frame = v.renderer.rig_camera(int(v.controls["camera"].value))
        v.controls["height"].value = frame.height
        v.controls["jaw open"].value = 0.2
        position, wxyz, fov = camera_pose(frame.viewmat, frame.K, frame.height)
        image, _ = v.render_view(position, wxyz, fov, frame.width / frame.height)
        verts = reenactment_vertices(v.renderer.model, v.motion)[0]
        expected = v.renderer.render(verts, frame_motion(v.motion), frame.viewmat, frame.K, frame.width, frame.height)
        assert image.shape == (frame.height, frame.width, 3)
        assert np.abs(image.astype(int) - np.round(expected.clamp(0, 1).numpy() * 255).astype(int)).max() <= 1
    finally:
        v.close()


def test_densification_carries_each_splats_tilts_to_its_clones_and_split_children():
    """Clone, split and prune of the method's splats: every survivor and child has its parent's
    tilts (and a clone or child fresh Adam moments for them)."""
    model = small_model()
    ctx = small_context(dtype=torch.float32)
    geometry = GaussianHeadGeometry(model.geometry, ctx)
    color = GaussianHeadColor(model.color, ctx)
    splats = geometry.initial_splats()
    splats.add_attribute(TILT, color.splat_attributes()[TILT])
    n = len(splats)
    with torch.no_grad():
        splats.params[TILT].copy_(torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 2, 4))
        opacity = torch.full((n,), 0.5)
        opacity[[1, 4]] = 1e-3  # pruned
        splats.params["opacity"].copy_(inverse_sigmoid(opacity))
    lrs = {name: 1e-3 for name in splats.params}
    opts = make_splat_optimizers(splats, lrs)
    splats.params[TILT].grad = torch.zeros_like(splats.params[TILT])
    opts[TILT].step()  # Adam moments to carry: the parent's code, as the tilts
    opts[TILT].state[splats.params[TILT]]["exp_avg"].copy_(splats.params[TILT].detach())
    grads = torch.zeros(n)
    grads[[0, 2, 5]] = 1.0
    scales = torch.full((n, 3), 1e-4)
    scales[5] = 1.0  # split
    strategy = BindingAwareDensification(DensifyConfig(grad_threshold=1e-3, min_opacity=0.005), 1.0,
                                         ctx.faces.shape[0], bound=False)
    strategy.update_statistics({"means2d": _with_grad(grads), "radii": torch.full((1, n), 5)}, 2, 2)
    events = strategy.densify_and_prune(splats, opts, scales)
    assert events == {"cloned": 2, "split": 1, "pruned": 2}
    parents = splats.params[TILT][:, 0, 0].tolist()
    kept = [i for i in range(n) if i not in (1, 4, 5)]
    assert parents == kept + [0, 2] + [5, 5]  # survivors, clones, the split's two children
    assert bool((splats.params[TILT] == splats.params[TILT][:, :1, :1]).all())
    moments = opts[TILT].state[splats.params[TILT]]["exp_avg"][:, 0, 0].tolist()
    assert moments == kept + [0.0] * 4  # survivors keep theirs, clones and children start afresh


def _with_grad(grads: torch.Tensor) -> torch.Tensor:
    means2d = torch.zeros(1, grads.shape[0], 2, requires_grad=True)
    means2d.grad = torch.stack([grads, torch.zeros_like(grads)], -1)[None]
    return means2d


def test_gaussianhead_fits_one_training_frame_of_the_synthetic_subject(synthetic_dataset, tmp_path):
    """One frame (camera 9, the first timestep), small networks, no densification: >= 30 dB."""
    one = one_frame_subject(Path(synthetic_dataset["subjects"]["s000"]["union"]), "UNION_one_frame_gaussianhead")
    config = tmp_path / "fit.yaml"
    config.write_text(
        "model:\n"
        "  geometry: {init_points: 2000, hidden: 32, hidden_layers: 1, mlp_lr: 1.0e-3}\n"
        "  color: {resolution: 64, channels: 32, rotations: 4, grid_lr: 2.0e-2, mlp_lr: 5.0e-3, degree: 1}\n"
        "optim: {position_lr_init: 1.0e-4, position_lr_final: 1.0e-4, scaling_lr: 5.0e-3, opacity_lr: 2.0e-2,\n"
        "        rotation_lr: 1.0e-3}\n"
        "densify: {enabled: false}\n")
    iterations = 200
    value = fit_one_frame(one, synthetic_dataset["flame_model"], [PAPER, config], iterations, tmp_path / "fit")
    print(f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB")
    assert value >= 30.0, f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB"
