"""Triton backend (gaussian_renderer.triton_backend): on CUDA directly, on CPU through Triton's
interpreter.

The Triton compositing kernels must reproduce the torch backend to float32 rounding (in the
interpreter; compiled on a GPU within ``parity.TOLERANCES``, see ``assert_matches``): images,
alphas and depths in every render mode (also against the brute-force dense reference), D-channel
features, backgrounds, the gradient of every input, the densification signal (means2d.grad) and
radii, the 1e-4 transmittance stop, partial tiles and two cameras.

TRITON_INTERPRET: ``triton.jit`` reads it when it decorates a function (triton 3.9: through
``triton.knobs.runtime.interpret``, an environment lookup at that moment), and triton's own ``tl``
library (tl.sum, tl.cumsum, tl.zeros, ...) is decorated when triton is first imported. So the
variable must be set before the first ``import triton`` of the process, and setting it in this
pytest process would also switch every other test's triton use to the interpreter. Hence, without
CUDA, ``test_kernels_in_interpreter_subprocess`` runs this file again in a child pytest process
whose environment has ``TRITON_INTERPRET=1`` from the start, and reports the child's failures;
in the parent the kernel tests skip (they run in the child), and the checks that need triton
imported without the interpreter run there: CPU tensors raise BackendUnavailableError, and both
kernels compile to an sm_90 cubin (no GPU needed). With CUDA the kernel tests run here, compiled.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (requirements-dev.txt installs it on Linux x86_64)")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rasterizer_reference import reference_rasterize  # noqa: E402
from test_rasterizer import make_scene  # noqa: E402

from gaussian_renderer import BackendUnavailableError, parity  # noqa: E402
from gaussian_renderer.tiles import bin_gaussians  # noqa: E402
from gaussian_renderer.torch_backend import rasterize_torch  # noqa: E402
from gaussian_renderer.triton_backend import rasterize_triton, triton_available  # noqa: E402

W, H = 37, 29  # not multiples of 8 or 16: partial tiles at the right and bottom
MODES = ["RGB", "D", "ED", "RGB+D", "RGB+ED"]
KEYS = ["means", "quats", "scales", "opacities", "colors", "viewmats", "backgrounds"]

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
RUN_KERNELS = INTERPRETED or torch.cuda.is_available()
DEVICE = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"
# Compiled on a GPU, the kernels are not the torch backend's float expression (approximate exp2,
# fused multiply-adds, another scan order): parity.TOLERANCES there, float32 rounding here.
COMPILED = RUN_KERNELS and not INTERPRETED
kernel_test = pytest.mark.skipif(
    not RUN_KERNELS, reason="no CUDA: run in a TRITON_INTERPRET=1 child process by test_kernels_in_interpreter_subprocess")


@pytest.mark.skipif(RUN_KERNELS, reason="the kernel tests run in this process (CUDA or TRITON_INTERPRET=1)")
def test_kernels_in_interpreter_subprocess():
    """Run this file's kernel tests on CPU in a child pytest with TRITON_INTERPRET=1 set before
    triton is imported (see module docstring)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"kernel tests failed in the TRITON_INTERPRET=1 child process:\n{out[-8000:]}"
    assert " passed" in out and " failed" not in out


