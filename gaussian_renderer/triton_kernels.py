"""Triton kernels of the per-tile compositing (forward and backward); see ``triton_backend.py``.

Importing this module imports triton and decorates the kernels; ``triton.jit`` decides at that
moment whether they run compiled (GPU) or in Triton's CPU interpreter (``TRITON_INTERPRET=1``), and
so it did for triton's own ``tl`` library functions (tl.sum, tl.cumsum, tl.zeros, ...) when triton
was first imported. ``INTERPRETED`` records the mode of these kernels, ``TL_INTERPRETED`` that of
triton's library; the kernels only run when both agree.

Both kernels run one program per (camera, tile) over the flat, depth-sorted intersection list of
``tiles.bin_gaussians``. A program holds its tile's pixels as a vector of ``PIX`` lanes (tile_size^2
padded to a power of two) and walks the tile's list in chunks of ``BLOCK`` splats, building
(PIX, BLOCK) tensors per chunk. The rules and the formulas are those of ``compositing.py`` (its
module docstring): with ``om_k = 1 - alpha_k`` the running product ``P_k = T_in prod_{j<=k} om_j``
(a ``tl.cumprod`` per chunk, continued across chunks) decides everything: entry k is composited iff
``P_k >= 1e-4``; its weight is ``w_k = alpha_k T_k = alpha_k / om_k * P_k``. The exponent is
evaluated in log2 units exactly as ``compositing._block_weights`` does, from the same parameter
table (``compositing._conic_table``), so both backends evaluate the same float expression.

Kernel arguments (float32 unless stated; M = C * N flat splat ids ``camera * N + splat``):

* ``table`` (M + 1, 10): per-splat columns of ``compositing._conic_table`` (means2d, conic scaled
  by 1 / (2 ln 2), log2 opacity, conic, opacity);
* ``feats`` (M, D) features; ``isect`` (n_isects,) int32 (or int64, see
  ``triton_backend.isect_index_dtype``) flat splat ids grouped by tile and depth-sorted;
  ``offsets``, ``counts`` (C * tiles,) int64 list start and length per tile.

Compile-time sizes (``triton_backend._launch_config``): ``TILE``, ``PIX``, ``BLOCK`` and the
channel layout ``DPAD``: up to 4 channels (RGB, RGB+D, depth) the colour sums are per-channel
arithmetic over ``DPAD`` = D rounded up to a power of two; more channels use ``tl.dot`` over
``DPAD`` >= 16. Image sizes and D are runtime arguments (``RUNTIME_SIZES``).
"""
from __future__ import annotations

import triton
import triton.language as tl

# Same thresholds as compositing.py; Triton rounds these literals to float32 like torch does.
ALPHA_MAX: tl.constexpr = tl.constexpr(0.99)
ALPHA_MIN: tl.constexpr = tl.constexpr(1.0 / 255.0)
T_THRESHOLD: tl.constexpr = tl.constexpr(1e-4)

# column indices of compositing._conic_table
_MX: tl.constexpr = tl.constexpr(0)
_MY: tl.constexpr = tl.constexpr(1)
_SA: tl.constexpr = tl.constexpr(2)
_SB: tl.constexpr = tl.constexpr(3)
_SC: tl.constexpr = tl.constexpr(4)
_LOGO: tl.constexpr = tl.constexpr(5)
_CA: tl.constexpr = tl.constexpr(6)
_CB: tl.constexpr = tl.constexpr(7)
_CC: tl.constexpr = tl.constexpr(8)
_OPA: tl.constexpr = tl.constexpr(9)
N_COLS: tl.constexpr = tl.constexpr(10)

# the backward kernel's gradient table has 6 columns: mean x, mean y, conic a, b, c, opacity

# Image and channel sizes are runtime values, never specialised on (Triton would otherwise compile
# a variant per "divisible by 16" / "equal to 1" pattern of each): one compiled kernel per
# (tile size, channel layout DPAD, ids dtype) serves every image size.
RUNTIME_SIZES = ["width", "height", "tiles_x", "tiles_per_cam", "D"]


def _is_interpreted(fn) -> bool:
    return type(fn).__name__ == "InterpretedFunction"


