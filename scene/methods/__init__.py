"""Methods beyond the shared components, one sub-package each with its files together."""
