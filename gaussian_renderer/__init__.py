"""Differentiable 3D Gaussian rasterization behind one API (DESIGN.md section 6).

``from gaussian_renderer import rasterize`` -- gsplat 1.x ``rasterization()`` argument names; a
pure-PyTorch tile rasterizer (any device) and a gsplat adapter (CUDA). See ``api.rasterize``.
"""
from .api import BACKENDS, RENDER_MODES, RasterizerArgumentError, rasterize
from .gsplat_backend import BackendUnavailableError, gsplat_available
from .sh import eval_sh, num_sh_bases

__all__ = [
    "rasterize",
    "RasterizerArgumentError",
    "BackendUnavailableError",
    "gsplat_available",
    "eval_sh",
    "num_sh_bases",
    "RENDER_MODES",
    "BACKENDS",
]
