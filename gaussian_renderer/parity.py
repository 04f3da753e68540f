"""Parity of a backend with the torch reference on a small seeded scene: the parity probe's
measurement and verdict (``backends.probe_backend``) and ``bench/gpu_check.py``'s parity section.

The scene renders through the same validation and dispatch as ``rasterize(backend=name)``, with
rasterize()'s defaults for everything it does not set.

Tolerances (:class:`ParityTolerances`). A correct compiled kernel does not evaluate "the same
float expression" as the torch backend: on a GPU Triton's ``exp2`` is approximate (2 ulp),
multiply-adds are fused (the exponent ``(f + g) + h dy`` of a pixel-splat pair rounds once per
FMA instead of twice) and a ``tl.cumprod`` / sum associates in another order. Per pair the
exponent then differs by at most ~2^-24 x (|a dx^2| + |c dy^2| + |2 b dx dy|), i.e. the relative
alpha by ~1e-5 for splats with conic condition numbers up to ~16 (where alpha >= 1/255 the
quadratic form is at most ~10 in log2 units), and a pixel's value by ~2x that times the value
scale ``V`` (sum of weights <= 1, plus the same on the transmittance). Hence two bounds:

* rounding only: ``|diff| <= image_tight V`` with ``image_tight = 1e-4`` (~4x margin);
* a flipped decision: a value within ~1e-5 of a threshold can land on the other side. The 0.99
  clamp is continuous (no jump). The 1/255 skip adds or removes a splat of alpha ~1/255: ``|dC| <=
  V / 255``. The 1e-4 stop composites one splat more or less, with ``T_k (1 - alpha_k) ~ 1e-4``:
  its weight is ``alpha_k / (1 - alpha_k) 1e-4 <= 99e-4`` (alpha <= 0.99), so ``|dC| <= 0.0099 V``
  and alpha moves by as much. A skip flip can move the stop by one splat: together <= 0.0138 V,
  hence ``image_max = 0.02`` (x V, V = max(1, max |reference|)).

Flips need a pair within ~1e-5 of a threshold: ~5e-6 per pair for the skip (log alpha spreads
over ~5.5 nats), ~3e-5 per pixel for the stop; with ~100 pairs a pixel, ~5e-4 of the pixels. So
at most ``image_share = 1 %`` of the image values may exceed the tight bound: a wrong kernel (a
dropped term, a wrong skip threshold, a wrong weight) moves most covered pixels past it. Gradients
are judged by relative norm ``||g - g_ref|| / ||g_ref|| <= grad_rel = 1e-2``: rounding gives
~1e-4; a flipped pair or a changed suffix sum R at one pixel moves the gradient of the few splats
there by <~1 % of one splat's gradient (the pairs involved carry T <= 0.01 or alpha ~1/255), far
below 1 % of the norm over all splats. What no image tolerance can see: a missing stop (what it
drops weighs <= 1e-4 by the rule's design) or clamp (<= 0.01 at the few pixels where alpha would
pass 0.99); the interpreter tests (tests/test_triton_backend.py) hold those exactly.
``tests/test_backends.py`` checks both sides: a torch build whose skip and stop thresholds are
moved by 1e-3 (~100x what GPU rounding can do) passes, as does the derived worst case; wrong
thresholds, a small systematic error, one badly wrong value, a NaN and a scaled gradient fail.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .arguments import validate
from .dispatch import run_backend
from .registry import REFERENCE_BACKEND

# The inputs whose gradients are compared.
GRAD_INPUTS = ("means", "quats", "scales", "opacities", "colors")
# Nearly opaque splats in the probe's scene (see probe_scene).
PROBE_OPAQUE = 6


def probe_scene(device: torch.device, n: int = 96, width: int = 40, height: int = 32, seed: int = 0,
                opaque: int = 0) -> dict:
    """A small seeded scene: opaque-enough splats in front of one camera, leaves requiring grad.

    The first ``min(opaque, n // 4)`` splats are large and nearly opaque (opacity 0.9 to 0.999),
    in front of the others over the middle of the image, so that every rule is exercised: pixels
    reach towards the 1e-4 transmittance stop at varying list positions, the 0.99 clamp applies
    near their centres, and the 1/255 skip at every splat's rim (the probe: ``PROBE_OPAQUE``).

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
    k = min(opaque, n // 4)
    if k:
        means[:k, :2] = (torch.rand(k, 2, generator=g) - 0.5) * 0.2
        means[:k, 2] = 0.8 + 0.1 * torch.rand(k, generator=g)
        scales[:k] = 0.04 + 0.06 * torch.rand(k, 3, generator=g)
        opacities[:k] = 0.9 + 0.099 * torch.rand(k, generator=g)
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


@dataclass(frozen=True)
class ParityTolerances:
    """How far a correct backend may be from the torch reference (derived in the module docstring).

    image_max: every value, x V; image_tight, image_share: at most this share of the values may
    differ by more than image_tight x V (V = max(1, max |reference|); alpha: V = 1); grad_rel:
    relative norm of every input's gradient error."""

    image_max: float = 0.02
    image_tight: float = 1e-4
    image_share: float = 0.01
    grad_rel: float = 1e-2


TOLERANCES = ParityTolerances()


def image_agreement(got: torch.Tensor, ref: torch.Tensor, tol: ParityTolerances = TOLERANCES) -> dict:
    """How ``got`` differs from ``ref`` (same shape, any layout): {"max_abs", "scale" (V),
    "share_above_tight" (share of the values with |diff| > tol.image_tight x V)}. NaN counts as
    an infinite difference."""
    diff = (got.detach().double().cpu() - ref.detach().double().cpu()).abs().nan_to_num(nan=float("inf"))
    if diff.numel() == 0:
        return {"max_abs": 0.0, "scale": 1.0, "share_above_tight": 0.0}
    scale = max(1.0, float(ref.detach().abs().max()))
    return {"max_abs": float(diff.max()), "scale": scale,
            "share_above_tight": float((diff > tol.image_tight * scale).double().mean())}


def image_failure(agreement: dict, what: str = "image", tol: ParityTolerances = TOLERANCES) -> str | None:
    """None when an :func:`image_agreement` is within ``tol``, else why not (one line)."""
    bound = tol.image_max * agreement["scale"]
    if not agreement["max_abs"] <= bound:
        return (f"its {what} differs from the torch backend by {agreement['max_abs']:.3g} (> {bound:.3g}, "
                f"{tol.image_max} x the value scale {agreement['scale']:.3g})")
    if not agreement["share_above_tight"] <= tol.image_share:
        return (f"its {what} differs from the torch backend by more than {tol.image_tight * agreement['scale']:.3g} "
                f"at {agreement['share_above_tight']:.2%} of the values (> {tol.image_share:.0%})")
    return None


def grad_rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """||got - ref|| / max(||ref||, 1e-12) (inf when ``got`` is not finite)."""
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - ref).norm() / ref.norm().clamp_min(1e-12))


