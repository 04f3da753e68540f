"""The render path without host-device syncs (CUDA graphs): fixed-capacity binning, the avatar's
decoders, and :class:`scene.rendering.GraphedAvatarRenderer`.

On the CPU the syncs are found by ``sync_audit.SyncAudit`` (the ATen calls that wait for a CUDA
device); the Triton kernels' part runs in test_triton_backend.py's interpreter process; on CUDA
the path runs under ``torch.cuda.set_sync_debug_mode("error")`` and inside a real graph.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_fixtures import mesh_avatar, sphere_strip  # noqa: E402
from sync_audit import SyncAudit  # noqa: E402
from test_rasterizer import make_scene  # noqa: E402

from gaussian_renderer import RasterizerArgumentError, rasterize  # noqa: E402
from gaussian_renderer.tiles import bin_gaussians  # noqa: E402
from scene.model.avatar import GaussianAvatar  # noqa: E402
from scene.rendering import GraphedAvatarRenderer, render_avatar  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W, H = 62, 45  # make_scene's image
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and sync debug mode need CUDA")


def binning_args(seed: int, tile_size: int):
    scene = make_scene(n=300, seed=seed)
    _, _, meta = rasterize(**scene, width=W, height=H, backend="torch", tile_size=tile_size)
    return (meta["means2d"].detach(), meta["radii_xy"], meta["depths"], meta["visible"], W, H, tile_size)


def tile_lists(isects):
    """{global tile id: its flat splat ids front to back} of the non-empty tiles."""
    return {t: isects.flat[isects.offsets[t]:isects.offsets[t] + isects.counts[t]].tolist()
            for t in torch.nonzero(isects.counts).flatten().tolist()}


@pytest.mark.parametrize("seed,tile_size", [(0, 8), (1, 16), (2, 5)])
def test_fixed_capacity_binning_equals_exact_binning(seed, tile_size):
    args = binning_args(seed, tile_size)
    exact = bin_gaussians(*args)
    M, dummy = exact.n_isects, args[2].numel()
    assert isinstance(M, int) and M == exact.flat.numel() == int(exact.counts.sum()) > 100
    assert exact.overflow is None
    for capacity in (M, M + 37):
        fixed = bin_gaussians(*args, capacity=capacity)
        assert fixed.flat.shape == (capacity,)
        assert torch.equal(fixed.flat[:M], exact.flat) and bool((fixed.flat[M:] == dummy).all())
        for key in ("counts", "offsets", "tiles_per_gauss"):
            assert torch.equal(getattr(fixed, key), getattr(exact, key)), key
        assert int(fixed.n_isects) == M and not bool(fixed.overflow)


@pytest.mark.parametrize("seed", [0, 3])
def test_fixed_capacity_too_small_keeps_the_nearest_pairs_and_says_so(seed):
    args = binning_args(seed, 8)
    exact = bin_gaussians(*args)
    full = tile_lists(exact)
    depths = args[2].reshape(-1)
    for capacity in (exact.n_isects - 1, exact.n_isects // 3, 1):
        cut = bin_gaussians(*args, capacity=capacity)
        assert cut.flat.shape == (capacity,) and int(cut.counts.sum()) == capacity
        assert bool(cut.overflow) and int(cut.n_isects) == exact.n_isects
        kept = tile_lists(cut)
        for tile, ids in kept.items():  # every tile keeps the front of its list
            assert ids == full[tile][:len(ids)], tile
        # what was dropped lies behind everything that was kept
        kept_ids = set(i for ids in kept.values() for i in ids)
        dropped = [i for tile, ids in full.items() for i in ids[len(kept.get(tile, [])):]]
        assert dropped and depths[sorted(kept_ids)].max() <= depths[dropped].min()


def test_fixed_capacity_binning_of_nothing():
    args = list(binning_args(0, 8))
    args[3] = torch.zeros_like(args[3])  # nothing visible
    fixed = bin_gaussians(*args, capacity=16)
    assert int(fixed.n_isects) == 0 and not bool(fixed.overflow) and int(fixed.counts.sum()) == 0
    assert bin_gaussians(*args).flat.numel() == 0


def test_the_audit_finds_syncs():
    """The audit must see what it is there to see, or the sync-free tests below prove nothing."""
    x = torch.arange(10.0)
    cases = {
        "_local_scalar_dense": lambda: float(x.sum()),
        "nonzero": lambda: torch.nonzero(x),
        "index": lambda: x[x > 3],
        "index_put_": lambda: x.clone().index_put_((x > 3,), torch.zeros(())),
        "repeat_interleave": lambda: torch.repeat_interleave(torch.arange(3), x[:3].long()),
        "lift_fresh": lambda: x.new_tensor([1.0]) + torch.tensor(2.0),
        "_linalg_check_errors": lambda: torch.linalg.inv(torch.eye(3)),
        "bincount": lambda: torch.bincount(x.long()),
        "allclose": lambda: torch.allclose(x, x),
        "histc": lambda: torch.histc(x),
        "masked_fill": lambda: x.masked_fill(x > 3, x.sum()),
    }
    for name, fn in cases.items():
        with SyncAudit() as audit:
            fn()
        assert any(s.startswith(name + ".") for s in audit.syncs), (name, audit.syncs)
    with SyncAudit() as audit:  # and stays quiet where nothing waits
        torch.repeat_interleave(torch.arange(3), x[:3].long(), output_size=3)
        torch.sort(x, stable=True)
        torch.where(x > 3, x, torch.zeros_like(x))
    assert audit.syncs == []


def test_binning_with_a_capacity_makes_no_sync():
    args = binning_args(0, 8)
    with SyncAudit() as audit:
        bin_gaussians(*args, capacity=5000)
    assert audit.syncs == []
    with SyncAudit() as audit:
        bin_gaussians(*args)  # sizing the list exactly is one scalar read
    assert audit.syncs == ["_local_scalar_dense.default"]


def small_avatar(n_vertices: int = 400) -> tuple[GaussianAvatar, torch.Tensor]:
    """A tensorial avatar (triplane colour, feature-line opacity) on a strip of triangles over a
    unit sphere, with non-zero feature lines so that expressions change opacity."""
    verts, faces = sphere_strip(n_vertices)
    avatar = mesh_avatar(faces, verts, {"opacity": {"n_expr_bases": 4, "n_jaw_bases": 2}, "color": {"resolution": 8},
                                        "geometry": {"init_splats_per_triangle": 2}}, face_mask=verts[:, 2] > 0.3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        avatar.opacity.lines.expr_lines.normal_(generator=g)
    return avatar, verts


def avatar_frame(device="cpu", expr_scale: float = 1.0, distance: float = 3.0) -> dict:
    """One frame's inputs of render_avatar: expression, jaw, an OpenCV camera on the -z axis."""
    viewmat = torch.eye(4)
    viewmat[2, 3] = distance
    K = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]])
    return {k: v.to(device) for k, v in {"expr": expr_scale * torch.tensor([1.0, 0.5, -0.3, 0.2]),
                                         "jaw_pose": torch.tensor([0.1, 0.0, 0.0]), "viewmat": viewmat,
                                         "K": K}.items()}


