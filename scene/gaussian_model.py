"""Splats bound to mesh triangles: their local parameters and PLY storage.

Each splat stores a local position ``xyz`` (N, 3), local rotation ``rotation`` (N, 4) wxyz,
local log-scale ``log_scale`` (N, 3), canonical opacity logit ``opacity`` (N,) and the index of
its triangle ``binding`` (N,). World attributes come from the triangle frames
(:mod:`scene.binding`). With per-splat colour (GaussianAvatars) it also stores SH coefficients
``sh0`` (N, 1, 3) and ``shN`` (N, K-1, 3); with the triplane decoder it stores no colour at all.

Parameters live in a ``ParameterDict``, one tensor per attribute; the optimisers are not the
model's: :mod:`scene.optimizer_ops` builds one Adam per attribute and rebuilds rows together with
their Adam moments for the densification strategy (:mod:`scene.densification`), as gsplat's
``strategy/ops.py`` does.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from scene.binding import triangle_frames, world_to_local
from utils.ply_io import read_vertex_table

def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


class BoundGaussians(torch.nn.Module):
    """Splat parameters bound to triangles.

    Args:
        binding: (N,) int64 triangle index of every splat.
        sh_degree: per-splat SH degree, or None when colour comes from elsewhere (triplane).
    """

    def __init__(self, binding: torch.Tensor, sh_degree: int | None = None):
        super().__init__()
        n = binding.shape[0]
        self.sh_degree = sh_degree
        self.register_buffer("binding", binding.long().clone())
        params = {
            "xyz": torch.zeros(n, 3),
            "rotation": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            "log_scale": torch.zeros(n, 3),
            "opacity": inverse_sigmoid(torch.full((n,), 0.1)),
        }
        if sh_degree is not None:
            params["sh0"] = torch.zeros(n, 1, 3)
            params["shN"] = torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3)
        self.params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in params.items()})

    @classmethod
    def one_per_triangle(cls, num_faces: int, sh_degree: int | None = None) -> "BoundGaussians":
        """GA initialisation: a splat at every triangle centroid, unit local scale, no rotation."""
        return cls(torch.arange(num_faces), sh_degree)

    @classmethod
    def spread_over_triangles(cls, vertices: torch.Tensor, faces: torch.Tensor, per_triangle: int,
                              sh_degree: int | None = None, seed: int = 0) -> "BoundGaussians":
        """``per_triangle`` splats on every triangle at uniform random points of it.

        Starts an avatar at the splat count a real subject reaches after densification (about
        100k), for timing and for schedules without densification. Each splat's local scale is
        ``1 / sqrt(per_triangle)`` so that the splats of a triangle cover about what one did.

        Args:
            vertices: (V, 3) the mesh the frames are built on (the canonical mesh); faces: (F, 3).
        """
        if per_triangle <= 1:
            return cls.one_per_triangle(faces.shape[0], sh_degree)
        g = torch.Generator().manual_seed(seed)
        binding = torch.arange(faces.shape[0]).repeat_interleave(per_triangle)
        u = torch.rand(binding.shape[0], 2, generator=g, dtype=vertices.dtype)
        flip = u.sum(1) > 1  # reflect into the triangle: uniform barycentric coordinates
        u = torch.where(flip[:, None], 1 - u, u)
        corners = vertices[faces[binding]]  # (N, 3, 3)
        points = corners[:, 0] + u[:, :1] * (corners[:, 1] - corners[:, 0]) + u[:, 1:] * (corners[:, 2] - corners[:, 0])
        frames = triangle_frames(vertices, faces)
        splats = cls(binding, sh_degree)
        with torch.no_grad():
            splats.params["xyz"].copy_(world_to_local(*frames, binding, points))
            splats.params["log_scale"].fill_(-0.5 * math.log(per_triangle))
        return splats

    def __len__(self) -> int:
        return self.binding.shape[0]

    @property
    def opacity(self) -> torch.Tensor:
        """(N,) canonical opacity in [0, 1]."""
        return torch.sigmoid(self.params["opacity"])

    @property
    def sh(self) -> torch.Tensor:
        """(N, K, 3) SH coefficients (only with per-splat colour)."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    # -- storage -------------------------------------------------------------------------------

    def save_ply(self, path: str | Path) -> None:
        """Write the splats as a binary PLY: local attributes, canonical opacity and binding."""
        p = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        n = len(self)
        columns = [("x", p["xyz"][:, 0]), ("y", p["xyz"][:, 1]), ("z", p["xyz"][:, 2])]
        columns += [(f"rot_{i}", p["rotation"][:, i]) for i in range(4)]
        columns += [(f"scale_{i}", p["log_scale"][:, i]) for i in range(3)]
        columns += [("opacity", p["opacity"])]
        if self.sh_degree is not None:
            columns += [(f"f_dc_{i}", p["sh0"][:, 0, i]) for i in range(3)]
            # Channel-major like the 3DGS PLY convention: all R coefficients, then G, then B.
            rest = p["shN"].transpose(0, 2, 1).reshape(n, -1)
            columns += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
        dtype = [(name, "f4") for name, _ in columns] + [("binding", "i4")]
        data = np.empty(n, dtype=dtype)
        for name, values in columns:
            data[name] = values
        data["binding"] = self.binding.cpu().numpy()
        PlyData([PlyElement.describe(data, "vertex")]).write(str(path))

    @classmethod
    def load_ply(cls, path: str | Path) -> "BoundGaussians":
        """Read a PLY written by :meth:`save_ply`."""
        required = ["x", "y", "z", "opacity", "binding"] + [f"rot_{i}" for i in range(4)] + [
            f"scale_{i}" for i in range(3)
        ]
        ply = read_vertex_table(path, required, "splat file", hint="was it written by train.py?")
        sh_degree = None
        if "f_dc_0" in ply.names:
            sh_degree = ply.sh_degree()
        model = cls(torch.from_numpy(np.asarray(ply.vertex["binding"], np.int64)), sh_degree)
        with torch.no_grad():
            model.params["xyz"].data = ply.columns("x", "y", "z")
            model.params["rotation"].data = ply.columns(*[f"rot_{i}" for i in range(4)])
            model.params["log_scale"].data = ply.columns(*[f"scale_{i}" for i in range(3)])
            model.params["opacity"].data = ply.columns("opacity")[:, 0]
            if sh_degree is not None:
                model.params["sh0"].data = ply.columns("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :]
                if ply.n_rest:
                    model.params["shN"].data = ply.sh_rest()
        return model
