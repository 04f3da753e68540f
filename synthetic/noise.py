"""Deterministic procedural noise in PyTorch (value noise and fractal sums).

Value noise = trilinear interpolation of random values on an integer lattice. The lattice is a
periodic 32^3 table of random values (period 32 cells, far larger than any feature it draws),
sampled with one ``grid_sample`` call, which is much faster on CPU than hashing eight lattice
corners per point. Tables come from a seeded ``torch.Generator`` (bit-identical across runs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["value_noise", "fbm"]

_PERIOD = 32
_TABLES: dict[int, torch.Tensor] = {}


def _table(seed: int) -> torch.Tensor:
    """(1, 1, P+1, P+1, P+1) random lattice values in [0, 1), wrapped (last slice = first)."""
    if seed not in _TABLES:
        gen = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)
        t = torch.rand(_PERIOD, _PERIOD, _PERIOD, generator=gen)
        t = torch.cat([t, t[:1]], 0)
        t = torch.cat([t, t[:, :1]], 1)
        t = torch.cat([t, t[:, :, :1]], 2)
        _TABLES[seed] = t[None, None].contiguous()
    return _TABLES[seed]


def value_noise(p: torch.Tensor, frequency: float, seed: int = 0) -> torch.Tensor:
    """Smooth value noise.

    Args:
        p: (N, 3) positions (metres).
        frequency: lattice cells per metre (feature size ~ 1 / frequency).
        seed: selects an independent noise field.

    Returns:
        (N,) float32 values in [0, 1].
    """
    q = torch.remainder(p.to(torch.float64) * frequency, _PERIOD).to(torch.float32)
    # align_corners=True: -1 / +1 are the centres of lattice points 0 and P.
    grid = (q / _PERIOD * 2.0 - 1.0).view(1, 1, 1, -1, 3)
    out = F.grid_sample(_table(seed).to(p.device), grid, mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.view(-1)


def fbm(p: torch.Tensor, frequency: float, octaves: int = 3, seed: int = 0) -> torch.Tensor:
    """Fractal sum of value noise (each octave double frequency, half amplitude), in [0, 1].

    Args:
        p: (N, 3) positions; frequency: base frequency (1/m); octaves: number of octaves.

    Returns:
        (N,) float32.
    """
    total = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * value_noise(p, frequency * 2 ** k, seed + 101 * k)
        norm += amp
        amp *= 0.5
    return total / norm
