"""Render an avatar for one camera and one set of FLAME vertices (train, eval and render.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gaussian_renderer import rasterize
from scene.avatar import GaussianAvatar
from utils.phase_timer import DISABLED, PhaseTimer


@dataclass
class RenderResult:
    image: torch.Tensor  # (H, W, 3) composited over the background
    alpha: torch.Tensor  # (H, W, 1)
    meta: dict  # rasterizer meta: means2d (1, N, 2) with retained grad, radii (1, N), ...
    splats: dict  # the world-space splats and opacity offsets (see GaussianAvatar.splats)


def render_avatar(
    avatar: GaussianAvatar,
    vertices: torch.Tensor,
    expr: torch.Tensor,
    jaw_pose: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor,
    backend: str = "auto",
    use_feature_lines: bool = True,
    sh_degree: int | None = None,
    timer: PhaseTimer = DISABLED,
) -> RenderResult:
    """Render the avatar posed by ``vertices`` (V, 3) from one camera.

    Args:
        expr: (n_expr,) and jaw_pose: (3,) of the frame (drive the opacity offsets).
        viewmat: (4, 4) world-to-camera (OpenCV); K: (3, 3) pixel intrinsics.
        background: (3,) colour.
        sh_degree: active SH degree for per-splat colour (GA's progressive schedule); None = all.
        timer: charges the splat decoders and the rasterization to phases "decoders" and
            "rasterization" (bench/step_profile.py).
    """
    # Camera centre -R^T t of the rigid world-to-camera map (no linalg.inv: it syncs on CUDA).
    camera_center = -viewmat[:3, :3].T @ viewmat[:3, 3]
    with timer("decoders"):
        splats = avatar.splats(vertices, camera_center, expr, jaw_pose, use_feature_lines)
    if "colors" in splats:
        colors, degree = splats["colors"], None
    else:
        colors = splats["sh"]
        degree = avatar.gaussians.sh_degree if sh_degree is None else min(sh_degree, avatar.gaussians.sh_degree)
    # Tiles of 8 px waste fewer pixel-splat pairs on the CPU for millimetre-sized splats (the
    # images are identical for any tile size); CUDA kernels (gsplat) are tuned for 16.
    tile_size = 16 if vertices.is_cuda else 8
    with timer("rasterization"):
        rgb, alpha, meta = rasterize(
            splats["means"], splats["quats"], splats["scales"], splats["opacities"], colors,
            viewmat[None], K[None], width, height,
            sh_degree=degree, backgrounds=background[None], backend=backend, tile_size=tile_size,
        )
    return RenderResult(rgb[0], alpha[0], meta, splats)


@torch.no_grad()
def measure_render_speed(avatar: GaussianAvatar, vertices: torch.Tensor, expr: torch.Tensor, jaw_pose: torch.Tensor,
                         viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int, background: torch.Tensor,
                         backend: str, frames: int = 50, warmup: int = 5) -> dict:
    """Speed of :func:`render_avatar` (the product's path, decoders included) for one frame.

    The frame rate is timed with no synchronisation inside the loop (as a viewer would run);
    the split into phases comes from a second, phase-synchronised pass.
    Returns {"fps", "ms_per_frame", "ms_decoders", "ms_rasterization", "frames_timed"}.
    """
    def render(timer=DISABLED):
        return render_avatar(avatar, vertices, expr, jaw_pose, viewmat, K, width, height, background,
                             backend=backend, timer=timer)

    sync = (lambda: torch.cuda.synchronize(vertices.device)) if vertices.is_cuda else (lambda: None)
    for _ in range(max(warmup, 1)):
        render()
    sync()
    start = time.perf_counter()
    for _ in range(frames):
        render()
    sync()
    seconds = (time.perf_counter() - start) / frames
    timer = PhaseTimer(enabled=True, device=vertices.device)
    for _ in range(frames):
        render(timer)
    phases = timer.mean_ms(frames)
    return {"fps": 1.0 / seconds, "ms_per_frame": 1000.0 * seconds, "ms_decoders": phases.get("decoders", 0.0),
            "ms_rasterization": phases.get("rasterization", 0.0), "frames_timed": frames}
