"""The GBS-style method (scene/methods/gbs, docs/METHODS_GBS.md): blendshape sums, FLAME's skinning
of a Gaussian, the semantic initialisation, gradients, a 20-step training that saves, loads,
renders, exports and resumes bit-exactly, and a single frame overfitted."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flame_fixtures import make_small_model, write_pickle  # noqa: E402
from test_train import assert_resume_reproduces  # noqa: E402

import export  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
from flame_model import FLAME  # noqa: E402
from flame_model.lbs import axis_angle_to_matrix  # noqa: E402
from scene.config import resolve_config  # noqa: E402
from scene.interop.export_3dgs import read_3dgs_ply  # noqa: E402
from scene.methods.gbs.blendshapes import blend  # noqa: E402
from scene.methods.gbs.geometry import semantic_loss  # noqa: E402
from scene.methods.gbs.nearest_point import nearest_barycentric  # noqa: E402
from scene.model.avatar import GaussianAvatar, build_context  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.model.components import SplatGeometry  # noqa: E402
from scene.model.gaussian_model import BoundGaussians  # noqa: E402
from utils.rotations import quat_to_matrix  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/gaussian_blendshapes.yaml", REPO / "configs/gaussian_blendshapes_demo.yaml"]


@pytest.fixture(scope="module")
def flame_rig(tmp_path_factory):
    """A small FLAME-layout model without pose correctives (posedirs zero: the Gaussians' skinning
    has none, so FLAME's vertices are then exactly comparable), its layer and a subject's shape."""
    folder = tmp_path_factory.mktemp("gbs_flame")
    model, masks = make_small_model(posedirs_scale=0.0)
    model.pop("J", None)
    write_pickle(folder / "flame2023.pkl", model)
    write_pickle(folder / "FLAME_masks.pkl", masks)
    flame = FLAME(folder / "flame2023.pkl")
    shape = 0.5 * torch.randn(300, generator=torch.Generator().manual_seed(1))
    return flame, shape


def gbs_avatar(flame, shape, **geometry) -> GaussianAvatar:
    cfg = resolve_config(CONFIGS, [{"model": {"geometry": geometry}}] if geometry else []).model
    canonical = flame.canonical_vertices(shape)[0]
    return GaussianAvatar(cfg, build_context(cfg, flame, canonical))


def splats_at(avatar: GaussianAvatar, binding: torch.Tensor, xyz: torch.Tensor) -> BoundGaussians:
    """Splats of the avatar's attributes (deltas at zero) bound to ``binding`` at ``xyz``."""
    splats = BoundGaussians(binding, avatar.splat_attributes())
    with torch.no_grad():
        splats.params["xyz"].copy_(xyz)
    return splats


def random_motion(n_expr: int, seed: int = 0, scale: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: scale * torch.randn(*s, generator=g)  # noqa: E731
    return {"expr": 3 * r(n_expr), "rotation": r(3), "neck_pose": r(3), "jaw_pose": r(3).abs(), "eyes_pose": r(6),
            "translation": r(3)}


def vertex_splats(avatar: GaussianAvatar) -> tuple[torch.Tensor, torch.Tensor]:
    """(triangle, vertex) pairs: every triangle's first corner, a vertex on that triangle."""
    faces = avatar.faces
    return torch.arange(faces.shape[0]), faces[:, 0]


def test_blendshape_sum_on_known_values():
    neutral = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    deltas = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 10.0, 0.0]],
                           [[1.0, 1.0, 1.0], [-2.0, 0.0, 4.0]]])  # (N=2, K=2, 3)
    psi = torch.tensor([0.5, -1.0])
    expected = torch.tensor([[1.5, -8.0, 3.0], [2.5, 0.5, -3.5]])
    assert torch.equal(blend(neutral, deltas, psi), expected)


