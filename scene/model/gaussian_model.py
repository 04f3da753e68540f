"""Splats bound to mesh triangles: their per-splat tensors and PLY storage.

Each splat stores the geometry's core tensors, a local position ``xyz`` (N, 3), local rotation
``rotation`` (N, 4) wxyz, local log-scale ``log_scale`` (N, 3), canonical opacity logit
``opacity`` (N,), the index of its triangle ``binding`` (N,), and whatever per-splat tensors the
avatar's components declare (:class:`scene.model.components.SplatAttribute`: e.g. SH coefficients
``sh0`` (N, 1, 3) and ``shN`` (N, K-1, 3) of the per-splat SH colour; none for the triplane).

Parameters live in a ``ParameterDict``, one tensor per attribute; the optimisers are not the
model's: :mod:`scene.training.optimizer_ops` builds one Adam per attribute and rebuilds rows together with
their Adam moments for the densification strategy (:mod:`scene.training.densification`), as gsplat's
``strategy/ops.py`` does. Every attribute follows densification, whichever component declared it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from scene.model.binding import triangle_frames, world_to_local
from utils.errors import InputFileError
from utils.ply_io import read_vertex_table

if TYPE_CHECKING:
    from scene.model.components import SplatAttribute

#: The PLY columns of the core attributes and the binding (a component's attribute may not reuse them).
CORE_COLUMNS = ("x", "y", "z", *(f"rot_{i}" for i in range(4)), *(f"scale_{i}" for i in range(3)), "opacity",
                "binding")


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


def fold_into_triangle(u: torch.Tensor) -> torch.Tensor:
    """(N, 2) points uniform in the unit square -> (N, 2) barycentric weights (of the second and
    third corner) uniform over a triangle: the half beyond the diagonal is reflected into it."""
    return torch.where((u.sum(1) > 1)[:, None], 1 - u, u)


def points_in_triangles(corners: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(N, 3) points uniform over the triangles ``corners`` (N, 3, 3), from ``u`` (N, 2) uniform in
    the unit square (:func:`fold_into_triangle`)."""
    u = fold_into_triangle(u)
    return corners[:, 0] + u[:, :1] * (corners[:, 1] - corners[:, 0]) + u[:, 1:] * (corners[:, 2] - corners[:, 0])


