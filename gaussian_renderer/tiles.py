"""Tile binning: which splats may touch which ``tile_size`` x ``tile_size`` pixel tiles, in depth order.

A visible splat with screen mean ``(u, v)`` and half extents ``(r_x, r_y)`` (see projection.py) is
listed in every tile ``(tx, ty)`` with ``floor((u - r_x)/ts) <= tx < ceil((u + r_x)/ts)`` and
``floor((v - r_y)/ts) <= ty < ceil((v + r_y)/ts)`` (clipped to the image). Every pixel centre inside
the box ``[u - r_x, u + r_x] x [v - r_y, v + r_y]`` lies in one of these tiles, and the box contains
every pixel where the splat's alpha can reach 1/255, so binning changes no pixel value: the result
equals compositing every visible splat at every pixel in global depth order.

Within a tile, splats are ordered front to back by camera-space depth; equal depths keep the order
of the splat index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


INT32_LIMIT = 2**31 - 1


def fits_int32(max_id: int, max_key: int) -> bool:
    """True when flat splat ids up to ``max_id`` (the dummy id C * N) and tile keys up to
    ``max_key`` (the padding key C * tiles) are int32 values (<= 2^31 - 1)."""
    return max(max_id, max_key) <= INT32_LIMIT


@dataclass
class Chunk:
    """A group of tiles composited together as one padded (n_tiles, ts*ts, K) problem."""

    tiles: torch.Tensor  # (n,) global tile ids (camera * tiles_per_camera + ty * tiles_x + tx), int64
    flat: torch.Tensor  # (n, K) flat splat ids (camera * N + splat), padding = the dummy id C * N
    counts: list  # per tile number of real entries (python ints, descending)
    # Filled by the forward pass and read by the backward pass: one entry per processed K-block,
    # (k0, k1, active rows of this chunk or None for all, transmittance product before the block).
    blocks: list = field(default_factory=list)
    clamp_possible: bool = True  # some splat of the chunk may reach the 0.99 alpha clamp


@dataclass
class TilePlan:
    n_cameras: int
    n_splats: int
    width: int
    height: int
    tile_size: int
    tiles_x: int
    tiles_y: int
    n_isects: int
    tiles_per_gauss: torch.Tensor  # (C, N) int32
    tile_counts: torch.Tensor  # (C * tiles_y * tiles_x,) int64
    chunks: list

    @property
    def n_tiles(self) -> int:
        return self.n_cameras * self.tiles_x * self.tiles_y


@dataclass
class Intersections:
    """The depth-sorted (tile, splat) pairs of one rasterization (:func:`bin_gaussians`).

    ``flat`` (L,) int64 (int32 with ``bin_gaussians``'s ``index_dtype``): flat splat ids
    ``camera * N + splat``, grouped by global tile id (``camera * tiles_per_camera + ty * tiles_x
    + tx``) and front to back within a tile; entries from ``counts.sum()`` on are padding (the
    dummy id ``C * N``). ``counts`` / ``offsets`` (C * tiles_per_camera,) int64: each tile's
    entries are ``flat[offsets[t]:offsets[t] + counts[t]]``.
    ``tiles_per_gauss`` (C, N) int32. ``n_isects``: all pairs, those beyond a fixed capacity
    included: an int, or a 0-dim int64 tensor when a capacity was given (reading it syncs).
    ``overflow``: None, or with a capacity a 0-dim bool tensor, true when pairs were dropped.
    """

    flat: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor
    tiles_per_gauss: torch.Tensor
    n_isects: int | torch.Tensor
    overflow: torch.Tensor | None = None


def bin_gaussians(
    means2d: torch.Tensor,
    radii_xy: torch.Tensor,
    depths: torch.Tensor,
    visible: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
    capacity: int | None = None,
    index_dtype: torch.dtype = torch.int64,
) -> Intersections:
    """Build the depth-sorted (tile, splat) intersection list.

    Args: (C, N, 2) means2d, (C, N, 2) int radii, (C, N) depths, (C, N) bool visible (no grad);
        capacity: None (the list has exactly as many entries as there are pairs, which costs one
        host-device sync to size it) or a fixed length L. With a fixed length nothing here waits
        for the device (every size is known on the host), so the call can be captured in a CUDA
        graph; pairs beyond L are dropped, the farthest splats' first (the list is built in global
        depth order before it is grouped by tile; with several cameras that order spans them
        all), and ``overflow`` says so.
        index_dtype: torch.int64, or torch.int32 for the splat ids of ``flat`` and the tile keys
        it is sorted by (a GPU radix sort then makes 4 passes over half the bytes, not 8); int32
        needs the dummy id ``C * N`` and the padding key ``C * tiles`` to fit (see
        :func:`fits_int32`), else a ValueError that names the sizes.
    Returns :class:`Intersections`.
    """
    C, N = depths.shape
    device = depths.device
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    tpc = tiles_x * tiles_y
    if index_dtype not in (torch.int32, torch.int64):
        raise ValueError(f"bin_gaussians: index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    if index_dtype == torch.int32 and not fits_int32(C * N, C * tpc):
        raise ValueError(
            f"bin_gaussians(index_dtype=torch.int32): {C} cameras x {N} splats (ids up to {C * N}) and {C} x {tpc} "
            f"tiles (keys up to {C * tpc}) must stay below 2^31 = {INT32_LIMIT + 1}; use index_dtype=torch.int64")

    u, v = means2d[..., 0], means2d[..., 1]
    rx = radii_xy[..., 0].to(u.dtype)
    ry = radii_xy[..., 1].to(u.dtype)
    x0 = torch.floor((u - rx) / tile_size).clamp(0, tiles_x).to(torch.int64)
    x1 = torch.ceil((u + rx) / tile_size).clamp(0, tiles_x).to(torch.int64)
    y0 = torch.floor((v - ry) / tile_size).clamp(0, tiles_y).to(torch.int64)
    y1 = torch.ceil((v + ry) / tile_size).clamp(0, tiles_y).to(torch.int64)
    x1 = torch.maximum(x1, x0)
    y1 = torch.maximum(y1, y0)
    per_gauss = ((x1 - x0) * (y1 - y0)) * visible
    tiles_per_gauss = per_gauss.to(torch.int32)
    per_gauss = per_gauss.reshape(-1)
    exact = capacity is None
    if exact:
        capacity = int(per_gauss.sum()) if per_gauss.numel() else 0  # the one sync of the exact size
    dummy = C * N

    # Global depth order (stable: equal depths keep the splat order); splats without a tile last.
    key = torch.where(per_gauss > 0, depths.reshape(-1), torch.full_like(depths.reshape(-1), float("inf")))
    order = torch.sort(key, stable=True).indices  # (C*N,) flat ids
    cnt = per_gauss.index_select(0, order)
    end = torch.cumsum(cnt, 0)
    n_isects = end[-1] if end.numel() else torch.zeros((), dtype=torch.int64, device=device)
    # Entries per splat cut at the capacity, and one padding row that fills the list up to it:
    # the sizes then add up to `capacity` exactly, so repeat_interleave needs no sync to size it.
    start = (end - cnt).clamp_max(capacity)
    kept = end.clamp_max(capacity) - start
    pad = (capacity - n_isects).clamp_min(0)
    rows = torch.repeat_interleave(torch.arange(C * N + 1, device=device), torch.cat([kept, pad.reshape(1)]),
                                   output_size=capacity)  # (L,) row of `order` (C*N = padding)

    # per row: [first tile of its box, box width, first list index]; padding row last
    cam = torch.div(order, N, rounding_mode="floor") if N else order
    first = cam * tpc + y0.reshape(-1).index_select(0, order) * tiles_x + x0.reshape(-1).index_select(0, order)
    width_tiles = (x1 - x0).reshape(-1).index_select(0, order)
    info = torch.stack([first, width_tiles, start], dim=1)
    # the padding row: tile C * tiles (sorts after every real tile), width 1, the dummy splat;
    # built with fills on the device (a host tensor copied over would be a transfer)
    pad_row = torch.stack([torch.full((), v, dtype=torch.int64, device=device) for v in (C * tpc, 1, 0)])
    info = torch.cat([info, pad_row[None]])
    ids = torch.cat([order, torch.full((1,), dummy, dtype=torch.int64, device=device)]).to(index_dtype)
    per = info.index_select(0, rows)  # (L, 3)
    j = torch.arange(capacity, device=device) - per[:, 2]
    wr = per[:, 1]
    row = torch.div(j, wr, rounding_mode="floor")
    tile = torch.where(rows < C * N, per[:, 0] + row * tiles_x + (j - row * wr), per[:, 0]).to(index_dtype)
    tile_sorted, perm = torch.sort(tile, stable=True)
    isect_flat = ids.index_select(0, rows.index_select(0, perm))
    # tile t's entries start at the first key >= t (a binary search per tile: no same-address
    # atomics, as a scatter_add_ histogram of the keys would make); the padding key C * tiles
    # bounds the last real tile
    bounds = torch.searchsorted(tile_sorted, torch.arange(C * tpc + 1, dtype=index_dtype, device=device))
    offsets = bounds[:-1]
    counts = bounds[1:] - offsets
    if exact:
        return Intersections(isect_flat, counts, offsets, tiles_per_gauss, capacity)
    return Intersections(isect_flat, counts, offsets, tiles_per_gauss, n_isects, n_isects > capacity)


def plan_chunks(
    isect_flat: torch.Tensor,
    tile_counts: torch.Tensor,
    tile_offsets: torch.Tensor,
    dummy: int,
    pixels_per_tile: int,
    budget: int,
    block: int,
    ratio: float = 0.7,
) -> list:
    """Group non-empty tiles with similar list lengths into chunks.

    Tiles are sorted by their number of splats (descending); a chunk starts at the longest remaining
    tile (K entries) and takes following tiles while they have at least ``ratio * K`` entries and
    ``n_tiles * pixels_per_tile * min(K, block) <= budget`` (elements of one work tensor).
    Only the list lengths travel to the host (one small sync), never per-splat data.
    """
    counts_host = tile_counts.cpu()
    nz = torch.nonzero(counts_host).squeeze(1)
    if nz.numel() == 0:
        return []
    c_nz = counts_host[nz]
    order = torch.sort(c_nz, descending=True, stable=True).indices
    tiles_sorted = nz[order].tolist()
    cnts = c_nz[order].tolist()
    chunks = []
    device = isect_flat.device
    M = isect_flat.numel()
    flat_ext = torch.cat([isect_flat, torch.full((1,), dummy, dtype=isect_flat.dtype, device=device)])
    i, n = 0, len(cnts)
    while i < n:
        K = cnts[i]
        cap = max(1, budget // (pixels_per_tile * min(K, block)))
        j = i + 1
        lo = ratio * K
        while j < n and j - i < cap and (cnts[j] >= lo or K - cnts[j] <= 8):
            j += 1
        tiles = torch.tensor(tiles_sorted[i:j], dtype=torch.int64, device=device)
        ar = torch.arange(K, device=device)
        pos = tile_offsets[tiles][:, None] + ar[None, :]
        valid = ar[None, :] < tile_counts[tiles][:, None]
        pos = torch.where(valid, pos, torch.full_like(pos, M))
        flat = flat_ext.index_select(0, pos.reshape(-1)).view(pos.shape)
        chunks.append(Chunk(tiles=tiles, flat=flat, counts=cnts[i:j]))
        i = j
    return chunks