@triton.jit
def _tile_pixels(pid, tiles_x, tiles_per_cam, width, height, TILE: tl.constexpr, PIX: tl.constexpr):
    """Pixels of program ``pid``'s tile.

    Returns (PIX,) tile-local pixel centres ``lx + 0.5``, ``ly + 0.5``, the tile origin (ox, oy) as
    floats, the (PIX,) flat image offset ``cam * H * W + y * W + x`` of each pixel, and the (PIX,)
    mask of lanes that are real pixels inside the image (partial tiles, padding lanes).
    """
    cam = pid // tiles_per_cam
    t = pid % tiles_per_cam
    tx = t % tiles_x
    ty = t // tiles_x
    p = tl.arange(0, PIX)
    lx = p % TILE
    ly = p // TILE
    gx = tx * TILE + lx
    gy = ty * TILE + ly
    inside = (p < TILE * TILE) & (gx < width) & (gy < height)
    pix = (cam * height + gy).to(tl.int64) * width + gx  # int64: C * H * W * D may pass 2^31
    return lx.to(tl.float32) + 0.5, ly.to(tl.float32) + 0.5, (tx * TILE).to(tl.float32), \
        (ty * TILE).to(tl.float32), pix, inside


@triton.jit
def _load_ids(isect_ptr, start, count, k0, BLOCK: tl.constexpr):
    """(BLOCK,) flat splat ids of list entries k0..k0+BLOCK of a tile (0 past its end)."""
    j = k0 + tl.arange(0, BLOCK)
    return tl.load(isect_ptr + start + j, mask=j < count, other=0)


@triton.jit
def _load_rows(table_ptr, feats_ptr, ids, valid, D, d, dmask):
    """A chunk's table rows: (BLOCK,) mean x, mean y, scaled conic a, b, c, log2 opacity, and its
    (BLOCK, DPAD) features. ``ids * N_COLS`` and ``ids * D`` are computed in the ids' dtype:
    ``triton_backend.isect_index_dtype`` gives int32 ids only where they cannot overflow."""
    row = table_ptr + ids * N_COLS
    mx = tl.load(row + _MX, mask=valid, other=0.0)
    my = tl.load(row + _MY, mask=valid, other=0.0)
    sa = tl.load(row + _SA, mask=valid, other=0.0)
    sb = tl.load(row + _SB, mask=valid, other=0.0)
    sc = tl.load(row + _SC, mask=valid, other=0.0)
    logo = tl.load(row + _LOGO, mask=valid, other=0.0)
    feat = tl.load(feats_ptr + ids[:, None] * D + d[None, :], mask=valid[:, None] & dmask[None, :], other=0.0)
    return mx, my, sa, sb, sc, logo, feat


@triton.jit
def _chunk_alphas(mx, my, sa, sb, sc, logo, valid, pxc, pyc, ox, oy):
    """Alphas of one chunk from its (BLOCK,) table columns: (PIX, BLOCK) ``alpha`` (0 where
    skipped or ``valid`` is False; exactly 0.99 where clamped) and the (PIX, BLOCK) offsets
    ``dx, dy`` = pixel centre - mean. Same expression and evaluation order as
    ``compositing._block_weights``."""
    dx = pxc[:, None] - (mx - ox)[None, :]
    dy = pyc[:, None] - (my - oy)[None, :]
    f = logo[None, :] - sa[None, :] * dx * dx
    g = -(sc[None, :] * dy * dy)
    h = -2.0 * sb[None, :] * dx
    raw = tl.exp2((f + g) + h * dy)
    alpha = tl.minimum(raw, ALPHA_MAX)
    alpha = tl.where((alpha >= ALPHA_MIN) & valid[None, :], alpha, 0.0)
    return alpha, dx, dy


@triton.jit
def _chunk_transmittance(alpha, P_in, BLOCK: tl.constexpr):
    """Running products of one chunk.

    alpha (PIX, BLOCK), P_in (PIX,) product before the chunk. Returns (PIX, BLOCK) ``r`` =
    alpha / (1 - alpha), ``Pm`` = P_k where composited (P_k >= 1e-4) else 0, and (PIX,) ``P_end``
    (the product after the chunk, including entries past the stop: once it is below 1e-4 nothing
    later is composited, which is all it is used for).

    ``r`` is divided with IEEE rounding (``div_rn``: compiled Triton's ``/`` is an approximate
    division on a GPU), so a weight rounds as the torch backend's does from the same alpha and
    product; the stop decision itself uses the products only, no division."""
    om = 1.0 - alpha
    r = tl.math.div_rn(alpha, om)
    col = tl.arange(0, BLOCK)
    # fold T_in into the first factor, as compositing.py does, so the products round alike
    om = tl.where(col[None, :] == 0, om * P_in[:, None], om)
    P = tl.cumprod(om, axis=1)
    P_end = tl.sum(tl.where(col[None, :] == BLOCK - 1, P, 0.0), axis=1)
    Pm = tl.where(P >= T_THRESHOLD, P, 0.0)
    return r, Pm, P_end


