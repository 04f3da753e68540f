"""Which rasterizer backend runs: availability, a one-time parity probe, and the ``auto`` order.

A backend that imports is not yet a backend that works: gsplat compiles its CUDA code on the first
call (and is not known to build with the CUDA 13 toolkit), and a kernel can compile yet be wrong.
So before ``auto`` uses an accelerated backend, :func:`probe_backend` renders a small seeded scene
through it and through the ``torch`` reference on the CPU, and compares the image and the gradient
of every input. The outcome is cached for the process; ``auto`` falls back to the next candidate
with one warning line (which backend, why, the fix). An explicit request for a backend that fails
its probe is one clear error (:class:`BackendUnavailableError`).

    choice = select_backend("auto", torch.device("cuda"))   # BackendChoice(name, device, reason)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .gsplat_backend import BackendUnavailableError, gsplat_import_error

# ``auto`` on CUDA tries these in order (fastest first, by the figures of bench/gpu_check.py);
# ``torch`` always works and ends every list.
AUTO_ORDER_CUDA = ("triton", "gsplat", "torch")
AUTO_ORDER_CPU = ("torch",)

# Probe tolerances: loose enough for float32 summation-order differences between kernels, tight
# enough that a wrong kernel (a dropped term, a wrong clamp) fails by orders of magnitude.
PROBE_IMAGE_TOL = 1e-3
PROBE_GRAD_RTOL = 1e-2

FIXES = {
    "gsplat": "gsplat compiles its CUDA code on first use with the local CUDA toolkit (nvcc matching torch's "
              "CUDA version); install it with `pip install -r requirements-gpu.txt`, or use --backend torch",
    "triton": "the triton package ships with CUDA builds of torch on Linux; install the torch build for your "
              "driver, or use --backend torch",
    "torch": "the torch backend needs nothing beyond torch",
}


@dataclass(frozen=True)
class BackendChoice:
    """The backend that will run, on which device, and why it was chosen."""

    name: str
    device: str
    reason: str

    def describe(self) -> str:
        return f"rasterizer {self.name} on {self.device} ({self.reason})"


# (backend, device) -> None when the probe passed, else the reason (one line).
_probe_results: dict = {}
# (device, candidates) -> the BackendChoice of ``auto``: rasterize(backend="auto") asks every call,
# and the skipped backends' warning lines must be said once, not once per frame.
_auto_choices: dict = {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


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
    for k in ("means", "quats", "scales", "opacities", "colors"):
        scene[k].requires_grad_(True)
    scene.update(width=width, height=height)
    return scene


GRAD_INPUTS = ("means", "quats", "scales", "opacities", "colors")


def render_with_grads(backend: str, scene: dict, render_mode: str = "RGB+D") -> dict:
    """Render ``scene`` (see :func:`probe_scene`) with ``backend`` and backpropagate a fixed
    random weighting of the output. Returns CPU tensors: image (1, H, W, D), alpha (1, H, W, 1),
    and ``grad_<input>`` for every input in :data:`GRAD_INPUTS` plus ``grad_means2d``."""
    from .api import rasterize

    args = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and k in GRAD_INPUTS else v)
            for k, v in scene.items()}
    image, alpha, meta = rasterize(args["means"], args["quats"], args["scales"], args["opacities"], args["colors"],
                                   args["viewmats"], args["Ks"], args["width"], args["height"],
                                   backgrounds=args["backgrounds"], render_mode=render_mode, backend=backend)
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
    ref = render_with_grads("torch", probe_scene(torch.device("cpu"), seed=seed))
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


def backend_import_error(name: str) -> Optional[str]:
    """Why ``name`` cannot even be imported here (one line), or None when it imports."""
    if name == "gsplat":
        return gsplat_import_error()
    if name == "triton":
        try:
            import triton  # noqa: F401  (ships with CUDA builds of torch on Linux)
        except Exception as exc:
            return _first_line(exc)
        return None
    if name == "torch":
        return None
    raise ValueError(f"unknown rasterizer backend {name!r}")


def probe_backend(name: str, device: torch.device) -> Optional[str]:
    """None when ``name`` renders the probe scene on ``device`` like the torch reference, else the
    reason in one line. Cached per (backend, device) for the life of the process."""
    key = (name, str(device))
    if key in _probe_results:
        return _probe_results[key]
    if name == "torch":
        _probe_results[key] = None
        return None
    reason = backend_import_error(name)
    if reason is None:
        try:
            parity = compare_with_reference(name, device)
        except Exception as exc:  # a failed compile, a missing symbol, an unsupported device...
            reason = _first_line(exc)
        else:
            worst_grad = max(parity["grad_rel"].items(), key=lambda kv: kv[1])
            if not parity["image_max_abs"] <= PROBE_IMAGE_TOL:
                reason = f"its image differs from the torch backend by {parity['image_max_abs']:.3g} (> {PROBE_IMAGE_TOL})"
            elif not worst_grad[1] <= PROBE_GRAD_RTOL:
                reason = (f"its gradient of {worst_grad[0]} differs from the torch backend by {worst_grad[1]:.3g} "
                          f"relative (> {PROBE_GRAD_RTOL})")
    _probe_results[key] = reason
    return reason


def clear_probe_cache() -> None:
    """Forget probe outcomes (after installing a package in a long-lived process)."""
    _probe_results.clear()
    _auto_choices.clear()


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def select_backend(requested: str, device: torch.device | str, candidates: Optional[tuple] = None,
                   warn: Callable[[str], None] = _warn) -> BackendChoice:
    """The backend to use for ``requested`` ("auto" or a name) on ``device``.

    ``auto``: the first of ``candidates`` (default :data:`AUTO_ORDER_CUDA` on CUDA,
    :data:`AUTO_ORDER_CPU` elsewhere) whose probe passes; each one skipped gets one ``warn``
    line, once per process (the choice is cached, as ``rasterize(backend="auto")`` asks every
    call). A named backend must pass its probe, else :class:`BackendUnavailableError`.
    """
    device = torch.device(device)
    if requested != "auto":
        if requested not in FIXES:
            raise BackendUnavailableError(f"unknown rasterizer backend {requested!r}; use auto, torch, triton or gsplat")
        reason = probe_backend(requested, device)
        if reason is not None:
            raise BackendUnavailableError(
                f"rasterizer backend {requested!r} cannot run on {device}: {reason}. Fix: {FIXES[requested]}")
        return BackendChoice(requested, str(device), "requested" + ("" if requested == "torch" else ", probe passed"))
    if candidates is None:
        candidates = AUTO_ORDER_CUDA if device.type == "cuda" else AUTO_ORDER_CPU
    key = (str(device), tuple(candidates))
    if key not in _auto_choices:
        _auto_choices[key] = _first_working(candidates, device, warn)
    return _auto_choices[key]


def _first_working(candidates: tuple, device: torch.device, warn: Callable[[str], None]) -> BackendChoice:
    """``auto``'s choice: the first candidate whose probe passes, one warning per skipped one."""
    skipped = []
    for name in candidates:
        reason = probe_backend(name, device)
        if reason is None:
            why = "auto: " + ("probe passed" if name != "torch" else
                              ("the reference backend" if not skipped else "no faster backend passed its probe"))
            return BackendChoice(name, str(device), why)
        skipped.append(name)
        warn(f"[rasterizer] warning: skipping backend {name} on {device}: {reason}. Fix: {FIXES[name]}")
    raise BackendUnavailableError(f"no rasterizer backend among {', '.join(candidates)} works on {device}")
