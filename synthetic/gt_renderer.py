"""Ground-truth images of a posed synthetic head: mesh rasterizer + procedural appearance.

For one timestep, all cameras are rasterised as one batch at ``supersample`` times the output
resolution; albedo (from the canonical position interpolated per sample) times head-frame Lambert
shading is composited over white and box-filtered down, which anti-aliases edges and makes the
foreground mask a soft alpha matte, like the mattes of real captures.
"""
from __future__ import annotations

import torch

from .appearance import Appearance, ExpressionState, shade
from .head_surface import (MATERIAL_EYE, MATERIAL_MOUTH, MATERIAL_SKIN, MATERIAL_TEETH, PART_POCKET, PART_SKIN,
                           HeadTemplate)
from .mesh_rasterizer import interpolate, rasterize
from .threads import single_threaded
from .torso import MATERIAL_CLOTH, Torso

__all__ = ["GroundTruthRenderer", "face_materials"]


def face_materials(template: HeadTemplate, num_faces: int) -> torch.Tensor:
    """(F,) material per face of the FLAME mesh: the template's, then teeth for the appended faces."""
    base = torch.as_tensor(template.face_material, dtype=torch.int64)
    teeth = torch.full((num_faces - base.shape[0],), MATERIAL_TEETH, dtype=torch.int64)
    return torch.cat([base, teeth])


class GroundTruthRenderer:
    """Renders images and alpha mattes of one identity.

    Args:
        template: the template head (part labels).
        faces: (F, 3) int64 faces of the FLAME mesh with teeth.
        canonical: (V, 3) template vertices with teeth (texture coordinates of the albedo).
        appearance: the identity's :class:`Appearance`.
        supersample: samples per pixel along each axis (2 -> 4 samples per pixel).
        torso: a static clothed torso rendered with the head (:mod:`synthetic.torso`), or None.
    """

    def __init__(self, template: HeadTemplate, faces: torch.Tensor, canonical: torch.Tensor, appearance: Appearance,
                 supersample: int = 2, torso: Torso | None = None):
        self.faces = faces.to(torch.int64)
        self.canonical = canonical.to(torch.float32)
        self.appearance = appearance
        self.supersample = int(supersample)
        self.material = face_materials(template, self.faces.shape[0])
        # Smooth normals are averaged per material group only, so the slit's lip vertices do not
        # mix in the mouth pocket's normals (which would put a bright seam on closed lips).
        num_v = canonical.shape[0]
        vgroup = torch.full((num_v,), MATERIAL_TEETH, dtype=torch.int64)
        part = torch.as_tensor(template.part)
        vgroup[:part.shape[0]] = torch.where(part == PART_SKIN, MATERIAL_SKIN,
                                             torch.where(part == PART_POCKET, MATERIAL_MOUTH, MATERIAL_EYE))
        self.torso_vertices = None
        if torso is not None:  # one mesh: the head's vertices, then the torso's (its own texture coordinates)
            self.torso_vertices = torch.as_tensor(torso.vertices, dtype=torch.float32)
            torso_faces = torch.as_tensor(torso.faces, dtype=torch.int64) + num_v
            self.faces = torch.cat([self.faces, torso_faces])
            self.canonical = torch.cat([self.canonical, self.torso_vertices])
            self.material = torch.cat([self.material, torch.full((torso_faces.shape[0],), MATERIAL_CLOTH)])
            vgroup = torch.cat([vgroup, torch.full((self.torso_vertices.shape[0],), MATERIAL_CLOTH)])
        self.two_sided = self.material == MATERIAL_TEETH
        self._normal_weight = (vgroup[self.faces] == self.material[:, None]).to(torch.float32)  # (F, 3)

    def vertex_normals(self, verts: torch.Tensor) -> torch.Tensor:
        """(V, 3) unit normals of posed vertices (V, 3), area-weighted within material groups."""
        tri = verts[self.faces]
        n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        contrib = n[:, None, :] * self._normal_weight[..., None]
        vn = torch.zeros_like(verts).index_add_(0, self.faces.reshape(-1), contrib.reshape(-1, 3))
        return vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    @single_threaded
    def render(self, verts: torch.Tensor, state: ExpressionState, head_rotation: torch.Tensor, viewmats: torch.Tensor,
               K: torch.Tensor, height: int, width: int, wrinkles: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Render one posed mesh from C cameras.

        Args:
            verts: (V, 3) posed world-space vertices (FLAME output with teeth); the torso, if any,
                is added here (it does not move).
            state: expression scalars of the frame (wrinkles).
            head_rotation: (3, 3) world rotation of the head (the light follows it).
            viewmats: (C, 4, 4) OpenCV world-to-camera matrices.
            K: (C, 3, 3) intrinsics at the output resolution.
            height, width: output size.
            wrinkles: include the expression-dependent wrinkles.

        Returns:
            images: (C, H, W, 3) float32 in [0, 1], composited over white.
            alpha: (C, H, W) float32 coverage in [0, 1].
        """
        s = self.supersample
        verts = verts.to(torch.float32)
        if self.torso_vertices is not None:
            verts = torch.cat([verts, self.torso_vertices])
        viewmats = viewmats.to(torch.float32)
        verts_cam = torch.einsum("cij,vj->cvi", viewmats[:, :3, :3], verts) + viewmats[:, None, :3, 3]
        K_ss = K.to(torch.float32).clone()
        K_ss[:, :2] *= s
        frags = rasterize(verts_cam, self.faces, K_ss, height * s, width * s, two_sided=self.two_sided)
        cam = frags.coordinates()[0]
        face = frags.face
        material = self.material[face]
        # One interpolation pass for canonical positions (texture coordinates) and normals.
        attrs = torch.cat([self.canonical, self.vertex_normals(verts)], dim=-1)
        attrs = interpolate(frags, self.faces, attrs)
        canon, normals = attrs[:, :3], attrs[:, 3:]
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # Open sheets (teeth) seen from behind: light the side facing the camera.
        teeth = torch.nonzero(material == MATERIAL_TEETH, as_tuple=True)[0]
        if teeth.numel():
            c_t = cam[teeth]
            to_surface = verts_cam[c_t, self.faces[face[teeth], 0]]
            n_cam = torch.einsum("nij,nj->ni", viewmats[c_t, :3, :3], normals[teeth])
            flip = (n_cam * to_surface).sum(-1) > 0
            normals[teeth] = torch.where(flip[:, None], -normals[teeth], normals[teeth])
        colour = self.appearance.albedo(canon, material, state, wrinkles=wrinkles)
        shading = shade(normals, head_rotation)
        cloth = torch.nonzero(material == MATERIAL_CLOTH, as_tuple=True)[0]
        if cloth.numel():  # the light is the head's when it faces the cameras; the body does not turn
            shading[cloth] = shade(normals[cloth], torch.eye(3))
        colour = (colour * shading[:, None]).clamp(0.0, 1.0)

        num_cams = viewmats.shape[0]
        samples = torch.ones(num_cams * height * s * width * s, 4)   # RGB over white + coverage
        samples[:, 3] = 0.0
        samples[frags.pix, :3] = colour
        samples[frags.pix, 3] = 1.0
        image = samples.view(num_cams, height * s, width * s, 4).permute(0, 3, 1, 2)
        # Box filter: each output pixel averages its s x s samples (anti-aliasing, soft matte).
        image = torch.nn.functional.avg_pool2d(image, s)
        alpha = image[:, 3].contiguous()
        image = image[:, :3].permute(0, 2, 3, 1).contiguous()
        return image, alpha