@triton.jit
def _column(x, c: tl.constexpr, d):
    """Column ``c`` of a (rows, DPAD) tensor ``x`` (``d`` = arange(DPAD)) as a (rows,) vector."""
    return tl.sum(tl.where(d[None, :] == c, x, 0.0), axis=1)


@triton.jit
def _weighted_features(w, feat, d, DPAD: tl.constexpr):
    """(PIX, DPAD) sum_k w[:, k] feat[k, :] for w (PIX, BLOCK), feat (BLOCK, DPAD).

    Up to 4 channels: one multiply-and-sum per channel (a tl.dot would pad the channels to 16
    columns, most of them zero, and convert layouts through shared memory every chunk); more: a
    tl.dot in full fp32 (``ieee``)."""
    if DPAD <= 4:
        out = tl.zeros((w.shape[0], DPAD), dtype=tl.float32)
        for c in tl.static_range(DPAD):
            s = tl.sum(w * _column(feat, c, d)[None, :], axis=1)
            out = tl.where(d[None, :] == c, s[:, None], out)
        return out
    else:
        return tl.dot(w, feat, input_precision="ieee")


@triton.jit
def _feature_dots(v_color, feat, d, BLOCK: tl.constexpr, DPAD: tl.constexpr):
    """(PIX, BLOCK) feat_k . v_color_p for v_color (PIX, DPAD), feat (BLOCK, DPAD) (per channel up
    to 4 channels, else a tl.dot; see :func:`_weighted_features`)."""
    if DPAD <= 4:
        g = tl.zeros((v_color.shape[0], BLOCK), dtype=tl.float32)
        for c in tl.static_range(DPAD):
            g += _column(v_color, c, d)[:, None] * _column(feat, c, d)[None, :]
        return g
    else:
        return tl.dot(v_color, tl.trans(feat), input_precision="ieee")


@triton.jit
def _add_feature_grads(g_feats_ptr, ids, valid, w, v_color, D, d, dmask, DPAD: tl.constexpr):
    """g_feats[ids] += w^T v_color: (BLOCK, D) sum_p w_pk dL/dC_p (per channel up to 4 channels,
    else a tl.dot; see :func:`_weighted_features`)."""
    if DPAD <= 4:
        for c in tl.static_range(DPAD):
            v = tl.sum(w * _column(v_color, c, d)[:, None], axis=0)
            has_c = tl.full(ids.shape, c, tl.int32) < D  # DPAD = 4 serves D = 3
            tl.atomic_add(g_feats_ptr + ids * D + c, v, mask=valid & has_c, sem="relaxed")
    else:
        v_feat = tl.dot(tl.trans(w), v_color, input_precision="ieee")  # (BLOCK, DPAD)
        tl.atomic_add(g_feats_ptr + ids[:, None] * D + d[None, :], v_feat, mask=valid[:, None] & dmask[None, :],
                      sem="relaxed")


