"""Differentiable 3D Gaussian rasterization behind one API (docs/DESIGN.md section 5).

``from gaussian_renderer import rasterize`` -- gsplat 1.x ``rasterization()`` argument names; a
pure-PyTorch tile rasterizer (any device, the reference), Triton compositing kernels (CUDA) and a
gsplat adapter (CUDA). See ``api.rasterize``; ``select_backend`` says which one runs and why.
"""
from .api import BACKENDS, RENDER_MODES, RasterizerArgumentError, rasterize
from .backends import BackendChoice, probe_backend, select_backend
from .gsplat_backend import BackendUnavailableError, gsplat_available
from .sh import eval_sh, num_sh_bases

__all__ = [
    "rasterize",
    "RasterizerArgumentError",
    "BackendUnavailableError",
    "gsplat_available",
    "select_backend",
    "probe_backend",
    "BackendChoice",
    "eval_sh",
    "num_sh_bases",
    "RENDER_MODES",
    "BACKENDS",
]