def compare_renders(got: dict, ref: dict, tol: ParityTolerances = TOLERANCES) -> dict:
    """Parity of two :func:`render_with_grads` results: {"image_max_abs", "image_scale",
    "image_share_above_tight", "alpha_max_abs", "alpha_share_above_tight", "grad_rel": {input:
    relative norm error}} (a gradient ``got`` lacks: inf)."""
    image = image_agreement(got["image"], ref["image"], tol)
    alpha = image_agreement(got["alpha"], ref["alpha"], tol)
    rel = {key[5:]: (grad_rel_error(got[key], ref[key]) if key in got else float("inf"))
           for key in ref if key.startswith("grad_")}
    return {"image_max_abs": image["max_abs"], "image_scale": image["scale"],
            "image_share_above_tight": image["share_above_tight"], "alpha_max_abs": alpha["max_abs"],
            "alpha_share_above_tight": alpha["share_above_tight"], "grad_rel": rel}


def parity_failure(parity: dict, tol: ParityTolerances = TOLERANCES) -> str | None:
    """The probe's verdict on a :func:`compare_renders` / :func:`compare_with_reference` result:
    None when within ``tol``, else the first reason (one line)."""
    image = {"max_abs": parity["image_max_abs"], "scale": parity["image_scale"],
             "share_above_tight": parity["image_share_above_tight"]}
    alpha = {"max_abs": parity["alpha_max_abs"], "scale": 1.0, "share_above_tight": parity["alpha_share_above_tight"]}
    reason = image_failure(image, "image", tol) or image_failure(alpha, "alpha", tol)
    if reason is None and parity["grad_rel"]:
        name, worst = max(parity["grad_rel"].items(), key=lambda kv: kv[1])
        if not worst <= tol.grad_rel:
            reason = f"its gradient of {name} differs from the torch backend by {worst:.3g} relative (> {tol.grad_rel})"
    return reason


def compare_with_reference(backend: str, device: torch.device, seed: int = 0) -> dict:
    """Parity of ``backend`` on ``device`` with the torch backend on the CPU, on the probe scene
    (``PROBE_OPAQUE`` nearly opaque splats): :func:`compare_renders` of the two (judge it with
    :func:`parity_failure`). Raises whatever the backend raises when it cannot render.
    """
    ref = render_with_grads(REFERENCE_BACKEND, probe_scene(torch.device("cpu"), seed=seed, opaque=PROBE_OPAQUE))
    got = render_with_grads(backend, probe_scene(device, seed=seed, opaque=PROBE_OPAQUE))
    return compare_renders(got, ref)