class BoundGaussians(torch.nn.Module):
    """Splat parameters bound to triangles.

    Args:
        binding: (N,) int64 triangle index of every splat.
        attributes: the components' per-splat tensors (name -> spec), added after the core ones
            with their initial values.
    """

    def __init__(self, binding: torch.Tensor, attributes: dict[str, SplatAttribute] | None = None):
        super().__init__()
        n = binding.shape[0]
        self.register_buffer("binding", binding.long().clone())
        params = {
            "xyz": torch.zeros(n, 3),
            "rotation": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            "log_scale": torch.zeros(n, 3),
            "opacity": inverse_sigmoid(torch.full((n,), 0.1)),
        }
        self.params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in params.items()})
        self.attributes: dict[str, SplatAttribute] = {}
        for name, spec in (attributes or {}).items():
            self.add_attribute(name, spec)

    def add_attribute(self, name: str, spec: SplatAttribute) -> None:
        """Add a component's per-splat tensor, every splat at ``spec.init``."""
        if name in self.params:
            raise ValueError(f"per-splat attribute {name!r} is declared twice (a core attribute or another "
                             "component's)")
        self.attributes[name] = spec
        params = dict(self.params.items())
        params[name] = torch.nn.Parameter(spec.initial(len(self)).to(self.binding.device))
        # Built from a plain dict, a ParameterDict holds its keys sorted, as it always has: the
        # order of the per-attribute optimisers in a checkpoint's training state.
        self.params = torch.nn.ParameterDict(params)

    @classmethod
    def one_per_triangle(cls, num_faces: int) -> "BoundGaussians":
        """GA initialisation: a splat at every triangle centroid, unit local scale, no rotation."""
        return cls(torch.arange(num_faces))

    @classmethod
    def spread_over_triangles(cls, vertices: torch.Tensor, faces: torch.Tensor, per_triangle: int,
                              seed: int = 0) -> "BoundGaussians":
        """``per_triangle`` splats on every triangle at uniform random points of it.

        Starts an avatar at the splat count a real subject reaches after densification (about
        100k), for timing and for schedules without densification. Each splat's local scale is
        ``1 / sqrt(per_triangle)`` so that the splats of a triangle cover about what one did.

        Args:
            vertices: (V, 3) the mesh the frames are built on (the canonical mesh); faces: (F, 3).
        """
        if per_triangle <= 1:
            return cls.one_per_triangle(faces.shape[0])
        g = torch.Generator().manual_seed(seed)
        binding = torch.arange(faces.shape[0]).repeat_interleave(per_triangle)
        u = torch.rand(binding.shape[0], 2, generator=g, dtype=vertices.dtype)
        points = points_in_triangles(vertices[faces[binding]], u)
        frames = triangle_frames(vertices, faces)
        splats = cls(binding)
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

    # -- storage -------------------------------------------------------------------------------

    def save_ply(self, path: str | Path) -> None:
        """Write the splats as a binary PLY: local attributes, canonical opacity, the components'
        per-splat tensors (SH as 3DGS's ``f_dc_*`` / channel-major ``f_rest_*``) and the binding."""
        p = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        columns = [("x", p["xyz"][:, 0]), ("y", p["xyz"][:, 1]), ("z", p["xyz"][:, 2])]
        columns += [(f"rot_{i}", p["rotation"][:, i]) for i in range(4)]
        columns += [(f"scale_{i}", p["log_scale"][:, i]) for i in range(3)]
        columns += [("opacity", p["opacity"])]
        for name, spec in self.attributes.items():
            table = spec.to_columns(p[name])
            columns += [(column, table[:, i]) for i, column in enumerate(spec.column_names(name))]
        dtype = [(name, "f4") for name, _ in columns] + [("binding", "i4")]
        data = np.empty(len(self), dtype=dtype)
        for name, values in columns:
            data[name] = values
        data["binding"] = self.binding.cpu().numpy()
        PlyData([PlyElement.describe(data, "vertex")]).write(str(path))

    @classmethod
    def load_ply(cls, path: str | Path, attributes: dict[str, SplatAttribute] | None = None) -> "BoundGaussians":
        """Read a PLY written by :meth:`save_ply`, with the per-splat ``attributes`` the avatar's
        components declare (a missing column is one error naming the file and the component)."""
        required = ["x", "y", "z", "opacity", "binding"] + [f"rot_{i}" for i in range(4)] + [
            f"scale_{i}" for i in range(3)
        ]
        ply = read_vertex_table(path, required, "splat file", hint="was it written by train.py?")
        model = cls(torch.from_numpy(np.asarray(ply.vertex["binding"], np.int64)))
        with torch.no_grad():
            model.params["xyz"].data = ply.columns("x", "y", "z")
            model.params["rotation"].data = ply.columns(*[f"rot_{i}" for i in range(4)])
            model.params["log_scale"].data = ply.columns(*[f"scale_{i}" for i in range(3)])
            model.params["opacity"].data = ply.columns("opacity")[:, 0]
            for name, spec in (attributes or {}).items():
                names = spec.column_names(name)
                missing = [c for c in names if c not in ply.names]
                if missing:
                    raise InputFileError(
                        f"{path}: the splats lack the columns {missing[:3]}{' ...' if len(missing) > 3 else ''} of the "
                        f"per-splat attribute '{name}' {tuple(spec.shape)}; the model's config.yaml names components "
                        "other than the ones this checkpoint was trained with")
                model.add_attribute(name, spec)
                if names:  # an attribute of zero width (SH of degree 0 has no higher bands) has no columns
                    model.params[name].data = spec.from_columns(ply.columns(*names)).contiguous()
        return model