def test_colour_and_opacity_add_the_frame_s_blendshape_deltas(flame_rig):
    avatar = gbs_avatar(*flame_rig)
    params = avatar.gaussians.params
    k = avatar.color.cfg.n_blendshapes
    with torch.no_grad():
        params["sh0"].fill_(0.25)
        params["bs_sh0"].zero_()
        params["bs_sh0"][:, 1] = 2.0  # blendshape 1 adds 2 to the DC band
        params["bs_opacity"].zero_()
        params["bs_opacity"][:, 0] = -1.0
    expr = torch.zeros(100)
    expr[0], expr[1], expr[k] = 3.0, 0.5, 7.0  # component K has no blendshape: no effect
    geometry = SplatGeometry.canonical(params["xyz"], params)
    geometry.motion = {"expr": expr}
    sh = avatar.color(geometry)["sh"]
    assert torch.allclose(sh[:, 0], torch.full_like(sh[:, 0], 0.25 + 0.5 * 2.0))
    assert torch.equal(sh[:, 1:], params["shN"].detach())  # higher bands' deltas are zero
    assert torch.allclose(avatar.opacity(geometry, expr, torch.zeros(3)), torch.full((len(params["xyz"]),), -3.0))
    # Neutral without a motion (export's canonical look-ups).
    assert torch.allclose(avatar.color(SplatGeometry.canonical(params["xyz"], params))["sh"][:, 0],
                          torch.full_like(sh[:, 0], 0.25))


def test_nearest_barycentric_is_the_nearest_point_of_the_triangle():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(200, 3, generator=g, dtype=torch.float64) for _ in range(3))
    p = 1.5 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    bary = nearest_barycentric(p, a, b, c)
    assert (bary >= -1e-12).all() and torch.allclose(bary.sum(-1), torch.ones(200, dtype=torch.float64))
    found = (bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c - p).norm(dim=-1)
    # Brute force over a fine barycentric grid of each triangle.
    n = 120
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    keep = i + j <= n
    u, v = (i[keep] / n).double(), (j[keep] / n).double()
    grid = (1 - u - v)[None, :, None] * a[:, None] + u[None, :, None] * b[:, None] + v[None, :, None] * c[:, None]
    brute = (grid - p[:, None]).norm(dim=-1).min(1).values
    assert (found <= brute + 1e-12).all()
    assert (brute - found).max() < 0.05  # the grid's spacing bounds how far it can be from the true nearest


def test_a_gaussian_at_a_vertex_is_skinned_as_flame_skins_the_vertex(flame_rig):
    """FLAME's posed vertex (expression blendshapes, joints with the expression's offsets, LBS of
    the pose, translation; this FLAME has no pose correctives, which the Gaussians do not have)
    equals the Gaussian placed at that canonical vertex, for the whole expression (the K
    blendshapes and, with follow_remaining_expression, the components beyond them)."""
    flame, shape = flame_rig
    avatar = gbs_avatar(flame, shape)
    triangles, vertices = vertex_splats(avatar)
    splats = splats_at(avatar, triangles, avatar.canonical_vertices[vertices])
    for seed in range(3):
        motion = random_motion(flame.n_expr, seed)
        posed = flame(shape, *(motion[k][None] for k in ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose",
                                                            "translation")))[0]
        out = avatar.geometry(posed, splats, torch.zeros(3), motion)
        assert torch.allclose(out.means, posed[vertices], atol=2e-6), (out.means - posed[vertices]).abs().max()


def test_a_jaw_skinned_gaussian_turns_with_the_jaw_and_its_position_with_flame(flame_rig):
    """The mouth set is bound to lower-teeth triangles: pure jaw weights, so its rotation is the
    jaw's world rotation (global x neck x jaw) times its own."""
    flame, shape = flame_rig
    avatar = gbs_avatar(flame, shape)
    n_mouth = avatar.geometry.cfg.mouth_splats
    mouth = slice(len(avatar.gaussians) - n_mouth, None)
    weights = avatar.geometry.skinning_weights(avatar.gaussians)[mouth]
    assert torch.allclose(weights, torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]).expand_as(weights), atol=1e-6)
    motion = random_motion(flame.n_expr, 3)
    out = avatar.geometry(None, avatar.gaussians, torch.zeros(3), motion)
    jaw = axis_angle_to_matrix(torch.stack([motion["rotation"], motion["neck_pose"], motion["jaw_pose"]]))
    world = jaw[0] @ jaw[1] @ jaw[2]
    own = quat_to_matrix(avatar.gaussians.params["rotation"][mouth])
    assert torch.allclose(quat_to_matrix(out.quats[mouth]), world @ own, atol=1e-5)
    # Points inside the lower teeth's box, centred between the teeth vertices' extremes.
    teeth = avatar.canonical_vertices[flame.teeth.lower]
    xyz = avatar.gaussians.params["xyz"][mouth]
    assert ((xyz >= teeth.min(0).values - 1e-6) & (xyz <= teeth.max(0).values + 1e-6)).all()


