"""Gaussian Head Avatar (Xu et al., CVPR 2024) as a method of the framework ("GHA-style"): canonical
Gaussians with per-splat features, expression and pose MLPs for their displacement, attribute shifts
and 32-channel colour, blended by the distance to canonical landmarks, a rigid head transform, and a
super-resolution CNN after rasterization (docs/METHODS_GHA.md).

Importing this package registers its components: geometry ``gha``, colour ``gha``, opacity ``gha``
and screen ``gha_sr``; :mod:`scene.model.avatar` imports it, so they are built in.
"""
from scene.methods.gha import color, geometry, opacity, super_resolution  # noqa: F401
