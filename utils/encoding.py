"""Frequency (positional) encoding of low-dimensional inputs such as view directions.

gamma(x) = [x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(L-1) pi x), cos(2^(L-1) pi x)],
applied per component. Lets a tiny MLP represent view-dependent effects sharper than a
linear function of the direction would allow.
"""
from __future__ import annotations

import math

import torch

__all__ = ["positional_encoding", "encoding_dim"]


def encoding_dim(in_dim: int, n_freqs: int, include_input: bool = True) -> int:
    """Width of :func:`positional_encoding` output for ``in_dim`` inputs."""
    return in_dim * (int(include_input) + 2 * n_freqs)


def positional_encoding(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """Encode ``x (..., D)`` into ``(..., D * (include_input + 2 * n_freqs))``.

    Layout: ``[x, sin(f_0 x), cos(f_0 x), sin(f_1 x), cos(f_1 x), ...]`` with
    ``f_k = 2^k * pi``; each block is ``D`` wide. ``n_freqs = 0`` returns ``x`` (or an empty
    tensor when ``include_input`` is False).
    """
    parts = [x] if include_input else []
    if n_freqs > 0:
        freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
        xf = x[..., None, :] * freqs[:, None]  # (..., L, D)
        # Interleave sin/cos per frequency: (..., L, 2, D) -> (..., 2 L D).
        sc = torch.stack([torch.sin(xf), torch.cos(xf)], dim=-2)
        parts.append(sc.reshape(x.shape[:-1] + (2 * n_freqs * x.shape[-1],)))
    if not parts:
        return x.new_zeros(x.shape[:-1] + (0,))
    return torch.cat(parts, dim=-1)
