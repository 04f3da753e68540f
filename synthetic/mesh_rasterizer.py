"""A small vectorised triangle rasterizer in PyTorch (z-buffer, perspective-correct barycentrics).

It renders the synthetic ground truth, so it is deliberately independent of the Gaussian renderer:
nothing here is shared with ``gaussian_renderer``. Conventions follow the rest of the project:

* vertices are given in OpenCV camera coordinates (x right, y down, z forward, metres);
* pixel (row i, column j) has its centre at continuous image coordinates (j + 0.5, i + 0.5), i.e.
  the intrinsics map the top-left image *corner* to (0, 0) -- the gsplat convention, so scaling
  K by s renders the same view at s times the resolution (used for supersampling).

Algorithm (all cameras of a batch at once): project the vertices, drop back-facing triangles,
list every (triangle, pixel) pair inside each triangle's pixel bounding box (in chunks to bound
memory), keep the pairs whose pixel centre lies inside the triangle, and resolve visibility with a
single ``scatter_reduce(amin)`` over keys that pack (depth, triangle id) into one int64, so the
nearest triangle id per pixel falls out of the reduction directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Fragments", "rasterize", "interpolate", "project"]

# Depth is quantised to 2^-26 m (15 nm) and packed above a 24-bit triangle id: ids < 16.7 M and
# depths < 2^(63-24-26) m = 8 km fit in a positive int64.
_DEPTH_SCALE = float(2 ** 26)
_ID_BITS = 24
_ID_MASK = (1 << _ID_BITS) - 1
_EMPTY = torch.iinfo(torch.int64).max
# Window sizes (pixels) of the broadcast path for small triangles; larger ones take the general path.
_WINDOWS = (2, 4, 8, 16)


@dataclass
class Fragments:
    """Result of :func:`rasterize` for C cameras of H x W pixels, stored compactly.

    Only the N covered pixels are stored, in (camera, row, column) order; dense per-pixel maps
    are available as properties.

    Attributes:
        size: (C, H, W).
        pix: (N,) int64 flat index c * H * W + row * W + column of each covered pixel.
        face: (N,) int64 index of the visible face.
        weights: (N, 3) perspective-correct barycentric weights of the face's 3 vertices.
        z: (N,) camera-space depth of the visible surface.
    """

    size: tuple
    pix: torch.Tensor
    face: torch.Tensor
    weights: torch.Tensor
    z: torch.Tensor

    def _dense(self, values: torch.Tensor, fill) -> torch.Tensor:
        c, h, w = self.size
        out = torch.full((c * h * w,) + tuple(values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        out[self.pix] = values
        return out.view(c, h, w, *values.shape[1:])

    @property
    def face_idx(self) -> torch.Tensor:
        """(C, H, W) int64 visible face, -1 on background."""
        return self._dense(self.face, -1)

    @property
    def bary(self) -> torch.Tensor:
        """(C, H, W, 3) perspective-correct barycentrics, zeros on background."""
        return self._dense(self.weights, 0.0)

    @property
    def depth(self) -> torch.Tensor:
        """(C, H, W) camera-space z, +inf on background."""
        return self._dense(self.z, float("inf"))

    @property
    def mask(self) -> torch.Tensor:
        """(C, H, W) bool: pixels covered by a face."""
        return self._dense(torch.ones_like(self.face, dtype=torch.bool), False)

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(camera, row, column) of the covered pixels, each (N,) int64."""
        c, h, w = self.size
        return self.pix // (h * w), (self.pix // w) % h, self.pix % w