@pytest.fixture(autouse=True)
def _single_thread():
    """Values, not speed: one torch thread keeps the small ops fast on busy machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_scene(n=48, seed=0, **kw):
    """``test_rasterizer.make_scene`` (ordinary, huge, behind-camera, near-plane, nearly transparent
    and 0.99-clamped splats, a dense opaque blob; two cameras) with fewer splats, its intrinsics
    scaled from its 62 x 45 image to W x H so that the picture is the same."""
    scene = make_scene(n=n, seed=seed, **kw)
    Ks = scene["Ks"].clone()
    Ks[:, 0] *= W / 62.0
    Ks[:, 1] *= H / 45.0
    scene["Ks"] = Ks
    return scene


def render(fn, scene, grad=False, tile_size=8, **kw):
    """Render ``scene`` on DEVICE with ``fn`` (rasterize_torch / rasterize_triton); with ``grad``,
    backprop a fixed random linear loss of image and alphas. Returns CPU (img, alpha, grads or
    None) and the meta dict (on DEVICE)."""
    s = {k: (v.detach().to(DEVICE).requires_grad_(grad) if torch.is_tensor(v) else v) for k, v in scene.items()}
    opts = dict(near_plane=0.01, far_plane=1e10, sh_degree=None, backgrounds=s.get("backgrounds"),
                render_mode="RGB", eps2d=0.3, tile_size=tile_size)
    opts.update(kw)
    img, alpha, meta = fn(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"],
                          s["Ks"], W, H, **opts)
    grads = None
    if grad:
        gen = torch.Generator().manual_seed(123)
        wi = torch.randn(img.shape, generator=gen).to(DEVICE)
        wa = torch.randn(alpha.shape, generator=gen).to(DEVICE)
        ((img * wi).sum() + (alpha * wa).sum()).backward()
        grads = {k: s[k].grad for k in KEYS if torch.is_tensor(s.get(k)) and s[k].requires_grad}
        grads["means2d"] = meta["means2d"].grad
        grads = {k: (v.cpu() if v is not None else None) for k, v in grads.items()}
    return img.detach().cpu(), alpha.detach().cpu(), meta, grads


def assert_matches(got, ref, atol=1e-5, rtol=0.0):
    """An image / alpha of the Triton backend against the torch backend's (or the reference's):
    within ``atol`` (+ ``rtol``) in the interpreter, within ``parity.TOLERANCES`` when compiled."""
    if COMPILED:
        failure = parity.image_failure(parity.image_agreement(got, ref))
        assert failure is None, failure
    else:
        torch.testing.assert_close(got, ref, rtol=rtol, atol=atol)


def assert_grads_close(g, g_ref, rtol=1e-4):
    """Max abs error of every gradient within ``rtol`` x the largest reference magnitude
    (compiled on a GPU: relative norm within ``parity.TOLERANCES.grad_rel``)."""
    assert g.keys() == g_ref.keys()
    for k in g_ref:
        a, b = g[k], g_ref[k]
        assert a is not None and b is not None, k
        assert a.shape == b.shape, k
        if COMPILED:
            err = parity.grad_rel_error(a, b)
            assert err <= parity.TOLERANCES.grad_rel, f"grad of {k}: relative norm error {err:.3e}"
            continue
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        assert err <= rtol * max(scale, 1e-12), f"grad of {k}: max err {err:.3e} vs scale {scale:.3e}"


def test_triton_available():
    assert triton_available()


# ---------------------------------------------------------------------------------------------
# forward


@kernel_test
@pytest.mark.parametrize("mode", MODES)
def test_forward_matches_torch_and_reference(mode):
    scene = small_scene(n=80, seed=1)
    img, alpha, meta, _ = render(rasterize_triton, scene, render_mode=mode)
    timg, talpha, tmeta, _ = render(rasterize_torch, scene, render_mode=mode)
    rimg, ralpha = reference_rasterize(scene["means"], scene["quats"], scene["scales"], scene["opacities"],
                                       scene["colors"], scene["viewmats"], scene["Ks"], W, H,
                                       backgrounds=scene["backgrounds"], render_mode=mode)
    assert meta["backend"] == "triton"
    assert img.shape == timg.shape == (2, H, W, {"RGB": 3, "D": 1, "ED": 1}.get(mode, 4))
    assert alpha.shape == (2, H, W, 1)
    for ref_img, ref_alpha in ((timg, talpha), (rimg, ralpha)):
        assert_matches(alpha, ref_alpha)
        if mode.endswith("ED"):  # expected depth = D / alpha: relative where alpha is small
            assert_matches(img[..., :-1], ref_img[..., :-1])
            if COMPILED:  # compare the accumulated depth D = ED alpha
                assert_matches(img[..., -1:] * alpha, ref_img[..., -1:] * ref_alpha)
            else:
                torch.testing.assert_close(img[..., -1], ref_img[..., -1], rtol=2e-5, atol=1e-5)
        else:
            assert_matches(img, ref_img)
    assert ralpha.max() > 0.99 and ralpha.min() < 0.1  # opaque and transparent regions both present
    assert set(meta) == set(tmeta)
    assert torch.equal(meta["radii"], tmeta["radii"]) and torch.equal(meta["visible"], tmeta["visible"])
    assert meta["n_isects"] == tmeta["n_isects"] > 0


@kernel_test
@pytest.mark.parametrize("tile_size", [5, 16])
def test_features_backgrounds_and_tile_sizes(tile_size):
    """D = 5 per-camera features with a per-camera background; tile 5 pads 25 pixels to 32 lanes,
    tile 16 gives 3 x 2 tiles of which 3 are partial."""
    scene = small_scene(seed=2, channels=5)
    scene["colors"] = torch.rand(2, *scene["colors"].shape, generator=torch.Generator().manual_seed(2))
    img, alpha, _, _ = render(rasterize_triton, scene, tile_size=tile_size, render_mode="RGB+D")
    timg, talpha, _, _ = render(rasterize_torch, scene, tile_size=tile_size, render_mode="RGB+D")
    assert img.shape == (2, H, W, 6)
    assert_matches(img, timg)
    assert_matches(alpha, talpha)
    # the background shows through exactly where alpha < 1, never in the depth channel
    nobg, _, _, _ = render(rasterize_triton, {**scene, "backgrounds": None}, tile_size=tile_size,
                           render_mode="RGB+D")
    bg = scene["backgrounds"][:, None, None, :]
    torch.testing.assert_close(img[..., :5], nobg[..., :5] + (1 - alpha) * bg, rtol=0, atol=1e-6)
    torch.testing.assert_close(img[..., 5], nobg[..., 5], rtol=0, atol=0)


@kernel_test
def test_scene_with_nothing_visible():
    """Every splat behind the cameras: no intersections, the image is the background, alpha 0."""
    scene = small_scene(n=6, seed=3)
    scene["means"] = scene["means"] * torch.tensor([1.0, 1.0, 0.0]) - torch.tensor([0.0, 0.0, 1.0])
    img, alpha, meta, g = render(rasterize_triton, scene, grad=True)
    assert meta["n_isects"] == 0
    torch.testing.assert_close(img, scene["backgrounds"][:, None, None, :].expand_as(img))
    assert alpha.abs().max() == 0
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert g[k].abs().max() == 0, k


# ---------------------------------------------------------------------------------------------
# gradients


@kernel_test
def test_gradients_match_torch_per_camera_opacities():
    """Every input's gradient, (C, N) opacities, (C, N, 3) colours, backgrounds, viewmats; the
    densification statistics means2d.grad and radii are those of the torch backend."""
    scene = small_scene(n=60, seed=4)
    g = torch.Generator().manual_seed(4)
    scene["opacities"] = 0.05 + 0.94 * torch.rand(2, 60, generator=g)
    scene["colors"] = torch.rand(2, 60, 3, generator=g)
    _, _, meta, grads = render(rasterize_triton, scene, grad=True, render_mode="RGB+ED")
    _, _, tmeta, tgrads = render(rasterize_torch, scene, grad=True, render_mode="RGB+ED")
    assert grads["opacities"].shape == (2, 60) and grads["colors"].shape == (2, 60, 3)
    assert_grads_close(grads, tgrads)
    assert torch.equal(meta["radii"], tmeta["radii"]) and meta["radii"].dtype == torch.int32
    assert (meta["radii"] > 0).any(0).sum() > 40  # most splats are visible in some camera
    assert grads["means2d"].abs().max() > 0


@kernel_test
def test_sh_gradients_match_torch():
    scene = small_scene(n=40, seed=5, sh_coeffs=16)
    _, _, _, grads = render(rasterize_triton, scene, grad=True, sh_degree=3, render_mode="RGB+D", tile_size=16)
    _, _, _, tgrads = render(rasterize_torch, scene, grad=True, sh_degree=3, render_mode="RGB+D", tile_size=16)
    assert grads["colors"].shape == (40, 16, 3) and grads["colors"].abs().max() > 0
    assert_grads_close(grads, tgrads)


@kernel_test
def test_depth_only_gradients_match_torch():
    scene = small_scene(n=40, seed=6, channels=5)
    _, _, _, grads = render(rasterize_triton, scene, grad=True, render_mode="D")
    _, _, _, tgrads = render(rasterize_torch, scene, grad=True, render_mode="D")
    for gr in (grads, tgrads):  # depth-only: colours and background unused
        assert gr.pop("colors") is None and gr.pop("backgrounds") is None
    assert_grads_close(grads, tgrads)


@kernel_test
@pytest.mark.parametrize("channels", [2, 20])
def test_channel_layouts_match_torch(channels):
    """Both colour paths against the torch backend, forward and every gradient: per-channel
    arithmetic (2 channels, + depth = 3 in DPAD 4) and tl.dot (20 + depth = 21 in DPAD 32); at
    tile 16 the lists run over several chunks, so the prefetched rows and ids of the next chunks
    are the ones each chunk uses."""
    from gaussian_renderer.triton_backend import _launch_config

    d = channels + 1
    cfg = _launch_config(16, d)
    assert (cfg["DPAD"] <= 4) == (channels == 2)
    scene = small_scene(n=80, seed=9, channels=channels)
    img, alpha, meta, grads = render(rasterize_triton, scene, grad=True, render_mode="RGB+D", tile_size=16)
    timg, talpha, _, tgrads = render(rasterize_torch, scene, grad=True, render_mode="RGB+D", tile_size=16)
    with torch.no_grad():
        counts = bin_gaussians(meta["means2d"], meta["radii_xy"], meta["depths"], meta["visible"], W, H, 16).counts
    assert (counts > 2 * cfg["BLOCK"]).sum() >= 2
    assert img.shape == (2, H, W, d)
    assert_matches(img, timg)
    assert_matches(alpha, talpha)
    assert grads["colors"].shape == (80, channels) and grads["colors"].abs().max() > 0
    assert_grads_close(grads, tgrads)


@kernel_test
def test_int64_ids_render_as_int32(monkeypatch):
    """The int64 fallback (ids beyond isect_index_dtype's bounds) gives bit-identical images and
    gradients to the int32 ids the backend uses at this size."""
    from gaussian_renderer import triton_backend, triton_kernels
    from gaussian_renderer.compositing import _conic_table

    table = _conic_table(torch.zeros(1, 2, 2), torch.ones(1, 2, 3), torch.ones(1, 2), torch.float32, "cpu")
    assert table.shape[1] == triton_backend.N_TABLE_COLS == triton_kernels.N_COLS.value
    scene = small_scene(n=60, seed=10)
    assert triton_backend.isect_index_dtype(2 * 60, 2 * 40, 4) == torch.int32
    img, alpha, _, grads = render(rasterize_triton, scene, grad=True, render_mode="RGB+D")
    monkeypatch.setattr(triton_backend, "isect_index_dtype", lambda *a: torch.int64)
    img64, alpha64, _, grads64 = render(rasterize_triton, scene, grad=True, render_mode="RGB+D")
    assert torch.equal(img, img64) and torch.equal(alpha, alpha64)
    if INTERPRETED:
        for k in grads:
            assert torch.equal(grads[k], grads64[k]), k
    else:  # a GPU's float atomics add in any order
        assert_grads_close(grads64, grads, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# transmittance stop


def _opaque_wall_scene(n_behind=90, seed=7):
    """Four large, nearly opaque splats in front of the whole image (every pixel reaches
    T < 1e-4 within them, so whole tiles stop in their first chunk) and ``n_behind`` large
    splats behind them (tiles have lists of more than two 32-splat chunks at tile size 8)."""
    g = torch.Generator().manual_seed(seed)
    scene = small_scene(n=4 + n_behind, seed=seed)
    z = 1.0 + torch.rand(n_behind, generator=g)
    behind = torch.cat([0.15 * (2 * torch.rand(n_behind, 2, generator=g) - 1) * z[:, None], z[:, None]], -1)
    wall = torch.tensor([[0.0, 0.0, 0.6], [0.02, -0.01, 0.65], [-0.03, 0.02, 0.7], [0.01, 0.03, 0.75]])
    scene["means"] = torch.cat([wall, behind])
    # anisotropic wall splats: an isotropic one's rotation would have no gradient but rounding noise
    wall_scales = torch.tensor([[2.0, 1.2, 1.5], [1.4, 2.2, 1.0], [1.8, 1.3, 2.0], [1.1, 1.9, 1.6]])
    scene["scales"] = torch.cat([wall_scales, 0.1 + 0.2 * torch.rand(n_behind, 3, generator=g)])
    scene["opacities"] = torch.cat([torch.tensor([0.97, 0.95, 0.96, 0.93]),
                                    0.5 + 0.45 * torch.rand(n_behind, generator=g)])
    return scene


@kernel_test
def test_transmittance_stop_forward_and_gradients():
    scene = _opaque_wall_scene()
    img, alpha, meta, grads = render(rasterize_triton, scene, grad=True, render_mode="RGB+D")
    timg, talpha, tmeta, tgrads = render(rasterize_torch, scene, grad=True, render_mode="RGB+D")
    rimg, ralpha = reference_rasterize(scene["means"], scene["quats"], scene["scales"], scene["opacities"],
                                       scene["colors"], scene["viewmats"], scene["Ks"], W, H,
                                       backgrounds=scene["backgrounds"], render_mode="RGB+D")
    T = 1 - ralpha.double()
    # the stop decides every pixel: T stays >= 1e-4, while the 90 splats behind would take
    # the product far below it; the tiles' lists are longer than two kernel chunks
    assert T.min() >= 1e-4 * (1 - 1e-3) and T.max() < 1e-2
    with torch.no_grad():
        counts = bin_gaussians(meta["means2d"], meta["radii_xy"], meta["depths"], meta["visible"], W, H, 8).counts
    assert (counts > 64).sum() >= 10
    assert_matches(alpha, talpha, atol=1e-6)
    assert_matches(alpha, ralpha, atol=1e-6)
    assert_matches(img, timg)
    assert_matches(img, rimg)
    assert_grads_close(grads, tgrads)
    # splats hidden behind the wall get no gradient at all
    hidden = (tmeta["radii"][:, 4:] > 0).any(0).cpu() & (tgrads["means"][4:].abs().sum(-1) == 0)
    assert hidden.sum() > 10
    assert grads["means"][4:][hidden].abs().max() == 0


def _one_pixel_scene(opacities, px=3, py=2):
    """Tiny splats at depths 1, 2, ... whose means project onto the centre of pixel (px, py) in
    both cameras, so each one's Gaussian there is 1 (alpha = min(0.99, o)) and ~0 elsewhere;
    splat i has colour e_i."""
    n = opacities.shape[0]
    K = torch.tensor([[[100.0, 0.0, 4.0], [0.0, 80.0, 4.0], [0.0, 0.0, 1.0]]]).expand(2, 3, 3).contiguous()
    z = torch.arange(1.0, n + 1.0)
    means = torch.stack([(px + 0.5 - 4.0) / 100.0 * z, (py + 0.5 - 4.0) / 80.0 * z, z], -1)
    return dict(means=means, quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n), scales=1e-3 * z[:, None].expand(n, 3),
                opacities=opacities, colors=torch.eye(n, max(n, 3)), viewmats=torch.eye(4)[None].repeat(2, 1, 1),
                Ks=K, backgrounds=None)


@kernel_test
def test_compositing_rules_on_one_pixel():
    """Analytic check at one pixel centre: alpha < 1/255 is skipped, the splat that would bring T
    below 1e-4 and every later one are not composited (T after splat 5 would be 0.15^5 = 7.6e-5),
    and alpha clamps at 0.99 (where it does not depend on the splat: gradients as the torch backend)."""
    px, py = 3, 2
    scene = _one_pixel_scene(torch.tensor([0.003, 0.85, 0.85, 0.85, 0.85, 0.85, 0.5]), px, py)
    img, alpha, _, _ = render(rasterize_triton, scene, render_mode="RGB+D", tile_size=4)
    T = [1.0, 0.15, 0.0225, 0.003375]
    expected = torch.zeros(8)
    for i in range(4):
        expected[i + 1] = 0.85 * T[i]
        expected[7] += 0.85 * T[i] * (i + 2.0)
    torch.testing.assert_close(img[1, py, px], expected, rtol=1e-6, atol=1e-7)
    assert math.isclose(alpha[0, py, px, 0].item(), 1 - 0.15 ** 4, rel_tol=1e-6)

    scene = _one_pixel_scene(torch.tensor([1.0]), px, py)
    scene["backgrounds"] = torch.tensor([[0.0, 1.0, 0.0]] * 2)
    img, _, _, grads = render(rasterize_triton, scene, grad=True)
    torch.testing.assert_close(img[:, py, px], torch.tensor([[0.99, 0.01, 0.0]] * 2), rtol=1e-6, atol=1e-7)
    _, _, _, tgrads = render(rasterize_torch, scene, grad=True)
    assert_grads_close(grads, tgrads)


# ---------------------------------------------------------------------------------------------
# a fixed intersection capacity: no host-device sync (CUDA graphs)


@kernel_test
def test_fixed_capacity_renders_the_same_and_flags_overflow():
    scene = small_scene(n=80, seed=1)
    img, alpha, meta, grads = render(rasterize_triton, scene, grad=True, render_mode="RGB+D")
    n = meta["n_isects"]
    cimg, calpha, cmeta, cgrads = render(rasterize_triton, scene, grad=True, render_mode="RGB+D",
                                         isect_capacity=n + 13)
    assert torch.equal(cimg, img) and torch.equal(calpha, alpha)
    if INTERPRETED:
        for key in grads:
            assert torch.equal(cgrads[key], grads[key]), key
    else:  # a GPU's float atomics add in any order
        assert_grads_close(cgrads, grads, rtol=1e-6)
    assert int(cmeta["n_isects"]) == n and not bool(cmeta["isect_overflow"])
    # too small: the farthest splats' pairs are dropped, and the meta says so
    simg, salpha, smeta, _ = render(rasterize_triton, scene, render_mode="RGB+D", isect_capacity=n // 2)
    assert bool(smeta["isect_overflow"]) and int(smeta["n_isects"]) == n
    assert (salpha - alpha).abs().max() > 1e-3


@kernel_test
def test_avatar_render_path_with_a_capacity_makes_no_sync():
    """Decoders + projection + binning + the Triton kernels, as a CUDA graph would capture them;
    the exact-size call's one sync is there to show that the audit sees the path."""
    from sync_audit import SyncAudit
    from test_sync_free_render import small_avatar, avatar_frame, motion_of

    from scene.rendering import render_avatar

    avatar, verts = small_avatar()
    f = avatar_frame()
    bg = torch.tensor([1.0, 0.5, 0.0])
    with torch.no_grad():
        exact = render_avatar(avatar, verts, motion_of(f), f["viewmat"], f["K"], W, H, bg,
                              backend="triton")
        with SyncAudit() as audit:
            fixed = render_avatar(avatar, verts, motion_of(f), f["viewmat"], f["K"], W, H, bg,
                                  backend="triton", isect_capacity=exact.meta["n_isects"] + 100)
        assert audit.syncs == []
        with SyncAudit() as audit:
            render_avatar(avatar, verts, motion_of(f), f["viewmat"], f["K"], W, H, bg, backend="triton")
        assert audit.syncs == ["_local_scalar_dense.default"]
    assert torch.equal(fixed.image, exact.image) and exact.alpha.max() > 0.5


# ---------------------------------------------------------------------------------------------
# where Triton cannot run


@pytest.mark.skipif(INTERPRETED, reason="needs a process where triton was imported without TRITON_INTERPRET")
def test_cpu_tensors_without_interpreter_raise():
    scene = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in small_scene(n=4, seed=8).items()}
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        rasterize_triton(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
                         scene["viewmats"], scene["Ks"], W, H, near_plane=0.01, far_plane=1e10, sh_degree=None,
                         backgrounds=None, render_mode="RGB", eps2d=0.3, tile_size=16)


