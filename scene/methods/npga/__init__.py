"""NPGA (Neural Parametric Gaussian Avatars, Giebenhain et al., SIGGRAPH Asia 2024) as a method of
the framework ("NPGA-style"): canonical Gaussians with per-primitive latent features, a prior
deformation MLP F and a detail MLP G driven by the frame's FLAME expression and jaw pose (instead of
NPHM codes), a rigid head transform, Laplacian smoothness on a kNN graph of the canonical points, and
a screen-space refinement CNN (the ``gha_sr`` stage at scale 1); docs/METHODS_NPGA.md.

Importing this package registers its components: geometry ``npga``, colour ``npga`` and opacity
``npga``; :mod:`scene.model.avatar` imports it, so they are built in.
"""
from scene.methods.npga import color, geometry, opacity  # noqa: F401
