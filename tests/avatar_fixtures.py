"""Avatars built straight from a mesh, without a subject: for tests of the model and the renderer."""
from __future__ import annotations

from pathlib import Path

import torch

from scene.config import resolve_config
from scene.model.avatar import GaussianAvatar
from scene.model.components import BuildContext, padded_box

REPO = Path(__file__).resolve().parents[1]


def sphere_strip(n_vertices: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, 3) points on the unit sphere and (V - 10, 3) triangles of consecutive points."""
    g = torch.Generator().manual_seed(seed)
    verts = torch.nn.functional.normalize(torch.randn(n_vertices, 3, generator=g), dim=1)
    faces = torch.stack([torch.arange(0, n_vertices - 10), torch.arange(1, n_vertices - 9),
                         torch.arange(2, n_vertices - 8)], 1)
    return verts, faces


def mesh_avatar(faces: torch.Tensor, verts: torch.Tensor, model: dict | None = None, configs=("tensorial.yaml",),
                face_mask: torch.Tensor | None = None, jaw_poses: torch.Tensor | None = None) -> GaussianAvatar:
    """An avatar of the shipped ``configs`` plus ``model`` overrides on the mesh (faces, verts),
    with ``face_mask`` (V,) as the FLAME "face" region and ``jaw_poses`` (T, 3) as its training
    jaw rotations (default: closed and slightly open)."""
    cfg = resolve_config([REPO / "configs" / c for c in configs], [{"model": model or {}}]).model
    masks = {} if face_mask is None else {"face": face_mask}
    jaw = torch.tensor([[0.0, 0, 0], [0.2, 0, 0]]) if jaw_poses is None else jaw_poses
    ctx = BuildContext(faces=faces, canonical_vertices=verts, head_box=padded_box(verts, cfg.box_padding),
                       box_padding=cfg.box_padding, vertex_masks=masks, face_masks={}, n_expr=cfg.n_expr,
                       training_motion={"jaw_pose": jaw})
    return GaussianAvatar(cfg, ctx)
