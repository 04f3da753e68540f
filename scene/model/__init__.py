"""The model interface every method implements, the component registries, and the shared components:
FLAME-bound splats, per-splat SH colour, static opacity; the composed avatar and its checkpoints."""