@kernel_test
def test_float64_raises():
    scene = {k: (v.double() if torch.is_tensor(v) else v) for k, v in small_scene(n=4, seed=8).items()}
    with pytest.raises(BackendUnavailableError, match="float32"):
        render(rasterize_triton, scene)


def _compile_report():
    """bench/triton_compile_report.py (the sm_90 binder, compiler and ptxas report)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import triton_compile_report

    return triton_compile_report


@pytest.mark.skipif(INTERPRETED, reason="compiles the kernels: needs triton imported without TRITON_INTERPRET")
@pytest.mark.parametrize("tile_size", [16, 8])
@pytest.mark.parametrize("channels", [3, 6])
def test_kernels_compile_once_for_sm90_without_spills(tile_size, channels):
    """The interpreter does not type-check like the compiler (loop-carried types, layouts, dot
    shapes): compile both kernels to a cubin for sm_90 (H100 / H200), which needs no GPU, through
    Triton's own binder. The probe scene's 40 x 32 and the avatar's 550 x 802 bind to one
    specialisation (one compiled kernel, as the JIT cache is keyed on it), while a different tile
    size does not. No register spills with D = 3 (per-channel arithmetic) at tile 16 and 8, nor
    with D = 6 (tl.dot) at tile 8. Every float division is IEEE-rounded (``div.rn``)."""
    report = _compile_report()
    from gaussian_renderer import triton_kernels

    for name, kernel in (("forward", triton_kernels.composite_forward_kernel),
                         ("backward", triton_kernels.composite_backward_kernel)):
        keys = {}
        for size in ((40, 32), (550, 802), (37, 29)):
            args, cfg = report.launch_args(name, tile_size, channels, *size)
            keys[size], src, options = report.specialise(kernel, args, cfg)
        assert len(set(keys.values())) == 1, f"{name}: one image size each compiles its own variant"
        args4, cfg4 = report.launch_args(name, 4, channels, 40, 32)
        assert report.specialise(kernel, args4, cfg4)[0] not in keys.values()  # keys do tell tile sizes apart
        compiled = report.compile_sm90(src, options)
        assert compiled.asm.get("cubin")
        # the weights' division r = alpha / (1 - alpha) rounds as torch's (IEEE), not approximately
        ptx = compiled.asm["ptx"]
        assert "div.rn.f32" in ptx and "div.full.f32" not in ptx and "div.approx.f32" not in ptx
        res = report.ptxas_resources(compiled.asm["ptx"])
        assert 0 < res["n_regs"] <= 255, res
        if channels <= 4 or tile_size == 8:  # the tile-16 tl.dot backward still spills (BENCHMARKS.md)
            assert res["n_spills"] == 0 and res["spill_store_bytes"] == 0, f"{name} tile {tile_size}: {res}"
