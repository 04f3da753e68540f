"""Front-to-back alpha compositing of depth-sorted splats per tile, with a hand-written backward.

Per pixel and splat k (front to back), with ``d = means2d_k - pixel_centre`` and conic ``Q_k``::

    alpha_k = min(0.99, o_k exp(-0.5 d^T Q_k d))
    skipped when alpha_k < 1/255 (no effect on anything)
    T_k     = prod_{j<k, not skipped} (1 - alpha_j)            (transmittance before k)
    stop at the first non-skipped k with T_k (1 - alpha_k) < 1e-4: neither k nor any later splat
    is composited (3DGS convention)
    colour  = sum_k alpha_k T_k c_k + T_final * background,   alpha = 1 - T_final

Vectorised form: for a chunk of tiles and a block of K list entries we build (tiles, pixels, K)
tensors; ``P = T_in * cumprod(1 - alpha)`` is the running product *including* splats after the
stop, so "composited" is exactly ``P_k >= 1e-4`` (P is non-increasing, and everything before the
first failing splat passed). The weights are ``w_k = alpha_k T_k = alpha_k / (1 - alpha_k) * P_k``.
Blocks are processed front to back; a tile leaves the active set when all its pixels have stopped
or its list is exhausted (early termination), and the per-block input products are saved so the
backward pass can recompute each block exactly, walking the blocks back to front with the running
suffix sum ``R_k = sum_{j>k} w_j (c_j . dL/dC) + T_final (bg . dL/dC - dL/dA)``::

    dL/dalpha_k = T_k (c_k . dL/dC) - R_k / (1 - alpha_k)

The reductions over pixels use batched matrix products (colours, colour gradients) and pixel
moments (sums of u, u px, u py, u px^2, ...) from which the gradients of the means and conics
follow in closed form, so no (tiles, pixels, K, channels) tensor is ever built.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .tiles import TilePlan

T_THRESHOLD = 1e-4
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0

# column layout of the per-splat parameter table: mean, conic / (2 ln 2), log2 opacity, conic, opacity
_MX, _MY, _SA, _SB, _SC, _LOGO, _CA, _CB, _CC, _OPA = range(10)


def _below(value: float, dtype: torch.dtype) -> float:
    """Largest float of ``dtype`` strictly below ``value`` (so ``x > below`` <=> ``x >= value``)."""
    v = torch.tensor(value, dtype=dtype)
    return torch.nextafter(v, torch.zeros((), dtype=dtype)).item()


def image_to_tiles(img: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """(C, H, W, D) image -> (C * tiles, ts * ts, D) tile layout (zero padded)."""
    C, H, W, D = img.shape
    ts, tx, ty = plan.tile_size, plan.tiles_x, plan.tiles_y
    img = F.pad(img, (0, 0, 0, tx * ts - W, 0, ty * ts - H))
    return img.reshape(C, ty, ts, tx, ts, D).permute(0, 1, 3, 2, 4, 5).reshape(C * ty * tx, ts * ts, D)


def tiles_to_image(t: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """(C * tiles, ts * ts, D) -> (C, H, W, D)."""
    ts, tx, ty = plan.tile_size, plan.tiles_x, plan.tiles_y
    D = t.shape[-1]
    img = t.reshape(plan.n_cameras, ty, tx, ts, ts, D).permute(0, 1, 3, 2, 4, 5)
    img = img.reshape(plan.n_cameras, ty * ts, tx * ts, D)
    return img[:, : plan.height, : plan.width].contiguous()


class _Workspace:
    """Reusable flat buffers for the (tiles, pixels, K) work tensors."""

    def __init__(self, n: int, size: int, dtype, device):
        self.bufs = [torch.empty(size, dtype=dtype, device=device) for _ in range(n)]

    def get(self, i: int, shape) -> torch.Tensor:
        numel = shape[0] * shape[1] * shape[2]
        return self.bufs[i][:numel].view(shape)


class _Geometry:
    """Per-plan pixel coordinates and tile origins."""

    def __init__(self, plan: TilePlan, dtype, device):
        ts = plan.tile_size
        p = torch.arange(ts * ts, device=device)
        self.px_i = p % ts
        self.py_i = torch.div(p, ts, rounding_mode="floor")
        px = self.px_i.to(dtype) + 0.5  # (P,) tile-local pixel centres
        py = self.py_i.to(dtype) + 0.5
        self.basisT = torch.stack([torch.ones_like(px), px, py, px * px, px * py, py * py])  # (6, P)
        self.one = torch.ones((), dtype=dtype, device=device)
        self.ts = ts
        self.pxv = (torch.arange(ts, device=device, dtype=dtype) + 0.5).view(1, ts, 1)  # column centres
        self.pyv = self.pxv
        self.plan = plan

    def origins(self, tiles: torch.Tensor, dtype):
        plan = self.plan
        t = tiles % (plan.tiles_x * plan.tiles_y)
        ox = (t % plan.tiles_x) * plan.tile_size
        oy = torch.div(t, plan.tiles_x, rounding_mode="floor") * plan.tile_size
        return ox, oy

    def pixel_mask(self, tiles: torch.Tensor, dtype) -> torch.Tensor:
        """(n, P) 1 for pixels inside the image, 0 for the padding of partial tiles."""
        ox, oy = self.origins(tiles, dtype)
        inside = ((ox[:, None] + self.px_i[None]) < self.plan.width) & ((oy[:, None] + self.py_i[None]) < self.plan.height)
        return inside.to(dtype)


def _block_weights(prm, ox, oy, P0, geo, ws, th_skip, th_t, want_end=True):
    """Recompute the alpha-related (n, P, k) tensors of one block.

    Returns ``(r, Pm, P_end)``: ``r = alpha / (1 - alpha)`` (0 where skipped), ``Pm`` = running
    product ``T_in * prod_{j<=k} (1 - alpha_j)`` where it is >= 1e-4 (composited entries), else 0,
    and ``P_end`` (n, P) the running product after the block. Uses workspace buffers 0..2 (r lives
    in 1, Pm in 2; 0 is free afterwards).
    """
    n, k = prm.shape[0], prm.shape[1]
    ts = geo.ts
    shape = (n, ts * ts, k)
    # exponent (log2 units) e = log2(o) - (a dx^2 + 2 b dx dy + c dy^2) / (2 ln 2), d = pixel - mean;
    # pixel p = (row py, column px) of the tile, so e = f(px) + g(py) + h(px) dy(py): two full passes
    dx = geo.pxv - (prm[..., _MX] - ox[:, None]).unsqueeze(1)  # (n, ts, k), by column
    dy = geo.pyv - (prm[..., _MY] - oy[:, None]).unsqueeze(1)  # (n, ts, k), by row
    sa = prm[..., _SA].unsqueeze(1)
    sb = prm[..., _SB].unsqueeze(1)
    sc = prm[..., _SC].unsqueeze(1)
    f = prm[..., _LOGO].unsqueeze(1) - sa * dx * dx
    g = -(sc * dy * dy)
    h = -2.0 * sb * dx
    e4 = ws.get(2, shape).view(n, ts, ts, k)
    torch.add(f.unsqueeze(1), g.unsqueeze(2), out=e4)
    e4.addcmul_(h.unsqueeze(1), dy.unsqueeze(2))
    raw = e4.view(shape).exp2_()  # o exp(-d^T Q d / 2)
    q = F.threshold_(raw.clamp_(max=ALPHA_MAX), th_skip, 0.0)  # alpha, 0 where skipped
    om = torch.sub(geo.one, q, out=ws.get(0, shape))  # 1 - alpha
    r = torch.div(q, om, out=ws.get(1, shape))
    om[:, :, 0].mul_(P0)
    Pm = torch.cumprod(om, dim=-1, out=ws.get(2, shape))
    P_end = Pm[:, :, -1].clone() if want_end else None
    F.threshold_(Pm, th_t, 0.0)
    return r, Pm, P_end


def _gather(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` for a 2D table and an index tensor of any shape (via index_select)."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])


def _conic_table(means2d, conics, opacities, dtype, device):
    """Per-splat parameter table (C*N + 1, 10); the last row is an inert dummy used as padding."""
    ca, cb, cc = conics.reshape(-1, 3).unbind(-1)
    s = 0.5 / math.log(2.0)
    o = opacities.reshape(-1)
    table = torch.stack(
        [means2d[..., 0].reshape(-1), means2d[..., 1].reshape(-1), s * ca, s * cb, s * cc, torch.log2(o), ca, cb, cc, o],
        dim=-1,
    )
    dummy = torch.zeros(1, 10, dtype=dtype, device=device)
    dummy[0, _LOGO].fill_(-float("inf"))  # a fill, not a copy of a host scalar (CUDA-graph safe)
    return torch.cat([table, dummy])


class CompositeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, backgrounds, plan: TilePlan, options: dict):
        dtype, device = feats.dtype, feats.device
        C, N, D = feats.shape
        block = options["block"]
        P = plan.tile_size * plan.tile_size
        th_skip = _below(ALPHA_MIN, dtype)
        th_t = _below(T_THRESHOLD, dtype)

        with torch.no_grad():
            table = _conic_table(means2d, conics, opacities, dtype, device)
            feat_table = torch.cat([feats.reshape(-1, D), torch.zeros(1, D, dtype=dtype, device=device)])

            geo = _Geometry(plan, dtype, device)
            col_t = torch.zeros(plan.n_tiles, D, P, dtype=dtype, device=device)
            T_t = torch.ones(plan.n_tiles, P, dtype=dtype, device=device)
            ws = _Workspace(3, _work_size(plan, P, block), dtype, device)

            for ch in plan.chunks:
                ch.blocks = []
                n_t, K = ch.flat.shape
                ox_all, oy_all = geo.origins(ch.tiles, dtype)
                P_raw = geo.pixel_mask(ch.tiles, dtype)  # out-of-image pixels start "stopped"
                T_c = P_raw.clone()
                col_c = torch.zeros(n_t, D, P, dtype=dtype, device=device)
                counts = torch.tensor(ch.counts, device=device)
                # can any splat of this chunk reach the 0.99 clamp? (its gradient is then masked)
                ch.clamp_possible = bool(table[:, _OPA].index_select(0, ch.flat.reshape(-1)).max() > ALPHA_MAX)
                act = None
                for k0 in range(0, K, block):
                    k1 = min(K, k0 + block)
                    if act is None:
                        flat, ox, oy, P0 = ch.flat[:, k0:k1], ox_all, oy_all, P_raw
                    else:
                        flat, ox, oy, P0 = ch.flat[act, k0:k1], ox_all[act], oy_all[act], P_raw[act]
                    prm = _gather(table, flat)
                    ch.blocks.append((k0, k1, act, P0))
                    r, Pm, P_end = _block_weights(prm, ox, oy, P0, geo, ws, th_skip, th_t)
                    w = r.mul_(Pm)  # alpha_k T_k for composited entries
                    col = torch.bmm(_gather(feat_table, flat).transpose(1, 2), w.transpose(1, 2))  # (n, D, P)
                    wsum = w.sum(-1)
                    if act is None:
                        col_c += col
                        T_c -= wsum
                        P_raw = P_end
                    else:
                        col_c.index_add_(0, act, col)
                        T_c.index_add_(0, act, wsum, alpha=-1.0)
                        P_raw = P_raw.index_copy(0, act, P_end)
                    if k1 >= K:
                        break
                    # early termination: drop tiles whose pixels all stopped or whose list ended
                    rows = torch.arange(n_t, device=device) if act is None else act
                    alive = (P_end > th_t).any(-1) & (counts[rows] > k1)
                    n_alive = int(alive.sum())
                    if n_alive == 0:
                        break
                    if n_alive < rows.numel():
                        act = rows[alive]
                col_t[ch.tiles] = col_c
                T_t[ch.tiles] = T_c

            col_t = col_t.transpose(1, 2)
            if backgrounds is not None:
                cam = torch.div(torch.arange(plan.n_tiles, device=device), plan.tiles_x * plan.tiles_y,
                                rounding_mode="floor")
                col_t = col_t + T_t.unsqueeze(-1) * backgrounds[cam].unsqueeze(1)
            colors = tiles_to_image(col_t, plan)
            alphas = tiles_to_image((1.0 - T_t).unsqueeze(-1), plan)

        ctx.plan = plan
        ctx.options = options
        ctx.has_bg = backgrounds is not None
        ctx.shapes = (C, N, D)
        ctx.save_for_backward(table, feat_table, T_t, backgrounds if backgrounds is not None else torch.empty(0))
        return colors, alphas

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v_colors, v_alphas):
        table, feat_table, T_t, backgrounds = ctx.saved_tensors
        plan: TilePlan = ctx.plan
        C, N, D = ctx.shapes
        dtype, device = feat_table.dtype, feat_table.device
        P = plan.tile_size * plan.tile_size
        th_skip = _below(ALPHA_MIN, dtype)
        th_t = _below(T_THRESHOLD, dtype)
        block = ctx.options["block"]

        if v_colors is None:
            v_colors = torch.zeros(C, plan.height, plan.width, D, dtype=dtype, device=device)
        if v_alphas is None:
            v_alphas = torch.zeros(C, plan.height, plan.width, 1, dtype=dtype, device=device)
        dC_t = image_to_tiles(v_colors.to(dtype), plan)  # (tiles, P, D)
        dA_t = image_to_tiles(v_alphas.to(dtype), plan)[..., 0]  # (tiles, P)
        tpc = plan.tiles_x * plan.tiles_y
        if ctx.has_bg:
            cam = torch.div(torch.arange(plan.n_tiles, device=device), tpc, rounding_mode="floor")
            bg_dot = (dC_t * backgrounds[cam].unsqueeze(1)).sum(-1)
            v_bg = (T_t.unsqueeze(-1) * dC_t).reshape(C, tpc * P, D).sum(1)
        else:
            bg_dot = torch.zeros_like(dA_t)
            v_bg = None
        acc_t = T_t * (bg_dot - dA_t)

        geo = _Geometry(plan, dtype, device)
        ws = _Workspace(6, _work_size(plan, P, block), dtype, device)
        # r = alpha / (1 - alpha) of clamped entries, computed exactly as in _block_weights
        a_max = torch.tensor(ALPHA_MAX, dtype=dtype, device=device)
        r_clamp = a_max / (1.0 - a_max)
        pair_flat, pair_S, pair_vf, pair_ox, pair_oy = [], [], [], [], []

        for ch in plan.chunks:
            ox_all, oy_all = geo.origins(ch.tiles, dtype)
            dC_c = dC_t[ch.tiles]
            dCT_c = dC_c.transpose(1, 2).contiguous()
            acc_c = acc_t[ch.tiles]
            for k0, k1, act, P0 in reversed(ch.blocks):
                if act is None:
                    flat, ox, oy, dC, dCT, acc = ch.flat[:, k0:k1], ox_all, oy_all, dC_c, dCT_c, acc_c
                else:
                    flat, ox, oy = ch.flat[act, k0:k1], ox_all[act], oy_all[act]
                    dC, dCT, acc = dC_c[act], dCT_c[act], acc_c[act]
                prm = _gather(table, flat)
                featT = _gather(feat_table, flat).transpose(1, 2)  # (n, D, k)
                n, k = flat.shape
                shape = (n, P, k)
                r, Pm, _ = _block_weights(prm, ox, oy, P0, geo, ws, th_skip, th_t, False)
                w = torch.mul(r, Pm, out=ws.get(3, shape))
                g = torch.bmm(dC, featT, out=ws.get(4, shape))  # c_k . dL/dC
                wg = torch.mul(w, g, out=ws.get(5, shape))
                tot = wg.sum(-1)
                R = torch.cumsum(wg, dim=-1, out=ws.get(0, shape))
                R.sub_((tot + acc).unsqueeze(-1))  # -(sum_{j>k} w_j g_j + acc)
                R.mul_(torch.sign(Pm, out=wg))  # only composited entries
                if ch.clamp_possible:  # d alpha / d raw = 0 where alpha was clamped (r == r_clamp)
                    r.mul_(torch.sub(r_clamp, r, out=wg).sign_())
                u = g.mul_(Pm).add_(R).mul_(r)  # dL/d(alpha_raw) * alpha_raw
                pair_S.append(torch.matmul(geo.basisT, u))  # (n, 6, k) pixel moments of u
                pair_vf.append(torch.bmm(dCT, w))  # (n, D, k)
                pair_flat.append(flat)
                pair_ox.append(ox)
                pair_oy.append(oy)
                if act is None:
                    acc_c = acc_c + tot
                else:
                    acc_c = acc_c.index_add(0, act, tot)

        grads = torch.zeros(table.shape[0], 6 + D, dtype=dtype, device=device)
        if pair_flat:
            flat = torch.cat([f.reshape(-1) for f in pair_flat])
            S = torch.cat([s_.transpose(1, 2).reshape(-1, 6) for s_ in pair_S])
            v_feat = torch.cat([v.transpose(1, 2).reshape(-1, D) for v in pair_vf])
            ox = torch.cat([o_[:, None].expand(f.shape).reshape(-1) for o_, f in zip(pair_ox, pair_flat)])
            oy = torch.cat([o_[:, None].expand(f.shape).reshape(-1) for o_, f in zip(pair_oy, pair_flat)])
            prm = table.index_select(0, flat)
            mx = prm[:, _MX] - ox
            my = prm[:, _MY] - oy
            ca, cb, cc, o = prm[:, _CA], prm[:, _CB], prm[:, _CC], prm[:, _OPA]
            S0, Sx, Sy, Sxx, Sxy, Syy = S.unbind(-1)
            sdx = mx * S0 - Sx  # sum_p u (mx - px)
            sdy = my * S0 - Sy
            sdxdx = (mx * S0 - 2.0 * Sx) * mx + Sxx
            sdxdy = (my * S0 - Sy) * mx - my * Sx + Sxy
            sdydy = (my * S0 - 2.0 * Sy) * my + Syy
            out = torch.cat([
                torch.stack([
                    -(ca * sdx + cb * sdy),
                    -(cb * sdx + cc * sdy),
                    -0.5 * sdxdx,
                    -sdxdy,
                    -0.5 * sdydy,
                    S0 / o.clamp_min(1e-30),
                ], dim=-1),
                v_feat,
            ], dim=-1)
            grads.index_add_(0, flat, out)

        grads = grads[:-1]
        v_means2d = grads[:, 0:2].reshape(C, N, 2)
        v_conics = grads[:, 2:5].reshape(C, N, 3)
        v_opac = grads[:, 5].reshape(C, N)
        v_feats = grads[:, 6:].reshape(C, N, D)
        return v_means2d, v_conics, v_opac, v_feats, v_bg, None, None


def _work_size(plan: TilePlan, P: int, block: int) -> int:
    return max([len(ch.tiles) * P * min(ch.flat.shape[1], block) for ch in plan.chunks], default=0)


def composite(means2d, conics, opacities, feats, backgrounds, plan: TilePlan, block: int = 256):
    """Composite (C, N) splats; returns colours (C, H, W, D) (background included) and alphas (C, H, W, 1)."""
    return CompositeFunction.apply(means2d, conics, opacities, feats, backgrounds, plan, {"block": block})
