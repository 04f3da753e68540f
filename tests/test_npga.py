"""The NPGA-style method (Neural Parametric Gaussian Avatars, SIGGRAPH Asia 2024; scene/methods/npga,
docs/METHODS_NPGA.md): the kNN Laplacian on a known graph, the offset regularisers, the frozen and
weight-decayed parameter groups, gradients, a 20-step training with densification that saves, loads,
renders, exports and resumes bit-exactly, and a fit of one frame."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_gha import N_EXPR, random_motion, small_context  # noqa: E402
from method_runs import fit_one_frame, one_frame_subject, short_training_args  # noqa: E402
from test_train import assert_resume_reproduces  # noqa: E402

import evaluate  # noqa: E402
import export  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
from scene.config import resolve_config  # noqa: E402
from scene.interop.export_3dgs import read_3dgs_ply  # noqa: E402
from scene.data.cameras import camera_pose  # noqa: E402
from scene.methods.npga.color import LATENT, NPGAColor  # noqa: E402
from scene.methods.npga.geometry import DETAIL_OFFSETS, FEATURE, PRIOR_OFFSETS, NPGAGeometry  # noqa: E402
from scene.methods.npga.knn import knn_graph, laplacian_smoothness  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.model.components import LossContext  # noqa: E402
from scene.training.optimizer_ops import drop_frozen_gradients  # noqa: E402
from utils.errors import InputFileError  # noqa: E402
from utils.lpips import lpips_weights_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs/npga.yaml"


def tiny_config(tmp_path: Path) -> Path:
    """NPGA at toy sizes on the tiny FLAME fixture."""
    path = tmp_path / "npga_tiny.yaml"
    path.write_text(
        "model:\n"
        "  geometry: {init_points: 150, feature_dim: 4, sh_degree: 1, latent_channels: 3, hidden: 16,\n"
        "             hidden_layers: 1, position_frequencies: 2, prior_frozen_steps: 5, prior_lr: 1.0e-3, knn: 4}\n"
        "  color: {degree: 1, latent_channels: 3}\n"
        "  screen: {in_channels: 6, hidden: 4}\n")
    return path


def small_model(**geometry):
    cfg = resolve_config([PAPER], [{"model": {"n_expr": N_EXPR, "geometry": {
        "init_points": 12, "feature_dim": 3, "sh_degree": 1, "latent_channels": 2, "hidden": 6, "hidden_layers": 1,
        "position_frequencies": 1, "knn": 3, **geometry}, "color": {"degree": 1, "latent_channels": 2},
        "screen": {"in_channels": 5, "hidden": 3}}}])
    return cfg.model


# -- the Laplacian on a kNN graph (eq. 11) ----------------------------------------------------------

def test_the_knn_graph_of_points_on_a_line_is_their_nearest_other_points():
    points = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [7.0, 0, 0], [7.0, 0, 0]])
    graph = knn_graph(points, 2, chunk=2)
    # 0: 1, 2; 1: 0, 2; 2: 1, 0; 3: its clone 4 (never itself), then 2; 4: 3, then 2.
    assert graph.tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    assert knn_graph(points, 10).shape == (5, 4)  # at most the other points


def test_the_laplacian_is_the_mean_squared_distance_to_the_neighbours_mean():
    graph = torch.tensor([[1, 2], [0, 2], [0, 1]])
    values = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    # Point 0: neighbours' mean (1, 2), squared distance 5; point 1: (0, 2) - (2, 0): 8;
    # point 2: (1, 0) - (0, 4): 17.
    assert float(laplacian_smoothness(values, graph)) == pytest.approx((5 + 8 + 17) / 3)
    assert float(laplacian_smoothness(torch.ones(3, 2) * 7, graph)) == 0.0  # constant: smooth


# -- the geometry's regularisers (eqs. 11, 12) --------------------------------------------------------

def test_the_regularisers_are_the_weighted_laplacians_and_mean_squared_norms():
    ctx = small_context(dtype=torch.float32)
    model = small_model(lambda_lap_feature=2.0, lambda_lap_offsets=3.0, lambda_prior_offsets=0.5,
                        lambda_detail_offsets=0.25, lambda_feature=0.1)
    geometry = NPGAGeometry(model.geometry, ctx)
    splats = geometry.initial_splats()
    n = len(splats)
    d_prior, d_detail = torch.randn(n, 3), torch.randn(n, 11 + geometry.color_width)
    terms = geometry.losses(LossContext(1, {PRIOR_OFFSETS: d_prior, DETAIL_OFFSETS: d_detail}, {}, splats.params,
                                        splats.binding, lambda: None))
    graph = knn_graph(splats.params["xyz"].detach(), 3)
    assert torch.equal(geometry.neighbours, graph)
    f = splats.params[FEATURE].detach()
    terms = {k: v.detach() for k, v in terms.items()}
    assert float(terms["npga_lap_feature"]) == pytest.approx(2.0 * float(laplacian_smoothness(f, graph)))
    assert float(terms["npga_lap_offsets"]) == pytest.approx(3.0 * float(laplacian_smoothness(d_detail, graph)))
    expected = 0.5 * float((d_prior ** 2).sum(1).mean()) + 0.25 * float((d_detail ** 2).sum(1).mean())
    assert float(terms["npga_offsets"]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["npga_feature_norm"]) == pytest.approx(0.1 * float((f ** 2).sum(1).mean()), rel=1e-5)


def test_the_knn_graph_is_rebuilt_after_densification_changed_the_splats_and_kept_otherwise():
    geometry = NPGAGeometry(small_model().geometry, small_context(dtype=torch.float32))
    splats = geometry.initial_splats()
    xyz = splats.params["xyz"]
    first = geometry.graph(xyz)  # the first frame builds it
    assert torch.equal(first, knn_graph(xyz, 3))
    assert geometry.graph(xyz + 1.0) is first  # trained (moved), the same splats: the same graph
    # Densification pruned as many as it cloned: the count is the same, the splats are not.
    splats.params["xyz"] = torch.cat([xyz[4:], xyz[:4] * 0.5]).contiguous()
    geometry.splats_changed(splats)
    assert torch.equal(geometry.graph(splats.params["xyz"]), knn_graph(splats.params["xyz"], 3))
    assert not torch.equal(geometry.neighbours, first)
    assert geometry.graph(torch.rand(len(xyz) + 4, 3)).shape == (len(xyz) + 4, 3)  # changed outside training


# -- the parameter groups: frozen prior, weight decay --------------------------------------------------

def test_the_prior_group_is_frozen_until_its_step_then_learns_and_both_decay():
    geometry = NPGAGeometry(small_model(prior_frozen_steps=3, weight_decay=0.1).geometry,
                            small_context(dtype=torch.float32))
    groups = geometry.param_groups()
    assert [g["name"] for g in groups] == ["npga_prior", "npga_detail"]
    assert groups[0]["frozen_until"] == 3 and groups[0]["lr"] == 4.0e-5 and groups[1]["lr"] == 2.0e-3
    assert all(g["weight_decay"] == 0.1 and g["decoupled_weight_decay"] for g in groups)
    optimizer = torch.optim.Adam(groups)
    prior, detail = geometry.mlps["prior"].net[0].weight, geometry.mlps["detail"].net[0].weight
    for step in range(1, 5):
        before_prior, before_detail = prior.detach().clone(), detail.detach().clone()
        for p in geometry.parameters():
            p.grad = torch.ones_like(p)
        drop_frozen_gradients(optimizer, step)
        optimizer.step()
        assert torch.equal(prior, before_prior) == (step <= 3), step
        assert not torch.equal(detail, before_detail)
    assert optimizer.state[prior]["step"] == 1  # its Adam moments start at its first update


def test_the_weight_decay_is_decoupled_shrinking_weights_without_a_gradient_signal():
    geometry = NPGAGeometry(small_model(prior_frozen_steps=0, weight_decay=0.5).geometry,
                            small_context(dtype=torch.float32))
    optimizer = torch.optim.Adam(geometry.param_groups())
    before = {name: p.detach().clone() for name, p in geometry.mlps.named_parameters()}
    for p in geometry.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in geometry.mlps.named_parameters():  # AdamW: w (1 - lr wd), the Adam step 0
        lr = 4.0e-5 if name.startswith("prior") else 2.0e-3
        assert torch.allclose(p.detach(), before[name] * (1 - lr * 0.5), rtol=0, atol=1e-9), name


def test_the_colour_must_match_the_geometry_widths_one_error():
    with pytest.raises(InputFileError, match=r"model.color.latent_channels \(5\) must equal model.geometry"):
        resolve_config([PAPER], [{"model": {"color": {"latent_channels": 5}}}])
    with pytest.raises(InputFileError, match="set model.geometry to {type: npga}"):
        resolve_config([REPO / "configs/gaussian_avatars.yaml"], [{"model": {"color": {"type": "npga"}}}])


def test_a_config_at_odds_with_itself_is_one_error_line_from_train(tiny, tmp_path, capsys):
    args = ["-s", tiny["subject"], "-m", tmp_path / "m", "--flame", tiny["flame"], "--config", PAPER,
            "--config", tiny_config(tmp_path), "--iterations", "2", "--quiet", "--set", "model.screen.in_channels=9"]
    assert train.main(list(map(str, args))) == 2
    err = capsys.readouterr().err
    assert "model.screen.in_channels (9) must equal model.color.channels (6)" in err and "Traceback" not in err


# -- gradients ---------------------------------------------------------------------------------------

def test_the_laplacian_gradient_matches_finite_differences():
    graph = knn_graph(torch.rand(7, 3, generator=torch.Generator().manual_seed(1)), 3)
    values = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: laplacian_smoothness(v, graph), (values,))


def test_gradients_through_the_geometry_colour_and_regularisers_match_finite_differences():
    torch.manual_seed(0)
    model = small_model()
    ctx = small_context()
    geometry = NPGAGeometry(model.geometry, ctx).double()
    color = NPGAColor(model.color, ctx).double()
    for net in geometry.mlps.values():  # away from the zero start
        torch.nn.init.normal_(net.net[-1].weight, std=0.3)
    splats = geometry.initial_splats().double()
    g = torch.Generator().manual_seed(2)
    extra = {name: (torch.randn(len(splats), *spec.shape, generator=g, dtype=torch.float64) * 0.3)
             for name, spec in color.splat_attributes().items()}
    motion = random_motion()
    names = ["xyz", "rotation", "log_scale", FEATURE, *extra]
    base = {**dict(splats.params.items()), **extra}
    camera = torch.tensor([0.1, 0.2, 1.0], dtype=torch.float64)

    def frame(*tensors):
        params = {**base, **dict(zip(names, tensors[:len(names)]))}
        one = dict(zip(motion, tensors[len(names):]))
        out = geometry(None, _Splats(params, splats.binding), camera, one)
        terms = geometry.losses(LossContext(1, out.extras, {}, params, splats.binding, lambda: None))
        return out.means, out.quats, out.scales, out.opacity_shift, color(out)["colors"], sum(terms.values())

    inputs = [base[n].detach().clone().requires_grad_() for n in names]
    inputs += [v.clone().requires_grad_() for v in motion.values()]
    assert torch.autograd.gradcheck(frame, tuple(inputs), atol=1e-6)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Splats:
    """Splats with given tensors (gradcheck's inputs)."""

    def __init__(self, params: dict, binding: torch.Tensor):
        self.params, self.binding = params, binding

    def __len__(self):
        return self.binding.shape[0]


def test_the_rigid_head_motion_is_the_neck_then_the_global_rotation_about_their_joints():
    ctx = small_context()
    geometry = NPGAGeometry(small_model().geometry, ctx).double()
    geometry.neck.copy_(torch.tensor([0.0, 0.1, 0.0]))
    geometry.root.copy_(torch.tensor([0.0, -0.1, 0.0]))
    quarter = torch.tensor([0.0, 0.0, torch.pi / 2], dtype=torch.float64)  # 90 degrees about z
    none = torch.zeros(3, dtype=torch.float64)
    # The neck alone: a point one unit in x of the neck joint goes one unit in y of it.
    R, o = geometry.rigid({"neck_pose": quarter, "rotation": none, "translation": none}, torch.float64)
    assert torch.allclose(R @ torch.tensor([1.0, 0.1, 0.0], dtype=torch.float64) + o,
                          torch.tensor([0.0, 1.1, 0.0], dtype=torch.float64), atol=1e-6)
    # Then the global rotation about the root and the translation.
    R, o = geometry.rigid({"neck_pose": none, "rotation": quarter, "translation": torch.tensor(
        [0.0, 0.0, 2.0], dtype=torch.float64)}, torch.float64)
    assert torch.allclose(R @ torch.tensor([1.0, -0.1, 0.0], dtype=torch.float64) + o,
                          torch.tensor([0.0, 0.9, 2.0], dtype=torch.float64), atol=1e-6)
    # Both: the neck (90 degrees about x) first, then the global rotation and translation.
    about_x = torch.tensor([torch.pi / 2, 0.0, 0.0], dtype=torch.float64)
    R, o = geometry.rigid({"neck_pose": about_x, "rotation": quarter, "translation": torch.tensor(
        [0.0, 0.0, 2.0], dtype=torch.float64)}, torch.float64)
    # (0, 0.1, 1) -> neck: (0, -0.9, 0) -> global about (0, -0.1, 0): (0.8, -0.1, 0), then + (0, 0, 2).
    assert torch.allclose(R @ torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64) + o,
                          torch.tensor([0.8, -0.1, 2.0], dtype=torch.float64), atol=1e-6)


