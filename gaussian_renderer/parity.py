"""Parity of a backend with the torch reference on a small seeded scene: the parity probe's
measurement (``backends.probe_backend``) and ``bench/gpu_check.py``'s parity section.

The scene renders through the same validation and dispatch as ``rasterize(backend=name)``, with
rasterize()'s defaults for everything it does not set.
"""
from __future__ import annotations

import torch

from .arguments import validate
from .dispatch import run_backend
from .registry import REFERENCE_BACKEND

# The inputs whose gradients are compared.
GRAD_INPUTS = ("means", "quats", "scales", "opacities", "colors")


def probe_scene(device: torch.device, n: int = 96, width: int = 40, height: int = 32, seed: int = 0) -> dict:
    """A small seeded scene: opaque-enough splats in front of one camera, leaves requiring grad.

    Returns a dict of rasterize() arguments: means (n, 3), quats (n, 4), scales (n, 3),
    opacities (n,), colors (n, 3), viewmats (1, 4, 4), Ks (1, 3, 3), width, height,
    backgrounds (1, 3); float32 on ``device``.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.5, 1.0 + 0.2 * torch.rand(n, 1, generator=g)], 1)
    quats = torch.randn(n, 4, generator=g)
    scales = 0.01 + 0.03 * torch.rand(n, 3, generator=g)
    opacities = 0.2 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    K = torch.tensor([[[1.2 * width, 0.0, width / 2], [0.0, 1.2 * width, height / 2], [0.0, 0.0, 1.0]]])
    scene = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
             "viewmats": torch.eye(4)[None], "Ks": K, "backgrounds": torch.ones(1, 3)}
    scene = {k: v.to(device=device, dtype=torch.float32) for k, v in scene.items()}
    for k in GRAD_INPUTS:
        scene[k].requires_grad_(True)
    scene.update(width=width, height=height)
    return scene


# rasterize()'s defaults for the arguments the probe scene does not set (tests/test_backends.py
# holds them equal to the signature of ``api.rasterize``, which this module cannot import: ``api``
# asks the probe when the backend is "auto").
PROBE_SETTINGS = dict(near_plane=0.01, far_plane=1e10, sh_degree=None, eps2d=0.3, tile_size=16, packed=False,
                      rasterize_mode="classic", isect_capacity=None)


def _rasterize_named(backend: str, scene: dict, render_mode: str):
    """``rasterize(**scene, render_mode=render_mode, backend=backend)`` for a registered name:
    the same validation and dispatch, without the "auto" choice."""
    call = validate(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
                    scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
                    backgrounds=scene["backgrounds"], render_mode=render_mode, backend=backend, **PROBE_SETTINGS)
    return run_backend(backend, call)


def render_with_grads(backend: str, scene: dict, render_mode: str = "RGB+D") -> dict:
    """Render ``scene`` (see :func:`probe_scene`) with the registered ``backend`` and
    backpropagate a fixed random weighting of the output. Returns CPU tensors: image (1, H, W, D),
    alpha (1, H, W, 1), radii (1, N), and ``grad_<input>`` for every input in
    :data:`GRAD_INPUTS` plus ``grad_means2d``."""
    args = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and k in GRAD_INPUTS else v)
            for k, v in scene.items()}
    image, alpha, meta = _rasterize_named(backend, args, render_mode)
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(image.shape, generator=g).to(image.device)
    ((image * weights).sum() + alpha.sum()).backward()
    out = {"image": image.detach().cpu(), "alpha": alpha.detach().cpu(), "radii": meta["radii"].cpu()}
    for k in GRAD_INPUTS:
        out[f"grad_{k}"] = args[k].grad.detach().cpu()
    if meta["means2d"].grad is not None:
        out["grad_means2d"] = meta["means2d"].grad.detach().cpu()
    return out


def compare_with_reference(backend: str, device: torch.device, seed: int = 0) -> dict:
    """Parity of ``backend`` on ``device`` with the torch backend on the CPU, on the probe scene.

    Returns {"image_max_abs": float, "alpha_max_abs": float, "grad_rel": {input: float}}; the
    relative gradient error is ||g - g_ref|| / max(||g_ref||, 1e-12). Raises whatever the backend
    raises when it cannot render.
    """
    ref = render_with_grads(REFERENCE_BACKEND, probe_scene(torch.device("cpu"), seed=seed))
    got = render_with_grads(backend, probe_scene(device, seed=seed))
    rel = {}
    for key in [k for k in ref if k.startswith("grad_")]:
        if key not in got:
            rel[key[5:]] = float("inf")
            continue
        rel[key[5:]] = float((got[key] - ref[key]).norm() / ref[key].norm().clamp_min(1e-12))
    return {"image_max_abs": float((got["image"] - ref["image"]).abs().max()),
            "alpha_max_abs": float((got["alpha"] - ref["alpha"]).abs().max()),
            "grad_rel": rel}