@triton.jit(do_not_specialize=RUNTIME_SIZES)
def composite_forward_kernel(
    table_ptr, feats_ptr, isect_ptr, offsets_ptr, counts_ptr,
    out_color_ptr, out_T_ptr,
    width, height, tiles_x, tiles_per_cam, D,
    TILE: tl.constexpr, PIX: tl.constexpr, BLOCK: tl.constexpr, DPAD: tl.constexpr,
):
    """One program per (camera, tile): composite the tile's splats front to back.

    Writes ``out_color`` (C, H, W, D) = sum_k w_k feats_k (no background) and ``out_T`` (C, H, W)
    = 1 - sum_k w_k (final transmittance) for the tile's in-image pixels.

    Software pipeline: while chunk i is composited, the table rows and features of chunk i + 1
    (whose ids arrived during chunk i - 1) and the ids of chunk i + 2 are in flight, so a chunk
    does not wait on its two dependent gathers (Triton does not pipeline a ``while`` loop).
    """
    pid = tl.program_id(0)
    pxc, pyc, ox, oy, pix, inside = _tile_pixels(pid, tiles_x, tiles_per_cam, width, height, TILE, PIX)
    start = tl.load(offsets_ptr + pid)
    count = tl.load(counts_ptr + pid)
    d = tl.arange(0, DPAD)
    dmask = d < D
    lane = tl.arange(0, BLOCK)

    P = tl.where(inside, 1.0, 0.0)  # padding lanes start "stopped"
    T = P
    acc = tl.zeros((PIX, DPAD), dtype=tl.float32)
    ids = _load_ids(isect_ptr, start, count, 0, BLOCK)
    mx, my, sa, sb, sc, logo, feat = _load_rows(table_ptr, feats_ptr, ids, lane < count, D, d, dmask)
    ids_next = _load_ids(isect_ptr, start, count, BLOCK, BLOCK)
    k0 = 0
    alive = count > 0
    while alive:
        # in flight while this chunk computes: chunk i + 1's rows, chunk i + 2's ids
        nmx, nmy, nsa, nsb, nsc, nlogo, nfeat = _load_rows(table_ptr, feats_ptr, ids_next,
                                                           k0 + BLOCK + lane < count, D, d, dmask)
        ids_after = _load_ids(isect_ptr, start, count, k0 + 2 * BLOCK, BLOCK)

        alpha, dx, dy = _chunk_alphas(mx, my, sa, sb, sc, logo, k0 + lane < count, pxc, pyc, ox, oy)
        r, Pm, P = _chunk_transmittance(alpha, P, BLOCK)
        w = r * Pm  # alpha_k T_k of composited entries
        acc += _weighted_features(w, feat, d, DPAD)
        T -= tl.sum(w, axis=1)
        k0 += BLOCK
        # early exit: the list is exhausted or every pixel of the tile has stopped
        alive = (k0 < count) & (tl.max(P, axis=0) >= T_THRESHOLD)
        mx, my, sa, sb, sc, logo, feat = nmx, nmy, nsa, nsb, nsc, nlogo, nfeat
        ids_next = ids_after

    tl.store(out_color_ptr + pix[:, None] * D + d[None, :], acc, mask=inside[:, None] & dmask[None, :])
    tl.store(out_T_ptr + pix, T, mask=inside)