def project(verts_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection to continuous pixel coordinates.

    Args:
        verts_cam: (C, V, 3) points in OpenCV camera coordinates (z > 0 in front).
        K: (C, 3, 3) intrinsics.

    Returns:
        (C, V, 2) pixel coordinates (x to the right, y down; top-left corner at (0, 0)).
    """
    z = verts_cam[..., 2:3].clamp_min(1e-9)
    xy = verts_cam[..., :2] / z
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    return torch.stack([xy[..., 0] * fx + cx, xy[..., 1] * fy + cy], dim=-1)


def _affine_coefficients(tri_xy: torch.Tensor, area: torch.Tensor, inv_z: torch.Tensor) -> torch.Tensor:
    """Screen-space affine forms of two barycentrics per triangle, relative to its third corner.

    For a pixel centre (x, y) and u = x - x2, v = y - y2: w0 = a0 u + b0 v, w1 = a1 u + b1 v,
    w2 = 1 - w0 - w1, and 1/z = iz2 + (iz0 - iz2) w0 + (iz1 - iz2) w1 (1/z is affine in screen
    space under perspective). Working relative to a corner keeps float32 round-off tiny, so
    pixels on an edge shared by two triangles are not lost to cancellation (no pinholes).

    Args:
        tri_xy: (T, 3, 2) projected corners; area: (T,) doubled signed area (non-zero);
        inv_z: (T, 3) reciprocal camera depths of the corners.

    Returns:
        (T, 9) [a0, b0, a1, b1, x2, y2, iz0 - iz2, iz1 - iz2, iz2].
    """
    (x0, y0), (x1, y1), (x2, y2) = tri_xy[:, 0].unbind(-1), tri_xy[:, 1].unbind(-1), tri_xy[:, 2].unbind(-1)
    inv = 1.0 / area
    iz0, iz1, iz2 = inv_z.unbind(-1)
    return torch.stack([(y1 - y2) * inv, (x2 - x1) * inv, (y2 - y0) * inv, (x0 - x2) * inv, x2, y2,
                        iz0 - iz2, iz1 - iz2, iz2], -1)


def _weights(k: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentrics (w0, w1) of pixel centres (fx, fy) from coefficients k (N, 9)."""
    u, v = fx - k[:, 4], fy - k[:, 5]
    return k[:, 0] * u + k[:, 1] * v, k[:, 2] * u + k[:, 3] * v


def rasterize(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, height: int, width: int, *,
              two_sided: torch.Tensor | None = None, near: float = 1e-3,
              max_candidates: int = 1 << 22) -> Fragments:
    """Rasterise one mesh seen by C cameras.

    Args:
        verts_cam: (C, V, 3) vertices in each camera's OpenCV frame (float32 or float64).
        faces: (F, 3) int64 vertex indices, wound counter-clockwise seen from outside (the normal
            (v1 - v0) x (v2 - v0) points out of the surface).
        K: (C, 3, 3) pixel intrinsics for this ``height`` x ``width`` image.
        height, width: image size in pixels.
        two_sided: optional (F,) bool; faces marked True are kept when seen from behind (open
            sheets such as teeth), all others are back-face culled.
        near: faces with a vertex closer than this (metres) are dropped (no clipping is needed for
            a head seen from ~1 m).
        max_candidates: upper bound on (face, pixel) pairs processed at once (memory bound).

    Returns:
        :class:`Fragments` for the C images.
    """
    num_cams = verts_cam.shape[0]
    num_faces = faces.shape[0]
    if num_faces >= (1 << _ID_BITS):
        raise ValueError(f"mesh has {num_faces} faces; the rasterizer packs ids into {_ID_BITS} bits")
    dev, dtype = verts_cam.device, verts_cam.dtype
    xy = project(verts_cam, K)                                  # (C, V, 2)
    tri_xy = xy[:, faces]                                       # (C, F, 3, 2)
    tri_cam = verts_cam[:, faces]                               # (C, F, 3, 3)

    # Visibility pre-tests per (camera, face): in front of the camera, front-facing (the camera
    # sits at the origin, so a face is front-facing when its normal points against v0), and not
    # degenerate on screen.
    normal = torch.cross(tri_cam[:, :, 1] - tri_cam[:, :, 0], tri_cam[:, :, 2] - tri_cam[:, :, 0], dim=-1)
    facing = (normal * tri_cam[:, :, 0]).sum(-1) < 0
    if two_sided is not None:
        facing = facing | two_sided.to(dev)[None]
    a, b, c = tri_xy[:, :, 0], tri_xy[:, :, 1], tri_xy[:, :, 2]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    keep = facing & (tri_cam[..., 2].min(-1).values > near) & (area.abs() > 1e-12)

    # Pixel bounding boxes: columns j with j + 0.5 in [min x, max x], likewise rows.
    lo = torch.ceil(tri_xy.min(dim=2).values - 0.5).long()
    hi = torch.floor(tri_xy.max(dim=2).values - 0.5).long()
    lo[..., 0].clamp_(min=0)
    lo[..., 1].clamp_(min=0)
    hi[..., 0].clamp_(max=width - 1)
    hi[..., 1].clamp_(max=height - 1)
    span = (hi - lo + 1).clamp_min(0)
    count = span[..., 0] * span[..., 1] * keep
    cam_ids, face_ids = torch.nonzero(count > 0, as_tuple=True)

    # Per kept (camera, face) triangle: coefficients, box origin/size, image row offset, face id.
    count = count[cam_ids, face_ids]
    coef = _affine_coefficients(tri_xy[cam_ids, face_ids], area[cam_ids, face_ids],
                                1.0 / tri_cam[cam_ids, face_ids, :, 2])
    x0, y0 = lo[cam_ids, face_ids, 0], lo[cam_ids, face_ids, 1]
    bw, bh = span[cam_ids, face_ids, 0], span[cam_ids, face_ids, 1]
    row_offset = cam_ids * height

    zbuf = torch.full((num_cams * height * width,), _EMPTY, dtype=torch.int64, device=dev)

    def splat(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor) -> None:
        """z-test candidate pixels (inside their triangle ``tri``) into the packed z-buffer."""
        k = coef[tri]
        inv_z = k[:, 8] + k[:, 6] * w0 + k[:, 7] * w1
        key = (_DEPTH_SCALE / inv_z).long() << _ID_BITS | face_ids[tri]
        zbuf.scatter_reduce_(0, (row_offset[tri] + py) * width + px, key, reduce="amin")

    # Small triangles (almost all of them): a fixed win x win pixel window per triangle, evaluated
    # by broadcasting -- no per-candidate gathers or integer divisions.
    done = torch.zeros_like(count, dtype=torch.bool)
    for win in _WINDOWS:
        sel = torch.nonzero(~done & (bw <= win) & (bh <= win), as_tuple=True)[0]
        done[sel] = True
        oy, ox = torch.meshgrid(torch.arange(win, device=dev), torch.arange(win, device=dev), indexing="ij")
        ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)
        step = max(1, max_candidates // (win * win))
        for chunk in torch.split(sel, step):
            k = coef[chunk]
            u = (x0[chunk].to(dtype) + 0.5 - k[:, 4])[:, None] + ox.to(dtype)
            v = (y0[chunk].to(dtype) + 0.5 - k[:, 5])[:, None] + oy.to(dtype)
            w0 = k[:, 0:1] * u + k[:, 1:2] * v
            w1 = k[:, 2:3] * u + k[:, 3:4] * v
            inside = (w0 >= 0) & (w1 >= 0) & (w0 + w1 <= 1) & (ox < bw[chunk, None]) & (oy < bh[chunk, None])
            ti, wi = torch.nonzero(inside, as_tuple=True)
            tri = chunk[ti]
            splat(tri, x0[tri] + ox[0, wi], y0[tri] + oy[0, wi], w0[ti, wi], w1[ti, wi])

    # Larger triangles: expand their exact boxes into candidate lists, in bounded chunks.
    big = torch.nonzero(~done, as_tuple=True)[0]
    if big.numel():
        cum = torch.cumsum(count[big], 0)
        start = 0
        while start < big.shape[0]:
            base = cum[start - 1] if start > 0 else cum.new_zeros(())
            end = max(int(torch.searchsorted(cum, base + max_candidates, right=True)), start + 1)
            ids = big[start:end]
            owner = torch.repeat_interleave(ids, count[ids])
            first = torch.cumsum(count[ids], 0) - count[ids]
            local = torch.arange(owner.shape[0], device=dev) - torch.repeat_interleave(first, count[ids])
            px = x0[owner] + local % bw[owner]
            py = y0[owner] + local // bw[owner]
            w0, w1 = _weights(coef[owner], px.to(dtype) + 0.5, py.to(dtype) + 0.5)
            idx = torch.nonzero((w0 >= 0) & (w1 >= 0) & (w0 + w1 <= 1), as_tuple=True)[0]
            splat(owner[idx], px[idx], py[idx], w0[idx], w1[idx])
            start = end

    hit = torch.nonzero(zbuf != _EMPTY, as_tuple=True)[0]
    f_hit = zbuf[hit] & _ID_MASK
    c_hit = hit // (height * width)
    rem = hit - c_hit * (height * width)
    fy = torch.div(rem, width, rounding_mode="floor")
    fx = (rem - fy * width).to(dtype) + 0.5
    fy = fy.to(dtype) + 0.5
    tri = tri_xy[c_hit, f_hit]
    w0, w1 = _weights(_affine_coefficients(tri, area[c_hit, f_hit], torch.ones_like(tri[..., 0])), fx, fy)
    w = torch.stack([w0, w1, 1.0 - w0 - w1], -1)
    wz = w / tri_cam[c_hit, f_hit, :, 2]                         # perspective correction
    inv_z = wz.sum(-1)
    return Fragments(size=(num_cams, height, width), pix=hit, face=f_hit, weights=wz / inv_z[:, None],
                     z=1.0 / inv_z)


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at the covered pixels.

    Args:
        fragments: output of :func:`rasterize` for C cameras.
        faces: (F, 3) the faces that were rasterised.
        attributes: (V, D) shared by all cameras, or (C, V, D) per camera.

    Returns:
        (N, D) values at the N covered pixels, in the order of ``fragments.pix``.
    """
    vid = faces[fragments.face]                                # (N, 3)
    if attributes.dim() == 2:
        vals = attributes[vid]                                 # (N, 3, D)
    else:
        cam = fragments.coordinates()[0]
        vals = attributes[cam[:, None], vid]
    w = fragments.weights.to(vals.dtype)
    return vals[:, 0] * w[:, 0:1] + vals[:, 1] * w[:, 1:2] + vals[:, 2] * w[:, 2:3]
