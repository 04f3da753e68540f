"""Per-timestep FLAME meshes, computed once per run instead of once per iteration.

Training visits each timestep many times (16 cameras, many epochs); FLAME's skinning is the same
every time, so the posed vertices (T, V, 3) and, for the opacity penalty, each triangle's
displacement from the canonical mesh (T, F) are precomputed in batches. When per-timestep FLAME
parameters are being fine-tuned the cache cannot be used and meshes are computed on the fly.

Both arrays can be kept across runs in a :class:`scene.data.subject_cache.SubjectCache`
(``flame_meshes/``, keyed by a digest of everything they are computed from: the FLAME model, the
identity, every timestep's parameters, the batch, the device, torch's version and thread count),
so that a resume or another run of a subject reads them instead of evaluating FLAME for every
timestep; the values are those the computation gives, bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from flame_model import FLAME, MOTION_KEYS
from scene.data.subject_cache import content_digest
from scene.model.binding import triangle_displacements

#: Version of what :meth:`FlameSequence.precompute` computes from given inputs: bump it when a
#: change would give other meshes (the cache keys include it).
MESH_CODE_VERSION = 1
MESH_CACHE_KIND = "flame_meshes"


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

    def cache_key(self, batch: int) -> str:
        """Digest of everything :meth:`precompute` (with ``batch``) computes its meshes from,
        including where and how (device, torch version, threads: float rounding may differ)."""
        device = self.shape.device
        flame = self.flame
        return content_digest(
            ["flame meshes", MESH_CODE_VERSION, torch.__version__, torch.get_num_threads(), str(device),
             torch.cuda.get_device_name(device) if device.type == "cuda" else "", int(batch),
             flame.parents, flame.n_shape, flame.n_expr, self.shape,
             "none" if self.static_offset is None else self.static_offset]
            + [x for k in self.keys for x in (k, self.values[k])]
            + [x for name, buffer in sorted(flame.named_buffers()) for x in (name, buffer)])

    @torch.no_grad()
    def precompute(self, batch: int = 64, keep_expression_offsets: bool = False, progress: bool = False,
                   cache=None) -> str | None:
        """Fill the caches of posed vertices (T, V, 3) and per-triangle displacements (T, F).

        Args:
            batch: timesteps per FLAME evaluation.
            keep_expression_offsets: also keep each timestep's expression mesh minus the canonical
                one (T, V, 3), which the displacements are computed from, for
                :meth:`expression_offsets` (the expression clustering) until
                :meth:`release_expression_offsets`. With meshes from ``cache`` none is kept
                (:meth:`expression_offsets` then evaluates FLAME).
            progress: a tqdm bar over the batches.
            cache: a :class:`scene.data.subject_cache.SubjectCache`: the meshes are read from it
                when it holds those of the same inputs (:meth:`cache_key`), else computed and
                stored there. None: always computed.
        Returns:
            Where the meshes came from: ``"read"`` (the cache) or ``"computed"``. None without doing
            anything when the parameters are being fine-tuned: the caches would never be read
            (:meth:`vertices` and :meth:`triangle_displacement` compute on the fly).
        """
        if self.trainable:
            return None
        key = self.cache_key(batch) if cache is not None else None
        if cache is not None:
            stored = cache.read_arrays(MESH_CACHE_KIND, key)
            if stored is not None and self._take_stored(stored):
                self._expr_offsets = None
                return "read"
        self._compute(batch, keep_expression_offsets, progress)
        if cache is not None:
            cache.write_arrays(MESH_CACHE_KIND, key, {"vertices": self._verts.cpu().numpy(),
                                                      "triangle_displacements": self._expr_disp.cpu().numpy()})
        return "computed"

    def _take_stored(self, stored: dict) -> bool:
        """Use stored meshes when their shapes and dtype are the ones computing them would give."""
        verts, disp = stored.get("vertices"), stored.get("triangle_displacements")
        T, F = self.num_timesteps, self.flame.faces.shape[0]
        V = self.flame.num_vertices
        dtype = torch.empty(0, dtype=self.flame.v_template.dtype).numpy().dtype
        if (verts is None or disp is None or verts.shape != (T, V, 3) or disp.shape != (T, F)
                or verts.dtype != dtype or disp.dtype != dtype):
            return False
        device = self.shape.device
        self._verts = torch.from_numpy(verts).to(device)
        self._expr_disp = torch.from_numpy(disp).to(device)
        return True

    def _compute(self, batch: int, keep_expression_offsets: bool, progress: bool) -> None:
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