# -- training ----------------------------------------------------------------------------------------

def train_args(tiny, model: Path, config: Path, iterations: int = 20) -> list[str]:
    return short_training_args(tiny, model, [PAPER, config], iterations, ("--set", "densify.opacity_decay_interval=3"))


def test_npga_trains_with_densification_saves_loads_renders_exports_and_resumes(tiny, tmp_path, capsys):
    config = tiny_config(tmp_path)
    straight = tmp_path / "straight"
    assert train.main(train_args(tiny, straight, config)) == 0
    ckpt = straight / "checkpoints/iteration_0000020"
    assert {p.name for p in ckpt.iterdir()} >= {"splats.ply", "npga_dynamics.pt", "npga_knn.pt", "gha_sr.pt"}

    loaded = load_model(straight, flame_path=tiny["flame"])
    avatar = loaded.avatar
    n = len(avatar.gaussians)
    assert n > 150, "densification never ran"
    assert avatar.gaussians.params[FEATURE].shape == (n, 4) and avatar.gaussians.params[LATENT].shape == (n, 3)
    knn = torch.load(ckpt / "npga_knn.pt", weights_only=True)
    assert knn.shape == (n, 4) and int(knn.max()) < n  # the graph of the densified splats
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    groups = {g["name"]: g for g in state["net_optimizer"]["param_groups"]}
    assert groups["npga_prior"]["frozen_until"] == 5 and groups["npga_detail"]["weight_decay"] == 0.1
    prior_state = state["net_optimizer"]["state"][groups["npga_prior"]["params"][0]]
    assert float(prior_state["step"]) == 20 - 5  # frozen for its first 5 iterations
    dynamics = avatar.geometry.mlps.state_dict()
    assert float(dynamics["detail.net.2.weight"].abs().max()) > 0
    assert float(dynamics["prior.net.2.weight"].abs().max()) > 0

    assert render.main(["-m", str(straight), "--split", "val", "--max-frames", "1", "--quiet"]) == 0
    from PIL import Image
    rendered = next((straight / "val/ours_20/renders").glob("*.png"))
    assert Image.open(rendered).size == Image.open(straight / "val/ours_20/gt" / rendered.name).size

    pytest.importorskip("viser", reason="viser is in requirements.txt; this environment lacks it")
    import viewer
    v = viewer.AvatarViewer(viewer.options_from_args(viewer.parse_args(
        ["-m", str(straight), "--port", str(_free_port()), "--quiet", "--resolution", "32", "--device", "cpu"])))
    try:
        frame = v.renderer.rig_camera(int(v.controls["camera"].value))
        position, wxyz, fov = camera_pose(frame.viewmat, frame.K, frame.height)
        image, _ = v.render_view(position, wxyz, fov, frame.width / frame.height)
        assert image.ndim == 3 and image.shape[-1] == 3
    finally:
        v.close()

    ply = tmp_path / "frame.ply"
    capsys.readouterr()
    assert export.main(["-m", str(straight), "-o", str(ply), "--device", "cpu"]) == 0
    assert "screen-space stage (model.screen 'gha_sr') is not in the file" in capsys.readouterr().out
    exported = read_3dgs_ply(ply)
    assert exported["means"].shape[0] == n and exported["sh_degree"] == 1  # the frame's own SH
    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["screen_stage_left_out"] == "gha_sr"
    assert report["frames"][0]["check_psnr_db"] > 40  # the file renders the splats' own RGB channels

    assert_resume_reproduces(train_args(tiny, tmp_path / "resumed", config), 10, ckpt)