def test_semantic_initialisation_is_flame_s_displacement_at_vertices(flame_rig):
    flame, shape = flame_rig
    avatar = gbs_avatar(flame, shape)
    k = avatar.geometry.cfg.n_blendshapes
    triangles, vertices = vertex_splats(avatar)
    splats = splats_at(avatar, triangles, avatar.canonical_vertices[vertices])
    deltas = avatar.geometry.position_deltas(splats)  # (N, K, 3)
    expected = flame.shapedirs[vertices, :, flame.n_shape:flame.n_shape + k].transpose(1, 2)
    assert deltas.shape == (len(vertices), k, 3)
    assert torch.allclose(deltas, expected, atol=1e-7)
    # The semantic loss starts at zero and pulls a residual back towards FLAME's displacement.
    residual = torch.zeros(len(vertices), k, 3)
    unit = avatar.geometry.mean_triangle_size()
    assert float(semantic_loss(residual, unit)) == 0.0
    moved = (residual + 1e-3).detach().requires_grad_()
    semantic_loss(moved, unit).backward()
    assert (moved.grad > 0).all()


def test_gradients_through_the_geometry_match_finite_differences(flame_rig):
    flame, shape = flame_rig
    avatar = gbs_avatar(flame, shape, n_blendshapes=2, mouth_splats=0).double()
    geometry = avatar.geometry
    g = torch.Generator().manual_seed(0)
    binding = torch.tensor([3, 40, 77, 150])
    corners = geometry.canonical_corners[binding]
    # Inside its triangle, off it above the interior, beyond an edge, beyond a corner.
    bary = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.4, 0.2], [0.6, 0.6, -0.2], [1.4, -0.2, -0.2]], dtype=torch.float64)
    xyz = (bary[..., None] * corners).sum(1) + 1e-3 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    motion = {k: v.double() for k, v in random_motion(flame.n_expr, 5).items()}

    def frame(xyz, rotation, log_scale, bs_xyz, bs_rotation, bs_scale, jaw_pose):
        params = {"xyz": xyz, "rotation": rotation, "log_scale": log_scale, "bs_xyz": bs_xyz,
                  "bs_rotation": bs_rotation, "bs_scale": bs_scale}
        out = geometry(None, SimpleNamespace(params=params, binding=binding), torch.zeros(3, dtype=torch.float64),
                       dict(motion, jaw_pose=jaw_pose))
        return torch.cat([out.means, out.quats, out.scales], 1)

    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    inputs = (xyz, torch.nn.functional.normalize(r(4, 4), dim=1), 0.1 * r(4, 3) - 4, 1e-3 * r(4, 2, 3),
              0.1 * r(4, 2, 4), 0.1 * r(4, 2, 3), motion["jaw_pose"])
    assert torch.autograd.gradcheck(frame, tuple(x.clone().requires_grad_() for x in inputs), eps=1e-7, atol=1e-6)


# -- training, files, CLIs --------------------------------------------------------------------------


def train_args(tiny, model: Path, iterations: int = 20) -> list[str]:
    configs = [CONFIGS[0], REPO / "configs/demo.yaml", CONFIGS[1]]
    return list(map(str, ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"],
                          *[a for c in configs for a in ("--config", c)], "--iterations", iterations, "--eval",
                          "--quiet", "--set", "densify.densify_from_iter=4", "--set", "densify.densification_interval=5",
                          "--set", "densify.densify_until_iter=16", "--set", "densify.grad_threshold=0",
                          "--set", "run.save_interval=10", "--set", "run.eval_interval=1000"]))