def motion_of(frame: dict) -> dict:
    """The motion ``render_avatar`` takes from an :func:`avatar_frame` (expression and jaw: what a
    mesh-bound avatar reads)."""
    return {"expr": frame["expr"], "jaw_pose": frame["jaw_pose"]}


def test_avatar_decoders_make_no_sync():
    """Everything before the rasterizer: triangle frames, binding, triplane colour, feature lines."""
    avatar, verts = small_avatar()
    f = avatar_frame()
    with torch.no_grad(), SyncAudit() as audit:
        splats = avatar.splats(verts, -f["viewmat"][:3, :3].T @ f["viewmat"][:3, 3], motion_of(f))
    assert audit.syncs == []
    assert (splats["delta"] != 0).any()  # the feature lines ran


def test_capacity_is_for_the_triton_backend_only():
    scene = make_scene(n=20, seed=0)
    for backend in ("torch", "gsplat"):
        with pytest.raises(RasterizerArgumentError, match="`isect_capacity` .* needs backend='triton'"):
            rasterize(**scene, width=W, height=H, backend=backend, isect_capacity=1000)
    with pytest.raises(RasterizerArgumentError, match="`isect_capacity` must be None or a positive int"):
        rasterize(**scene, width=W, height=H, backend="triton", isect_capacity=0)


