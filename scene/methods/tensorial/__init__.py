"""The CVPR 2025 compact tensorial avatar's components: triplane colour, feature-line opacity
blendshapes with their jaw bases, and the adaptive truncated opacity penalty."""