def test_gbs_trains_densifies_saves_loads_renders_exports_and_resumes(tiny, tmp_path):
    straight = tmp_path / "straight"
    assert train.main(train_args(tiny, straight)) == 0
    ckpt = straight / "checkpoints/iteration_0000020"
    loaded = load_model(straight, flame_path=tiny["flame"])
    avatar, k = loaded.avatar, 10
    n = len(avatar.gaussians)
    start = avatar.faces.shape[0] + avatar.geometry.cfg.mouth_splats
    assert n > start, "densification never ran"
    params = avatar.gaussians.params
    assert params["bs_xyz"].shape == (n, k, 3) and params["bs_sh0"].shape == (n, k, 1, 3)
    assert params["bs_shN"].shape == (n, k, 15, 3) and params["bs_opacity"].shape == (n, k)
    for name in ("bs_xyz", "bs_rotation", "bs_scale", "bs_opacity", "bs_sh0"):
        assert (params[name] != 0).any(), f"{name} never learnt"
    state = torch.load(ckpt / "training_state.pt", weights_only=True)["splat_optimizers"]["bs_xyz"]["state"]
    assert state[0]["exp_avg"].shape == (n, k, 3)  # densification carried the deltas' Adam moments

    # Render (the method is built in: every CLI knows it) with its storage report per attribute.
    assert render.main(["-m", str(straight), "--split", "val", "--max-frames", "2", "--quiet"]) == 0
    assert len(list((straight / "val/ours_20/renders").glob("*.png"))) == 2
    storage = json.loads((straight / "storage.json").read_text())
    by_attribute = storage["splat_attribute_bytes"]
    assert by_attribute["bs_xyz"] == 4 * n * k * 3 and by_attribute["bs_shN"] == 4 * n * k * 15 * 3
    assert sum(by_attribute.values()) < storage["bytes"]["splats"] < sum(by_attribute.values()) + 200_000

    # Export one frame: the frame's SH (neutral + its blendshape deltas) as the renderer has them.
    ply = tmp_path / "frame.ply"
    assert export.main(["-m", str(straight), "-o", str(ply), "--quiet", "--device", "cpu"]) == 0
    assert read_3dgs_ply(ply)["means"].shape[0] == n
    assert json.loads(ply.with_suffix(".json").read_text())["frames"][0]["check_psnr_db"] > 40

    # Resume: 10 steps, saved, continued by the CLI to 20 = the straight run, bit for bit.
    assert_resume_reproduces(train_args(tiny, tmp_path / "resumed"), 10, ckpt)


def test_gbs_overfits_one_training_frame_of_the_synthetic_subject(synthetic_dataset, tmp_path):
    """The method's capacity and gradients end to end: one frame of the synthetic subject, fitted
    by the trainer's own optimisers (no densification), reaches 30 dB PSNR in 90 steps. The SH rate
    is 20x the config's so that the colours get from grey to the frame's in tens of steps (at the
    config's rate it takes about 300: 38.7 dB then)."""
    from scene.training.losses import photometric_loss

    union = synthetic_dataset["subjects"]["s000"]["union"]
    args = ["-s", union, "-m", str(tmp_path / "m"), "--flame", synthetic_dataset["flame_model"], "--quiet",
            *[a for c in CONFIGS for a in ("--config", str(c))], "--set", "densify.enabled=false",
            "--set", "optim.lambda_dssim=0", "--set", "model.color.lr=0.05", "--iterations", "90"]
    trainer = train.Trainer(train.request_from_args(train.parse_args(args)))
    frame = trainer.train_frames[0]
    gt = trainer.subject.load_image(frame).to(trainer.device)
    t0 = time.time()
    for step in range(1, 91):
        result, _ = trainer.render_frame(frame, step)
        loss = photometric_loss(result.image, gt, 0.0)[0]
        loss.backward()
        for opt in trainer._all_optimizers():
            opt.step()
            opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        image = trainer.render_frame(frame, None)[0].image
        psnr = float(-10 * torch.log10(((image - gt) ** 2).mean()))
    assert psnr >= 30.0, f"one frame overfitted to {psnr:.2f} dB PSNR in {time.time() - t0:.0f} s (expected >= 30)"
    print(f"GBS one-frame overfit: {psnr:.2f} dB PSNR in {time.time() - t0:.0f} s")