def test_graphed_renderer_needs_cuda():
    avatar, _ = small_avatar()
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        GraphedAvatarRenderer(avatar, W, H, torch.ones(3))


# ---------------------------------------------------------------------------------------------
# CUDA: the real thing


def _eager(avatar, verts, f, background):
    with torch.no_grad():
        r = render_avatar(avatar, verts, motion_of(f), f["viewmat"], f["K"], W, H, background,
                          backend="triton")
    return r.image, r.alpha


@cuda_only
def test_render_path_with_a_capacity_has_no_sync_on_cuda():
    avatar, verts = small_avatar()
    avatar, verts = avatar.cuda(), verts.cuda()
    f, bg = avatar_frame("cuda"), torch.ones(3, device="cuda")
    _eager(avatar, verts, f, bg)  # compile the kernels first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            render_avatar(avatar, verts, motion_of(f), f["viewmat"], f["K"], W, H, bg, backend="triton",
                          isect_capacity=100_000)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda_only
def test_graphed_renderer_matches_eager_and_follows_new_inputs():
    avatar, verts = small_avatar()
    avatar, verts = avatar.cuda(), verts.cuda()
    bg = torch.tensor([1.0, 0.5, 0.0], device="cuda")
    renderer = GraphedAvatarRenderer(avatar, W, H, bg)
    for expr_scale, distance, shift in ((1.0, 3.0, 0.0), (-2.0, 2.7, 0.05), (0.0, 3.2, -0.05)):
        f = avatar_frame("cuda", expr_scale, distance)
        v = verts + shift
        image, alpha = renderer(v, motion_of(f), f["viewmat"], f["K"])
        ref_image, ref_alpha = _eager(avatar, v, f, bg)
        torch.testing.assert_close(image, ref_image, rtol=0, atol=1e-5)
        torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-5)
        assert ref_alpha.max() > 0.5
    assert renderer.captures == 1


@cuda_only
def test_graphed_renderer_recaptures_when_a_frame_needs_more_pairs():
    """A capacity below the frame's pairs (headroom 0.5) is caught after the replay: the frame is
    rendered again by a graph captured for twice its pairs, and nothing is lost."""
    avatar, verts = small_avatar()
    avatar, verts = avatar.cuda(), verts.cuda()
    bg = torch.ones(3, device="cuda")
    f = avatar_frame("cuda")
    ref_image, ref_alpha = _eager(avatar, verts, f, bg)
    renderer = GraphedAvatarRenderer(avatar, W, H, bg, headroom=0.5)
    image, alpha = renderer(verts, motion_of(f), f["viewmat"], f["K"])
    assert renderer.captures == 2 and renderer.capacity == 2 * int(renderer.n_isects) > 2048
    assert image is renderer.image and alpha is renderer.alpha  # the same buffers across captures
    torch.testing.assert_close(image, ref_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-5)


@cuda_only
def test_graphed_renderer_recaptures_when_the_avatar_tensors_are_replaced():
    """Densification replaces parameters: the old graph would read freed memory."""
    avatar, verts = small_avatar()
    avatar, verts = avatar.cuda(), verts.cuda()
    bg = torch.ones(3, device="cuda")
    f = avatar_frame("cuda")
    renderer = GraphedAvatarRenderer(avatar, W, H, bg)
    renderer(verts, motion_of(f), f["viewmat"], f["K"])
    params = avatar.gaussians.params
    params["opacity"] = torch.nn.Parameter(params["opacity"].detach() - 2.0)
    image, alpha = renderer(verts, motion_of(f), f["viewmat"], f["K"])
    assert renderer.captures == 2
    ref_image, ref_alpha = _eager(avatar, verts, f, bg)
    torch.testing.assert_close(image, ref_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="`expr` has shape \\(2,\\), but the captured graph takes \\(4,\\)"):
        renderer(verts, {"expr": f["expr"][:2], "jaw_pose": f["jaw_pose"]}, f["viewmat"], f["K"])
