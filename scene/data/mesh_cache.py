"""Per-timestep FLAME meshes, computed once per run instead of once per iteration.

Training visits each timestep many times (16 cameras, many epochs); FLAME's skinning is the same
every time, so the posed vertices (T, V, 3) and, for the opacity penalty, each triangle's
displacement from the canonical mesh (T, F) are precomputed in batches. When per-timestep FLAME
parameters are being fine-tuned the cache cannot be used and meshes are computed on the fly.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from flame_model import FLAME, MOTION_KEYS
from scene.model.binding import triangle_displacements


class FlameSequence(torch.nn.Module):
    """The per-timestep FLAME parameters of a subject, optionally trainable.

    Args:
        flame: the FLAME layer.
        params: dict of (T, ...) tensors: expr, rotation, neck_pose, jaw_pose, eyes_pose,
            translation (rows in the subject's ``timestep_row`` order).
        shape: (n_shape,) identity coefficients; static_offset: (V, 3) or None.
        trainable: make expr/pose/translation ``nn.Parameter`` s (GA's FLAME fine-tuning).
    """

    def __init__(self, flame: FLAME, params: dict, shape: torch.Tensor, static_offset: torch.Tensor | None, trainable: bool = False):
        super().__init__()
        self.flame = flame
        self.trainable = trainable
        self.register_buffer("shape", shape.float().clone())
        self.register_buffer("static_offset", None if static_offset is None else static_offset.float().clone())
        keys = MOTION_KEYS
        missing = [k for k in keys if k not in params]
        if missing:
            raise ValueError(f"FLAME parameters lack {missing}")
        self.keys = keys
        self.values = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(params[k].float().clone(), requires_grad=trainable) for k in keys}
        )
        self._verts: torch.Tensor | None = None
        self._expr_disp: torch.Tensor | None = None
        self._expr_offsets: torch.Tensor | None = None

    @property
    def num_timesteps(self) -> int:
        return self.values["expr"].shape[0]

    def row_params(self, rows: torch.Tensor) -> dict:
        """Parameters of timestep rows (B,) as a dict of (B, ...) tensors."""
        return {k: self.values[k][rows] for k in self.keys}

    def _forward(self, p: dict) -> torch.Tensor:
        return self.flame.motion_vertices(self.shape, p, self.static_offset)

    def vertices(self, rows: torch.Tensor) -> torch.Tensor:
        """Posed vertices (B, V, 3) of timestep rows (B,), from the cache unless fine-tuning."""
        if not self.trainable and self._verts is not None:
            return self._verts[rows]
        return self._forward(self.row_params(rows))

    def expression_vertices(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) meshes with the rows' expression, jaw and eyes but no global pose or neck."""
        p = dict(self.row_params(rows))
        for key in ("rotation", "neck_pose", "translation"):
            p[key] = torch.zeros_like(p[key])
        return self._forward(p)

    def canonical_vertices(self) -> torch.Tensor:
        """(V, 3) neutral mesh: shape + static offset, zero expression and pose."""
        offset = None if self.static_offset is None else self.static_offset[None]
        return self.flame.canonical_vertices(self.shape, static_offset=offset)[0]

    @torch.no_grad()
    def precompute(self, batch: int = 64, keep_expression_offsets: bool = False, progress: bool = False) -> bool:
        """Fill the caches of posed vertices (T, V, 3) and per-triangle displacements (T, F).

        Args:
            batch: timesteps per FLAME evaluation.
            keep_expression_offsets: also keep each timestep's expression mesh minus the canonical
                one (T, V, 3), which the displacements are computed from, for
                :meth:`expression_offsets` (the expression clustering) until
                :meth:`release_expression_offsets`.
            progress: a tqdm bar over the batches.
        Returns:
            False without doing anything when the parameters are being fine-tuned: the caches would
            never be read (:meth:`vertices` and :meth:`triangle_displacement` compute on the fly).
        """
        if self.trainable:
            return False
        faces = self.flame.faces
        canonical = self.canonical_vertices()
        verts, disp, offsets = [], [], []
        starts = range(0, self.num_timesteps, batch)
        for start in tqdm(starts, desc="FLAME meshes", unit="batch", disable=not progress, leave=False):
            rows = torch.arange(start, min(start + batch, self.num_timesteps), device=canonical.device)
            verts.append(self._forward(self.row_params(rows)))
            expression = self.expression_vertices(rows)
            disp.append(triangle_displacements(expression, canonical, faces))
            if keep_expression_offsets:
                offsets.append(expression - canonical)
        self._verts = torch.cat(verts)
        self._expr_disp = torch.cat(disp)
        self._expr_offsets = torch.cat(offsets) if keep_expression_offsets else None
        return True

    @torch.no_grad()
    def expression_offsets(self, rows: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """(B, V, 3) expression meshes (:meth:`expression_vertices`) minus the canonical mesh of
        rows (B,): from :meth:`precompute`'s kept copy when there is one, else computed in batches."""
        if self._expr_offsets is not None:
            return self._expr_offsets[rows]
        parts = [self.expression_vertices(rows[i:i + batch]) for i in range(0, len(rows), batch)]
        return torch.cat(parts) - self.canonical_vertices()

    def release_expression_offsets(self) -> None:
        """Drop the copy :meth:`precompute` kept (``keep_expression_offsets``)."""
        self._expr_offsets = None

    def triangle_displacement(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, F) displacement of each triangle between the expression mesh and the canonical one."""
        if self._expr_disp is not None and not self.trainable:
            return self._expr_disp[rows]
        with torch.no_grad():
            return triangle_displacements(self.expression_vertices(rows), self.canonical_vertices(), self.flame.faces)