@triton.jit(do_not_specialize=RUNTIME_SIZES)
def composite_backward_kernel(
    table_ptr, feats_ptr, isect_ptr, offsets_ptr, counts_ptr,
    v_color_ptr, rest_ptr,
    g_table_ptr, g_feats_ptr,
    width, height, tiles_x, tiles_per_cam, D,
    TILE: tl.constexpr, PIX: tl.constexpr, BLOCK: tl.constexpr, DPAD: tl.constexpr,
):
    """One program per (camera, tile): gradients of the tile's splats, walking the list front to back.

    Inputs: ``v_color`` (C, H, W, D) dL/d(colour), ``rest`` (C, H, W) the per-pixel total
    ``sum_k w_k g_k + T_final (bg . dL/dC - dL/dalpha)`` with ``g_k = feats_k . dL/dC`` (computed
    by the caller from the forward outputs). The chunks are recomputed exactly as in the forward
    (same code, same stop decisions); the suffix sum ``R_k = sum_{j>k} w_j g_j + T_final (...)``
    is ``rest`` minus the running prefix sum (``tl.cumsum`` within a chunk), so

        dL/dalpha_k = T_k g_k - R_k / (1 - alpha_k),   u_k = alpha_k dL/dalpha_k
                    = r_k (P_k g_k - R_k)               (0 where skipped, clamped or stopped).

    Accumulates (atomic adds) into ``g_table`` (M, 6): dL/d(mean x, mean y, conic a, b, c,
    opacity), and ``g_feats`` (M, D): sum_p w_pk dL/dC_p. The forward's software pipeline; the
    conic and opacity columns, needed only after the chunk's products, are loaded in the chunk.
    """
    pid = tl.program_id(0)
    pxc, pyc, ox, oy, pix, inside = _tile_pixels(pid, tiles_x, tiles_per_cam, width, height, TILE, PIX)
    start = tl.load(offsets_ptr + pid)
    count = tl.load(counts_ptr + pid)
    d = tl.arange(0, DPAD)
    dmask = d < D
    lane = tl.arange(0, BLOCK)

    v_held = tl.load(v_color_ptr + pix[:, None] * D + d[None, :], mask=inside[:, None] & dmask[None, :], other=0.0)
    R_run = tl.load(rest_ptr + pix, mask=inside, other=0.0)  # R before the chunk's first entry
    P = tl.where(inside, 1.0, 0.0)
    ids = _load_ids(isect_ptr, start, count, 0, BLOCK)
    mx, my, sa, sb, sc, logo, feat = _load_rows(table_ptr, feats_ptr, ids, lane < count, D, d, dmask)
    ids_next = _load_ids(isect_ptr, start, count, BLOCK, BLOCK)
    k0 = 0
    alive = count > 0
    while alive:
        nmx, nmy, nsa, nsb, nsc, nlogo, nfeat = _load_rows(table_ptr, feats_ptr, ids_next,
                                                           k0 + BLOCK + lane < count, D, d, dmask)
        ids_after = _load_ids(isect_ptr, start, count, k0 + 2 * BLOCK, BLOCK)

        valid = k0 + lane < count
        if DPAD <= 4:
            v_color = v_held
        else:  # (PIX, DPAD >= 16) held across the loop would spill: reloaded (from L1) per chunk
            v_color = tl.load(v_color_ptr + pix[:, None] * D + d[None, :], mask=inside[:, None] & dmask[None, :],
                              other=0.0)
        tab = table_ptr + ids * N_COLS
        ca = tl.load(tab + _CA, mask=valid, other=0.0)
        cb = tl.load(tab + _CB, mask=valid, other=0.0)
        cc = tl.load(tab + _CC, mask=valid, other=0.0)
        o = tl.load(tab + _OPA, mask=valid, other=1.0)
        alpha, dx, dy = _chunk_alphas(mx, my, sa, sb, sc, logo, valid, pxc, pyc, ox, oy)
        r, Pm, P = _chunk_transmittance(alpha, P, BLOCK)
        w = r * Pm
        g = _feature_dots(v_color, feat, d, BLOCK, DPAD)  # (PIX, BLOCK): feats_k . dL/dC
        wg = w * g
        R = R_run[:, None] - tl.cumsum(wg, axis=1)  # sum_{j>k} w_j g_j + T_final (...)
        R_run -= tl.sum(wg, axis=1)
        # alpha clamped at 0.99 (raw >= 0.99) does not depend on the splat's parameters
        live = (Pm > 0.0) & (alpha < ALPHA_MAX)
        u = tl.where(live, r * (g * Pm - R), 0.0)  # alpha dL/dalpha = -dL/dpower

        # power = 0.5 (a dx^2 + 2 b dx dy + c dy^2) with dx = pixel - mean: dpower/dmean = -(Q d)
        row = g_table_ptr + ids * 6
        udx = u * dx
        udy = u * dy
        sdx = tl.sum(udx, axis=0)
        sdy = tl.sum(udy, axis=0)
        tl.atomic_add(row + 0, ca * sdx + cb * sdy, mask=valid, sem="relaxed")
        tl.atomic_add(row + 1, cb * sdx + cc * sdy, mask=valid, sem="relaxed")
        tl.atomic_add(row + 2, -0.5 * tl.sum(udx * dx, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(row + 3, -tl.sum(udx * dy, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(row + 4, -0.5 * tl.sum(udy * dy, axis=0), mask=valid, sem="relaxed")
        tl.atomic_add(row + 5, tl.math.div_rn(tl.sum(u, axis=0), tl.maximum(o, 1e-30)), mask=valid, sem="relaxed")
        _add_feature_grads(g_feats_ptr, ids, valid, w, v_color, D, d, dmask, DPAD)

        k0 += BLOCK
        alive = (k0 < count) & (tl.max(P, axis=0) >= T_THRESHOLD)
        mx, my, sa, sb, sc, logo, feat = nmx, nmy, nsa, nsb, nsc, nlogo, nfeat
        ids = ids_next
        ids_next = ids_after


INTERPRETED = _is_interpreted(composite_forward_kernel)
TL_INTERPRETED = _is_interpreted(tl.sum)
