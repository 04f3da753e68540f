"""gaussian_renderer.rasterize: torch tile backend vs a brute-force dense reference, gradients,
gradcheck, features, backgrounds, argument errors, and CUDA/gsplat checks (skipped on CPU).

Coverage rule under test: a splat takes part at a pixel iff ``near <= z <= far`` and its alpha
there is ``>= 1/255`` (then the usual 0.99 clamp and the 1e-4 transmittance stop apply). The
reference has no screen-space box at all; the product's opacity-aware tile boxes must contain every
such pixel, so images agree without any tolerance for truncated splats.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rasterizer_reference import reference_project, reference_rasterize  # noqa: E402

from gaussian_renderer import (  # noqa: E402
    BackendUnavailableError,
    RasterizerArgumentError,
    gsplat_available,
    rasterize,
)
from gaussian_renderer.torch_backend import rasterize_torch  # noqa: E402

W, H = 62, 45  # not multiples of the tile size: partial tiles at the right and bottom
MODES = ["RGB", "D", "ED", "RGB+D", "RGB+ED"]


@pytest.fixture(autouse=True)
def _single_thread():
    """These tests check values, not speed: one torch thread keeps them fast on shared, busy
    machines (multi-threaded small ops can be 10-100x slower when other jobs hold the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def make_cameras(dtype=torch.float32):
    """Two cameras with non-centred principal points and non-square pixels (fx != fy)."""
    vm0 = torch.eye(4, dtype=torch.float64)
    vm1 = torch.eye(4, dtype=torch.float64)
    vm1[:3, :3] = _rot_y(0.3)
    vm1[:3, 3] = torch.tensor([-0.35, 0.05, 0.1])
    K0 = torch.tensor([[70.0, 0.0, 29.3], [0.0, 52.0, 27.6], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K1 = torch.tensor([[55.0, 0.0, 35.1], [0.0, 63.0, 20.2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.stack([vm0, vm1]).to(dtype), torch.stack([K0, K1]).to(dtype)


def make_scene(n=300, seed=0, dtype=torch.float32, sh_coeffs=0, channels=3):
    """Adversarial random splats: ordinary, huge, behind the camera, between the camera and the
    near plane, barely in front of it (huge on screen), nearly transparent (some below 1/255) and
    nearly opaque (some reaching the 0.99 clamp)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    z = 0.5 + 2.5 * u(n)
    kind = torch.randint(0, 100, (n,), generator=g)
    z = torch.where(kind < 8, -1.0 + 0.99 * u(n), z)  # behind the camera
    z = torch.where((kind >= 8) & (kind < 11), 0.01 * u(n), z)  # in front of the near plane
    z = torch.where((kind >= 11) & (kind < 13), 0.03 + 0.1 * u(n), z)  # just past the near plane
    xy = (u(n, 2) * 2 - 1) * torch.stack([0.55 * z.abs() + 0.05, 0.6 * z.abs() + 0.05], -1)
    means = torch.cat([xy, z[:, None]], -1)
    cluster = (kind >= 37) & (kind < 70)  # a dense, opaque blob: pixels reach the 1e-4 stop
    blob = torch.tensor([-0.25, 0.1, 1.5], dtype=torch.float64) + 0.08 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    means = torch.where(cluster[:, None], blob, means)
    log_s = math.log(0.005) + (math.log(0.08) - math.log(0.005)) * u(n, 3)
    scales = torch.exp(log_s)
    huge = (kind >= 14) & (kind < 18)
    scales = torch.where(huge[:, None], 0.3 + 1.2 * u(n, 3), scales)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64) * (0.5 + u(n, 1))
    opac = 0.05 + 0.9 * u(n)
    opac = torch.where(huge | (kind >= 11) & (kind < 13), 0.01 + 0.05 * u(n), opac)  # big ones: faint
    opac = torch.where(cluster, 0.5 + 0.45 * u(n), opac)
    opac = torch.where((kind >= 22) & (kind < 32), 0.012 * u(n), opac)  # nearly transparent
    opac = torch.where((kind >= 32) & (kind < 37), 0.99 + 0.01 * u(n), opac)  # clamp at 0.99
    if sh_coeffs:
        colors = 0.4 * torch.randn(n, sh_coeffs, 3, generator=g, dtype=torch.float64)
    else:
        colors = u(n, channels)
    viewmats, Ks = make_cameras(torch.float64)
    bg = u(2, colors.shape[-1])
    out = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors,
               viewmats=viewmats, Ks=Ks, backgrounds=bg)
    return {k: v.to(dtype) for k, v in out.items()}


def run_both(scene, grad=False, **kw):
    """Render with the product and the reference; optionally backprop a fixed random loss."""
    results = []
    for fn in (rasterize, reference_rasterize):
        s = {k: (v.detach().clone().requires_grad_(grad) if torch.is_tensor(v) else v) for k, v in scene.items()}
        if fn is rasterize:
            img, alpha, meta = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"],
                                         s["viewmats"], s["Ks"], W, H, backgrounds=s.get("backgrounds"), **kw)
            m2d = meta["means2d"]
        else:
            img, alpha, m2ds = reference_rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"],
                                                   s["viewmats"], s["Ks"], W, H, backgrounds=s.get("backgrounds"),
                                                   return_means2d=True, **kw)
            meta, m2d = None, m2ds
        grads = None
        if grad:
            gen = torch.Generator().manual_seed(123)
            wi = torch.randn(img.shape, generator=gen, dtype=torch.float64).to(img.dtype)
            wa = torch.randn(alpha.shape, generator=gen, dtype=torch.float64).to(img.dtype)
            ((img * wi).sum() + (alpha * wa).sum()).backward()
            grads = {k: v.grad for k, v in s.items() if torch.is_tensor(v) and v.requires_grad}
            grads["means2d"] = m2d.grad if fn is rasterize else torch.stack([m.grad for m in m2d])
        results.append((img.detach(), alpha.detach(), meta, grads))
    return results


def assert_grads_close(g, g_ref, rtol, names=None):
    for k in names or g_ref:
        a, b = g[k], g_ref[k]
        assert a is not None and b is not None, k
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        assert err <= rtol * max(scale, 1e-12), f"grad of {k}: max err {err:.3e} vs scale {scale:.3e}"


# ---------------------------------------------------------------------------------------------
# forward vs reference


@pytest.mark.parametrize("mode", MODES)
def test_forward_matches_reference(mode):
    scene = make_scene(seed=1)
    (img, alpha, meta, _), (rimg, ralpha, _, _) = run_both(scene, render_mode=mode)
    assert img.shape == (2, H, W, {"RGB": 3, "D": 1, "ED": 1}.get(mode, 4))
    assert alpha.shape == (2, H, W, 1)
    torch.testing.assert_close(alpha, ralpha, rtol=0, atol=1e-5)
    if mode.endswith("ED"):
        # expected depth = D / alpha: compare the colour part absolutely, ED relatively
        torch.testing.assert_close(img[..., :-1], rimg[..., :-1], rtol=0, atol=1e-5)
        torch.testing.assert_close(img[..., -1], rimg[..., -1], rtol=2e-5, atol=1e-5)
    else:
        torch.testing.assert_close(img, rimg, rtol=0, atol=1e-5)
    # the scene exercises what it claims to: opaque, transparent and clamped regions
    assert ralpha.max() > 0.9995 and ralpha.min() < 0.1
    assert meta["backend"] == "torch"


def test_forward_far_plane_and_float64():
    scene = make_scene(seed=2, dtype=torch.float64)
    (img, alpha, meta, _), (rimg, ralpha, _, _) = run_both(scene, render_mode="RGB+D", far_plane=2.0)
    torch.testing.assert_close(img, rimg, rtol=0, atol=1e-10)
    torch.testing.assert_close(alpha, ralpha, rtol=0, atol=1e-10)
    depths = meta["depths"]
    assert not meta["visible"][depths > 2.0].any()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colours_match_reference(degree):
    scene = make_scene(seed=3 + degree, sh_coeffs=16)
    (img, alpha, _, _), (rimg, ralpha, _, _) = run_both(scene, sh_degree=degree)
    torch.testing.assert_close(img, rimg, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha, ralpha, rtol=0, atol=1e-5)


def test_feature_rendering_32_channels():
    scene = make_scene(seed=7, channels=32)
    (img, alpha, _, _), (rimg, _, _, _) = run_both(scene, render_mode="RGB+ED")
    assert img.shape == (2, H, W, 33)
    torch.testing.assert_close(img[..., :32], rimg[..., :32], rtol=0, atol=1e-5)


def test_per_camera_colours_and_opacities():
    scene = make_scene(n=200, seed=9)
    g = torch.Generator().manual_seed(9)
    scene["colors"] = torch.rand(2, 200, 3, generator=g)
    scene["opacities"] = torch.rand(2, 200, generator=g)
    (img, alpha, meta, _), (rimg, ralpha, _, _) = run_both(scene)
    torch.testing.assert_close(img, rimg, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha, ralpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(meta["opacities"], scene["opacities"])


def test_backgrounds():
    scene = make_scene(seed=8)
    vm, Ks = scene["viewmats"], scene["Ks"]
    args = (scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], vm, Ks, W, H)
    bg = torch.tensor([0.2, 0.5, 0.9])
    i_none, a_none, _ = rasterize(*args)
    i_vec, a_vec, _ = rasterize(*args, backgrounds=bg)
    i_cam, a_cam, _ = rasterize(*args, backgrounds=torch.stack([bg, torch.zeros(3)]))
    torch.testing.assert_close(a_none, a_vec)
    torch.testing.assert_close(i_vec, i_none + (1 - a_none) * bg, rtol=0, atol=1e-6)
    torch.testing.assert_close(i_cam[0], i_vec[0])
    torch.testing.assert_close(i_cam[1], i_none[1])
    # depth channels never receive the background
    d_none, _, _ = rasterize(*args, render_mode="RGB+D")
    d_bg, _, _ = rasterize(*args, render_mode="RGB+D", backgrounds=bg)
    torch.testing.assert_close(d_bg[..., 3], d_none[..., 3])


def test_compositing_conventions_on_one_pixel():
    """Analytic check of the 3DGS rules at one pixel centre (x + 0.5, y + 0.5), where each splat's
    Gaussian is 1 so alpha = min(0.99, opacity): alpha < 1/255 is skipped, the splat that would
    bring T below 1e-4 is not composited and neither is any later one; alpha clamps at 0.99."""
    d = torch.float64
    px, py = 3, 2
    K = torch.tensor([[[100.0, 0.0, 4.0], [0.0, 80.0, 4.0], [0.0, 0.0, 1.0]]], dtype=d)
    vm = torch.eye(4, dtype=d)[None]
    z = torch.arange(1.0, 8.0, dtype=d)
    means = torch.stack([(px + 0.5 - 4.0) / 100.0 * z, (py + 0.5 - 4.0) / 80.0 * z, z], -1)
    opac = torch.tensor([0.003, 0.85, 0.85, 0.85, 0.85, 0.85, 0.5], dtype=d)
    colors = torch.eye(7, dtype=d)  # one channel per splat shows who contributed
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 7, dtype=d)
    scales = torch.full((7, 3), 1e-3, dtype=d) * z[:, None]
    img, alpha, _ = rasterize(means, quats, scales, opac, colors, vm, K, 8, 8, render_mode="RGB+D")
    T = [1.0, 0.15, 0.0225, 0.003375]  # before splats 1..4; T after splat 5 would be 7.6e-5 < 1e-4
    expected = torch.zeros(8, dtype=d)
    for i in range(4):
        expected[i + 1] = 0.85 * T[i]
        expected[7] += 0.85 * T[i] * z[i + 1]
    torch.testing.assert_close(img[0, py, px], expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(alpha[0, py, px, 0], torch.tensor(1 - 0.15 ** 4, dtype=d), rtol=1e-9, atol=0)
    # opacity 1 clamps to alpha 0.99
    img, alpha, _ = rasterize(means[:1], quats[:1], scales[:1], torch.ones(1, dtype=d), colors[:1, :3], vm, K, 8, 8,
                              backgrounds=torch.tensor([0.0, 1.0, 0.0], dtype=d))
    torch.testing.assert_close(img[0, py, px], torch.tensor([0.99, 0.01, 0.0], dtype=d), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gradients


def test_gradients_match_reference_float64():
    scene = make_scene(seed=11, dtype=torch.float64)
    (_, _, meta, g), (_, _, _, g_ref) = run_both(scene, grad=True, render_mode="RGB+ED")
    assert_grads_close(g, g_ref, rtol=1e-8)
    assert meta["means2d"].grad is not None


def test_gradients_match_reference_float32():
    scene = make_scene(seed=12)
    (_, _, _, g), (_, _, _, g_ref) = run_both(scene, grad=True, render_mode="RGB+D")
    assert_grads_close(g, g_ref, rtol=2e-4)


def test_sh_and_feature_gradients_float64():
    scene = make_scene(n=150, seed=13, dtype=torch.float64, sh_coeffs=16)
    (_, _, _, g), (_, _, _, g_ref) = run_both(scene, grad=True, sh_degree=3)
    assert_grads_close(g, g_ref, rtol=1e-8)
    scene = make_scene(n=150, seed=14, dtype=torch.float64, channels=32)
    (_, _, _, g), (_, _, _, g_ref) = run_both(scene, grad=True, render_mode="D")
    g_ref["colors"] = torch.zeros_like(scene["colors"])  # depth-only: colours unused
    assert g["colors"] is None or g["colors"].abs().max() == 0
    g.pop("colors"), g_ref.pop("colors")
    assert_grads_close(g, g_ref, rtol=1e-8, names=["means", "quats", "scales", "opacities", "viewmats"])


def test_gradcheck_tiny_scene():
    g = torch.Generator().manual_seed(5)
    d = torch.float64
    means = torch.tensor([[0.05, 0.02, 1.0], [-0.12, 0.05, 1.3], [0.1, -0.06, 0.8], [0.0, 0.0, 1.6]], dtype=d)
    quats = torch.randn(4, 4, generator=g, dtype=d)
    scales = torch.tensor([[0.05, 0.03, 0.04], [0.08, 0.02, 0.05], [0.03, 0.03, 0.06], [0.2, 0.1, 0.1]], dtype=d)
    opac = torch.tensor([0.6, 0.45, 0.7, 0.35], dtype=d)
    colors = torch.rand(4, 4, 3, generator=g, dtype=d) * 0.5
    viewmats = torch.eye(4, dtype=d)[None].clone()
    viewmats[0, :3, 3] = torch.tensor([0.01, -0.02, 0.05])
    Ks = torch.tensor([[[40.0, 0.0, 13.1], [0.0, 33.0, 5.7], [0.0, 0.0, 1.0]]], dtype=d)
    bg = torch.tensor([[0.3, 0.6, 0.1]], dtype=d)

    def fn(means, quats, scales, opac, colors, viewmats, bg):
        img, alpha, _ = rasterize(means, quats, scales, opac, colors, viewmats, Ks, 20, 12, sh_degree=1,
                                  backgrounds=bg, render_mode="RGB+ED", tile_size=8)
        return img, alpha

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors, viewmats, bg)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


# ---------------------------------------------------------------------------------------------
# tiling invariance, early termination, meta


def _dense_opaque_scene(n=400, seed=21, dtype=torch.float64):
    scene = make_scene(n=n, seed=seed, dtype=dtype)
    scene["opacities"] = (0.6 + 0.39 * torch.rand(n, generator=torch.Generator().manual_seed(seed))).to(dtype)
    return scene


def test_tiling_and_blocking_do_not_change_results():
    """Tile size, chunking budget and K-block length (which drive early termination and the
    active-tile compaction) change nothing, forward or backward."""
    scene = _dense_opaque_scene()
    keys = ["means", "quats", "scales", "opacities", "colors", "viewmats", "backgrounds"]
    outs = []
    for tile_size, budget, block in [(16, 1 << 19, 256), (8, 1 << 19, 256), (4, 1 << 12, 7), (16, 1 << 12, 8)]:
        s = {k: scene[k].clone().requires_grad_(True) for k in keys}
        img, alpha, meta = rasterize_torch(
            s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], scene["Ks"], W, H,
            near_plane=0.01, far_plane=1e10, sh_degree=None, backgrounds=s["backgrounds"], render_mode="RGB+D",
            eps2d=0.3, tile_size=tile_size, budget=budget, block=block)
        (img.square().sum() + alpha.sum()).backward()
        outs.append((img.detach(), alpha.detach(), [s[k].grad for k in keys]))
    assert outs[0][1].max() > 1 - 1e-3  # pixels do reach the transmittance stop
    for img, alpha, grads in outs[1:]:
        torch.testing.assert_close(img, outs[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alpha, outs[0][1], rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, outs[0][2]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    (img, alpha, _, _), (rimg, ralpha, _, _) = run_both(scene, render_mode="RGB+D")
    torch.testing.assert_close(img, rimg, rtol=0, atol=1e-10)


def test_meta_contents_and_visibility():
    scene = make_scene(seed=31)
    s = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
    C, N = 2, scene["means"].shape[0]
    img, alpha, meta = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"],
                                 s["Ks"], W, H, near_plane=0.01, far_plane=2.5)
    assert meta["means2d"].shape == (C, N, 2) and meta["means2d"].requires_grad
    assert meta["radii"].shape == (C, N) and meta["radii"].dtype == torch.int32
    assert meta["radii_xy"].shape == (C, N, 2)
    assert meta["depths"].shape == (C, N) and meta["conics"].shape == (C, N, 3)
    assert meta["opacities"].shape == (C, N) and meta["visible"].dtype == torch.bool
    assert torch.equal(meta["visible"], meta["radii"] > 0)
    img.sum().backward()
    assert meta["means2d"].grad is not None and meta["means2d"].grad.shape == (C, N, 2)
    assert (meta["means2d"].grad[~meta["visible"]] == 0).all()

    with torch.no_grad():
        for c in range(C):
            pc, m2d, cov2 = reference_project(scene["means"], scene["quats"], scene["scales"], scene["viewmats"][c],
                                              scene["Ks"][c], W, H)
            z, o = pc[:, 2], scene["opacities"]
            torch.testing.assert_close(meta["depths"][c], z)
            ok = (z >= 0.01) & (z <= 2.5)
            torch.testing.assert_close(meta["means2d"][c][ok], m2d[ok], rtol=1e-5, atol=1e-4)
            conic = torch.linalg.inv(cov2)
            ref_conic = torch.stack([conic[:, 0, 0], conic[:, 0, 1], conic[:, 1, 1]], -1)
            torch.testing.assert_close(meta["conics"][c][ok], ref_conic[ok], rtol=1e-4, atol=1e-6)
            # opacity-aware extents: e = min(3.33, sqrt(2 ln(255 o)))
            e = torch.sqrt(2 * torch.log((255 * o).clamp_min(1))).clamp_max(3.33)
            rx = torch.ceil(e * cov2[:, 0, 0].sqrt())
            ry = torch.ceil(e * cov2[:, 1, 1].sqrt())
            inside = (m2d[:, 0] + rx > 0) & (m2d[:, 0] - rx < W) & (m2d[:, 1] + ry > 0) & (m2d[:, 1] - ry < H)
            vis = ok & (o > 1 / 255) & inside
            assert torch.equal(meta["visible"][c], vis)
            assert (meta["radii"][c][vis] == torch.maximum(rx, ry)[vis].int()).all()
            assert not meta["visible"][c][z < 0.01].any()  # behind the camera / before the near plane
            assert not meta["visible"][c][o <= 1 / 255].any()


def test_extent_box_contains_every_pixel_above_alpha_threshold():
    """The precise coverage rule: |px - u| <= r_x and |py - v| <= r_y for every pixel where
    o exp(-d^T Q d / 2) >= 1/255, so tile binning never truncates a splat."""
    scene = make_scene(n=300, seed=41, dtype=torch.float64)
    _, _, meta = rasterize(*[scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats",
                                                "Ks")], W, H)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    pix = torch.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], -1)
    checked = 0
    for c in range(2):
        for i in torch.nonzero(meta["visible"][c]).squeeze(1).tolist():
            a, b, cc = meta["conics"][c, i].tolist()
            d = pix - meta["means2d"][c, i]
            alpha = scene["opacities"][i] * torch.exp(-0.5 * (a * d[:, 0] ** 2 + 2 * b * d[:, 0] * d[:, 1] + cc * d[:, 1] ** 2))
            hit = alpha >= 1 / 255
            rx, ry = meta["radii_xy"][c, i].tolist()
            assert (d[hit, 0].abs() <= rx).all() and (d[hit, 1].abs() <= ry).all()
            checked += int(hit.any())
    assert checked > 100


def test_empty_and_invisible_scenes():
    vm, Ks = make_cameras()
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    # no splats at all
    e = torch.zeros(0, 3)
    img, alpha, meta = rasterize(e, torch.zeros(0, 4), e, torch.zeros(0), e, vm, Ks, W, H, backgrounds=bg)
    torch.testing.assert_close(img, bg[:, None, None, :].expand(2, H, W, 3))
    assert (alpha == 0).all() and meta["radii"].shape == (2, 0)
    # only splats behind the camera: zero (not NaN) gradients
    means = torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, 0.0]], requires_grad=True)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, requires_grad=True)
    scales = torch.full((2, 3), 0.1, requires_grad=True)
    opac = torch.full((2,), 0.5, requires_grad=True)
    cols = torch.rand(2, 3, requires_grad=True)
    img, alpha, meta = rasterize(means, quats, scales, opac, cols, vm[:1], Ks[:1], W, H, render_mode="RGB+ED")
    (img.sum() + alpha.sum()).backward()
    assert not meta["visible"].any() and (alpha == 0).all()
    for t in (means, quats, scales, opac, cols):
        assert torch.isfinite(t.grad).all() and (t.grad == 0).all()


def test_auto_backend_on_cpu_is_torch_and_gsplat_needs_cuda():
    scene = make_scene(n=20, seed=51)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")] + [W, H]
    _, _, meta = rasterize(*args, backend="auto")
    assert meta["backend"] == "torch"
    with pytest.raises(BackendUnavailableError, match="requirements-gpu.txt|CUDA"):
        rasterize(*args, backend="gsplat")


# ---------------------------------------------------------------------------------------------
# argument validation


def _good_args(n=5, C=2):
    vm, Ks = make_cameras()
    return dict(means=torch.rand(n, 3), quats=torch.rand(n, 4), scales=torch.rand(n, 3), opacities=torch.rand(n),
                colors=torch.rand(n, 3), viewmats=vm[:C], Ks=Ks[:C], width=W, height=H)


@pytest.mark.parametrize("change, message", [
    (dict(means=torch.rand(5, 4)), r"`means` must have shape \(N, 3\)"),
    (dict(quats=torch.rand(5, 3)), r"`quats` must have shape \(N, 4\)"),
    (dict(quats=torch.rand(4, 4)), r"`quats` must have shape \(N, 4\) = \(5, 4\)"),
    (dict(scales=torch.rand(5)), r"`scales` must have shape \(N, 3\)"),
    (dict(opacities=torch.rand(5, 1)), r"`opacities` must have shape \(N,\)"),
    (dict(colors=torch.rand(4, 3)), r"`colors` must have shape \(N, D\)"),
    (dict(colors=torch.rand(5, 4, 3), sh_degree=2), r"`colors` \(SH coefficients\) must have shape \(N, K, 3\)"),
    (dict(colors=torch.rand(5, 16, 3), sh_degree=4), r"`sh_degree` must be None or an int in 0..3"),
    (dict(viewmats=torch.rand(2, 3, 4)), r"`viewmats` must have shape \(C, 4, 4\)"),
    (dict(Ks=torch.rand(1, 3, 3)), r"`Ks` must have shape \(C, 3, 3\) = \(2, 3, 3\)"),
    (dict(width=0), r"`width` must be a positive int"),
    (dict(height=12.5), r"`height` must be a positive int"),
    (dict(backgrounds=torch.rand(2, 4)), r"`backgrounds` must have shape \(C, D\) = \(2, 3\)"),
    (dict(render_mode="RGBD"), r"`render_mode` must be one of RGB, D, ED, RGB\+D, RGB\+ED"),
    (dict(backend="cuda"), r"`backend` must be one of auto, torch, triton, gsplat"),
    (dict(scales=torch.rand(5, 3, dtype=torch.float64)), r"`scales` has dtype torch.float64 but `means`"),
    (dict(opacities=torch.randint(0, 2, (5,))), r"`opacities` must be a floating-point tensor"),
    (dict((k, v.half()) for k, v in _good_args().items() if torch.is_tensor(v)), r"`means` must be float32 or float64"),
    (dict(means=[[0.0, 0.0, 1.0]]), r"`means` must be a torch.Tensor"),
    (dict(near_plane=2.0, far_plane=1.0), r"`near_plane` \(2.0\) must be smaller than `far_plane`"),
    (dict(packed=True), r"`packed=True` is not supported"),
])
def test_bad_arguments_raise_clear_errors(change, message):
    args = _good_args()
    args.update(change)
    with pytest.raises(RasterizerArgumentError, match=message) as exc:
        rasterize(**args)
    assert isinstance(exc.value, ValueError)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to put tensors on another device")
def test_device_mismatch_is_reported():
    args = _good_args()
    args["colors"] = args["colors"].cuda()
    with pytest.raises(RasterizerArgumentError, match="`colors` is on device"):
        rasterize(**args)


# ---------------------------------------------------------------------------------------------
# CUDA: the torch backend unchanged on GPU tensors, and gsplat vs torch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available: GPU rasterizer tests skipped")
def test_torch_backend_on_cuda_matches_cpu():
    scene = make_scene(seed=61)
    keys = ["means", "quats", "scales", "opacities", "colors", "viewmats", "backgrounds"]
    outs = []
    for dev in ("cpu", "cuda"):
        s = {k: v.to(dev).requires_grad_(k in keys) for k, v in scene.items()}
        img, alpha, meta = rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"],
                                     s["Ks"], W, H, backgrounds=s["backgrounds"], render_mode="RGB+ED", backend="torch")
        assert img.device.type == dev
        (img.sum() + alpha.sum()).backward()
        outs.append((img.cpu(), alpha.cpu(), {k: s[k].grad.cpu() for k in keys}))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=0, atol=1e-5)
    assert_grads_close(outs[1][2], outs[0][2], rtol=1e-3)


def _fraction_close(a, b, atol):
    return ((a - b).abs() <= atol).float().mean().item()


_GSPLAT_SKIP = ("CUDA is not available: gsplat backend tests skipped" if not torch.cuda.is_available()
                else "gsplat is not installed (pip install -r requirements-gpu.txt)")


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and gsplat_available()), reason=_GSPLAT_SKIP)
@pytest.mark.parametrize("mode", ["RGB", "RGB+ED"])
def test_gsplat_matches_torch_backend(mode):
    scene = {k: v.cuda() for k, v in make_scene(seed=71).items()}
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")] + [W, H]
    ig, ag, mg = rasterize(*args, backgrounds=scene["backgrounds"], render_mode=mode, backend="gsplat")
    it, at, mt = rasterize(*args, backgrounds=scene["backgrounds"], render_mode=mode, backend="torch")
    assert mg["backend"] == "gsplat" and ig.shape == it.shape and mg["radii"].shape == mt["radii"].shape
    # identical conventions: agreement within 1e-3 except for rare threshold flips (1/255, 1e-4)
    assert _fraction_close(ig[..., :3], it[..., :3], 1e-3) > 0.995
    assert _fraction_close(ag, at, 1e-3) > 0.995
    assert (ig[..., :3] - it[..., :3]).abs().mean() < 1e-4
    assert (mg["visible"] == mt["visible"]).float().mean() > 0.99
    both = mg["visible"] & mt["visible"]  # gsplat leaves invisible splats' entries unspecified
    torch.testing.assert_close(mg["means2d"][both], mt["means2d"][both], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(mg["depths"][both], mt["depths"][both])
    torch.testing.assert_close(mg["conics"][both], mt["conics"][both], rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# tile binning: offsets by binary search, int32 ids and keys


def _binning_inputs(C=2, N=400, W=61, H=45, seed=0):
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(C, N, 2, generator=g) * torch.tensor([W * 1.3, H * 1.3]) - 5
    radii = torch.randint(0, 12, (C, N, 2), generator=g).to(torch.int32)
    depths = torch.rand(C, N, generator=g)
    depths[:, ::5] = 0.5  # equal depths keep the splat order
    visible = torch.rand(C, N, generator=g) > 0.15
    return means2d, radii, depths, visible, W, H


@pytest.mark.parametrize("tile_size,capacity", [(8, None), (16, None), (8, 1000), (4, 20000)])
def test_binning_offsets_counts_and_int32_ids(tile_size, capacity):
    """Each tile's list (offsets, counts from the binary search over the sorted keys) holds exactly
    the splats whose tile box covers it (a brute-force histogram), front to back; int32 ids and
    keys give the same list as int64."""
    from gaussian_renderer.tiles import bin_gaussians

    means2d, radii, depths, visible, W, H = _binning_inputs()
    C, N = depths.shape
    out = bin_gaussians(means2d, radii, depths, visible, W, H, tile_size, capacity)
    out32 = bin_gaussians(means2d, radii, depths, visible, W, H, tile_size, capacity, index_dtype=torch.int32)
    assert out.flat.dtype == torch.int64 and out32.flat.dtype == torch.int32
    assert torch.equal(out32.flat.long(), out.flat)
    assert torch.equal(out32.counts, out.counts) and torch.equal(out32.offsets, out.offsets)
    assert out.counts.dtype == out.offsets.dtype == torch.int64

    tx, ty = -(-W // tile_size), -(-H // tile_size)
    u, v = means2d[..., 0], means2d[..., 1]
    rx, ry = radii[..., 0].float(), radii[..., 1].float()
    x0 = torch.floor((u - rx) / tile_size).clamp(0, tx)
    x1 = torch.ceil((u + rx) / tile_size).clamp(0, tx)
    y0 = torch.floor((v - ry) / tile_size).clamp(0, ty)
    y1 = torch.ceil((v + ry) / tile_size).clamp(0, ty)
    lists = {}
    for c in range(C):
        for n in sorted(range(N), key=lambda n: (depths[c, n].item(), n)):  # front to back, stable
            if not visible[c, n]:
                continue
            for y in range(int(y0[c, n]), int(y1[c, n])):
                for x in range(int(x0[c, n]), int(x1[c, n])):
                    lists.setdefault(c * tx * ty + y * tx + x, []).append(c * N + n)
    total = sum(len(v) for v in lists.values())
    assert out.n_isects == total or int(out.n_isects) == total
    kept = out.counts.sum().item()
    assert kept == (total if capacity is None else min(total, capacity))
    assert torch.equal(out.offsets, torch.cumsum(out.counts, 0) - out.counts)
    for t in range(C * tx * ty):
        got = out.flat[out.offsets[t]:out.offsets[t] + out.counts[t]].tolist()
        want = lists.get(t, [])
        if capacity is None:
            assert got == want, t
        else:  # the farthest splats' pairs are dropped: a tile keeps a front prefix of its list
            assert got == want[:len(got)], t
    assert (out.flat[kept:] == C * N).all()  # padding: the dummy id


def test_int32_index_bounds_without_huge_tensors():
    """int32 ids and keys exactly while every id, key (and for the kernels, id x row width) is
    at most 2^31 - 1; beyond, the Triton backend falls back to int64 and bin_gaussians refuses
    int32 with one line naming the sizes (checked on stride-0 views: nothing large is allocated)."""
    from gaussian_renderer.tiles import INT32_LIMIT, bin_gaussians, fits_int32
    from gaussian_renderer.triton_backend import N_TABLE_COLS, isect_index_dtype

    assert INT32_LIMIT == 2**31 - 1
    assert fits_int32(INT32_LIMIT, 1) and fits_int32(1, INT32_LIMIT)
    assert not fits_int32(INT32_LIMIT + 1, 1) and not fits_int32(1, INT32_LIMIT + 1)
    # the kernels compute id * 10 (table row) and id * D (features) in the ids' dtype
    limit_ids = INT32_LIMIT // N_TABLE_COLS
    assert isect_index_dtype(limit_ids, 1000, 3) == torch.int32
    assert isect_index_dtype(limit_ids + 1, 1000, 3) == torch.int64
    assert isect_index_dtype(INT32_LIMIT // 32, 1000, 32) == torch.int32
    assert isect_index_dtype(INT32_LIMIT // 32 + 1, 1000, 32) == torch.int64
    assert isect_index_dtype(1000, INT32_LIMIT, 3) == torch.int32
    assert isect_index_dtype(1000, INT32_LIMIT + 1, 3) == torch.int64
    assert isect_index_dtype(100_000, 2 * 35 * 51, 4) == torch.int32  # the avatar: int32

    N = INT32_LIMIT + 1  # C * N = 2^31 > 2^31 - 1: the dummy id does not fit
    means2d = torch.zeros(1, 1, 2).expand(1, N, 2)
    radii = torch.zeros(1, 1, 2, dtype=torch.int32).expand(1, N, 2)
    depths = torch.zeros(1, 1).expand(1, N)
    visible = torch.zeros(1, 1, dtype=torch.bool).expand(1, N)
    with pytest.raises(ValueError, match=r"1 cameras x 2147483648 splats .* use index_dtype=torch.int64"):
        bin_gaussians(means2d, radii, depths, visible, 16, 16, 16, index_dtype=torch.int32)
    with pytest.raises(ValueError, match="index_dtype must be torch.int32 or torch.int64"):
        bin_gaussians(means2d[:, :1], radii[:, :1], depths[:, :1], visible[:, :1], 16, 16, 16,
                      index_dtype=torch.int16)
