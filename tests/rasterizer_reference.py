"""Brute-force dense reference rasterizer for tests (plain torch autograd, no tiles, no product code).

Every pixel is composited against every splat in global depth order with a sequential loop, from
the rules stated in docs/DESIGN.md section 5 / gaussian_renderer docs, re-derived independently:

* rotation from a unit quaternion via Rodrigues' form ``R = I + 2w[v]x + 2[v]x^2``;
* real SH from the associated Legendre recurrence (Condon-Shortley phase, m = -l..l order);
* coverage rule: a splat takes part at a pixel iff ``near <= z <= far`` and its alpha there is
  ``>= 1/255`` -- no screen-space bounding box at all. The product bins splats into tiles with an
  opacity-aware box that provably contains every such pixel, so both must agree exactly.
"""
from __future__ import annotations

import math

import torch


def _rotation(quats):
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, v = q[:, 0], q[:, 1:]
    zero = torch.zeros_like(w)
    vx = torch.stack([
        torch.stack([zero, -v[:, 2], v[:, 1]], -1),
        torch.stack([v[:, 2], zero, -v[:, 0]], -1),
        torch.stack([-v[:, 1], v[:, 0], zero], -1),
    ], dim=-2)  # cross-product matrix [v]x
    eye = torch.eye(3, dtype=quats.dtype).expand_as(vx)
    return eye + 2.0 * w[:, None, None] * vx + 2.0 * vx @ vx


def _sh_reference(degree, coeffs, dirs):
    """sum_{l<=degree, m} Y_l^m(d) coeffs[l^2 + l + m]; real SH with the Condon-Shortley phase."""
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    x, y, z = d.unbind(-1)
    out = torch.zeros(dirs.shape[:-1] + (3,), dtype=dirs.dtype)
    for m in range(0, degree + 1):
        # (x + i y)^m = sin^m(theta) (cos m phi + i sin m phi)
        re, im = torch.ones_like(x), torch.zeros_like(x)
        for _ in range(m):
            re, im = re * x - im * y, re * y + im * x
        dfact = 1.0
        for k in range(1, 2 * m, 2):
            dfact *= k
        # Q_l^m(z) with P_l^m = (-1)^m (2m-1)!! sin^m Q_l^m
        q_prev, q = None, torch.ones_like(z)
        for l in range(m, degree + 1):
            if l == m + 1:
                q_prev, q = q, z * (2 * m + 1) * q
            elif l > m + 1:
                q_prev, q = q, ((2 * l - 1) * z * q - (l + m - 1) * q_prev) / (l - m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
            p = (-1) ** m * dfact * q
            if m == 0:
                out = out + (norm * p)[..., None] * coeffs[..., l * l + l, :]
            else:
                out = out + (math.sqrt(2) * norm * p * re)[..., None] * coeffs[..., l * l + l + m, :]
                out = out + (math.sqrt(2) * norm * p * im)[..., None] * coeffs[..., l * l + l - m, :]
    return out


def reference_project(means, quats, scales, viewmat, K, width, height, eps2d=0.3):
    """Camera-space means (N, 3), pixel means (N, 2) and 2D covariances (N, 2, 2) for one camera."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = means @ R.T + t
    Rq = _rotation(quats)
    cov = Rq @ torch.diag_embed(scales * scales) @ Rq.transpose(-1, -2)
    cov_c = R @ cov @ R.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = pc.unbind(-1)
    zs = torch.where(z > 1e-6, z, torch.ones_like(z))
    # Jacobian of (fx x/z + cx, fy y/z + cy) at the point clamped to 1.3x the frustum
    lim_x = ((width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx)
    lim_y = ((height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy)
    txz = torch.clamp(x / zs, -lim_x[1], lim_x[0])
    tyz = torch.clamp(y / zs, -lim_y[1], lim_y[0])
    zero = torch.zeros_like(zs)
    J = torch.stack([
        torch.stack([fx / zs, zero, -fx * txz / zs], -1),
        torch.stack([zero, fy / zs, -fy * tyz / zs], -1),
    ], dim=-2)
    cov2 = J @ cov_c @ J.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype)
    mean2 = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    return pc, mean2, cov2


def reference_rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                        near_plane=0.01, far_plane=1e10, sh_degree=None, backgrounds=None,
                        render_mode="RGB", eps2d=0.3, return_means2d=False):
    """Returns (C, H, W, D') colours and (C, H, W, 1) alphas (and the per-camera means2d list)."""
    C = viewmats.shape[0]
    dtype = means.dtype
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    pix = torch.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], -1)  # (HW, 2)
    thr_a = torch.tensor(1.0 / 255.0, dtype=dtype)
    imgs, alphas, m2ds = [], [], []
    for c in range(C):
        pc, mean2, cov2 = reference_project(means, quats, scales, viewmats[c], Ks[c], width, height, eps2d)
        if mean2.requires_grad:
            mean2.retain_grad()
        m2ds.append(mean2)
        z = pc[:, 2]
        ok = (z >= near_plane) & (z <= far_plane)
        conic = torch.linalg.inv(cov2)
        if sh_degree is not None:
            cam_center = -viewmats[c, :3, :3].T @ viewmats[c, :3, 3]
            coeffs = colors if colors.dim() == 3 else colors[c]
            rgb = torch.clamp(_sh_reference(sh_degree, coeffs, means - cam_center) + 0.5, min=0.0)
        else:
            rgb = colors if colors.dim() == 2 else colors[c]
        feats = []
        if render_mode in ("RGB", "RGB+D", "RGB+ED"):
            feats.append(rgb)
        if render_mode != "RGB":
            feats.append(z[:, None])
        feat = torch.cat(feats, -1)
        op = opacities if opacities.dim() == 1 else opacities[c]
        order = torch.argsort(z.detach(), stable=True)
        HW = pix.shape[0]
        T = torch.ones(HW, dtype=dtype)
        done = torch.zeros(HW, dtype=torch.bool)
        acc = torch.zeros(HW, feat.shape[1], dtype=dtype)
        for i in order.tolist():
            if not bool(ok[i]):
                continue
            d = pix - mean2[i]
            power = -0.5 * (d @ conic[i] * d).sum(-1)
            alpha = torch.clamp(op[i] * torch.exp(power), max=0.99)
            take = (alpha >= thr_a) & ~done
            newT = T * (1.0 - alpha)
            stop = take & (newT < 1e-4)
            done = done | stop
            take = take & ~stop
            acc = acc + torch.where(take[:, None], (alpha * T)[:, None] * feat[i], torch.zeros_like(acc))
            T = torch.where(take, newT, T)
        if backgrounds is not None and render_mode in ("RGB", "RGB+D", "RGB+ED"):
            bg = backgrounds[c] if backgrounds.dim() == 2 else backgrounds
            nb = bg.shape[0]
            acc = torch.cat([acc[:, :nb] + T[:, None] * bg, acc[:, nb:]], -1)
        a = 1.0 - T
        if render_mode in ("ED", "RGB+ED"):
            acc = torch.cat([acc[:, :-1], acc[:, -1:] / torch.clamp(a[:, None], min=1e-10)], -1)
        imgs.append(acc.reshape(height, width, -1))
        alphas.append(a.reshape(height, width, 1))
    out = (torch.stack(imgs), torch.stack(alphas))
    return out + (m2ds,) if return_means2d else out
