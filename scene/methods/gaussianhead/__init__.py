"""GaussianHead (Wang et al., TVCG 2025) as a method of the framework ("GaussianHead-style"):
canonical Gaussians moved by an expression-conditioned deformation MLP and FLAME's rigid head pose,
their opacity and SH colour from a tilted triplane (K learnable rotations per Gaussian, each
sampling its own channel slice of three planes) and two small heads (docs/METHODS_GAUSSIANHEAD.md).

Importing this package registers its components: geometry, colour and opacity ``gaussianhead``;
:mod:`scene.model.avatar` imports it, so they are built in.
"""
from scene.methods.gaussianhead import color, geometry, opacity  # noqa: F401
