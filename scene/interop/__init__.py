"""Interop: standard 3DGS export and GaussianAvatars import."""
