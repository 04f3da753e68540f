"""Gaussian Blendshapes (GBS-style; Ma et al., SIGGRAPH 2024) as components of this framework
(docs/METHODS_GBS.md): neutral Gaussians plus one Gaussian blendshape per FLAME expression
component and a jaw-driven mouth-interior set, posed by FLAME's linear blend skinning.

Importing the package registers its components: the ``gaussian_blendshapes`` geometry, the
``blendshape_sh`` colour and the ``blendshape_opacity`` opacity; :mod:`scene.model.avatar` imports
it, so they are built in.
"""
from scene.methods.gbs import color as _color  # noqa: F401
from scene.methods.gbs import geometry as _geometry  # noqa: F401
from scene.methods.gbs import opacity as _opacity  # noqa: F401
