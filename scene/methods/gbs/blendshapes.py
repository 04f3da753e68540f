"""Gaussian blendshapes: a frame's attribute = neutral + sum_k psi_k delta_k (GBS-style).

The deltas are per-splat tensors of shape (N, K, ...) (one row of K blendshapes per splat, so that
densification carries them with their splat); psi is the frame's FLAME expression, its first K
components.
"""
from __future__ import annotations

import torch

__all__ = ["leading_coefficients", "blend"]


def leading_coefficients(expr: torch.Tensor, k: int) -> torch.Tensor:
    """(k,) the first ``k`` coefficients of ``expr`` (E,), zero-padded when E < k."""
    return torch.nn.functional.pad(expr[:k], (0, max(k - expr.shape[0], 0)))


def blend(neutral: torch.Tensor, deltas: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """neutral + sum_k psi_k deltas[:, k].

    Args:
        neutral: (N, ...) the neutral attribute; deltas: (N, K, ...) its blendshape deltas;
        psi: (K,) the frame's expression coefficients.
    Returns:
        (N, ...) the frame's attribute.
    """
    return neutral + torch.einsum("nk...,k->n...", deltas, psi)