def test_evaluate_scores_an_npga_run(tiny, tmp_path):
    if not lpips_weights_path("alex").is_file():
        pytest.skip(f"the LPIPS weights are not at {lpips_weights_path('alex')} (scripts/fetch_lpips_weights.py)")
    model = tmp_path / "m"
    assert train.main(train_args(tiny, model, tiny_config(tmp_path), iterations=2)) == 0
    assert render.main(["-m", str(model), "--split", "val", "--max-frames", "1", "--quiet"]) == 0
    assert evaluate.main(["-m", str(model), "--split", "val", "--lpips", "alex", "--regions", "none",
                          "--device", "cpu"]) == 0


def test_npga_fits_one_training_frame_of_the_synthetic_subject(synthetic_dataset, tmp_path):
    """One frame (camera 9, the first timestep), small networks, no densification: >= 30 dB."""
    one = one_frame_subject(Path(synthetic_dataset["subjects"]["s000"]["union"]), "UNION_one_frame_npga")
    config = tmp_path / "fit.yaml"
    config.write_text(
        "model:\n"
        "  geometry: {init_points: 2000, feature_dim: 8, sh_degree: 0, latent_channels: 5, hidden: 32,\n"
        "             hidden_layers: 1, prior_frozen_steps: 0}\n"
        "  color: {degree: 0, latent_channels: 5, lr: 1.0e-2, latent_lr: 1.0e-2}\n"
        "  screen: {in_channels: 8, hidden: 8}\n"
        "optim: {position_lr_init: 1.0e-4, position_lr_final: 1.0e-4, scaling_lr: 5.0e-3, opacity_lr: 2.0e-2,\n"
        "        rotation_lr: 1.0e-3}\n"
        "densify: {enabled: false}\n")
    iterations = 150
    value = fit_one_frame(one, synthetic_dataset["flame_model"], [PAPER, config], iterations, tmp_path / "fit")
    print(f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB")
    assert value >= 30.0, f"PSNR on the training frame after {iterations} iterations: {value:.2f} dB"
