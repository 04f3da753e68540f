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


def bin_gaussians(
    means2d: torch.Tensor,
    radii_xy: torch.Tensor,
    depths: torch.Tensor,
    visible: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
):
    """Build the depth-sorted (tile, splat) intersection list.

    Args: (C, N, 2) means2d, (C, N, 2) int radii, (C, N) depths, (C, N) bool visible (no grad).
    Returns ``(isect_flat (M,), tile_counts (C*T,), tile_offsets (C*T,), tiles_per_gauss (C, N))``
    where the M intersections are grouped by global tile id and depth-sorted within a tile, and
    ``isect_flat`` holds flat splat ids ``camera * N + splat``.
    """
    C, N = depths.shape
    device = depths.device
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    tpc = tiles_x * tiles_y

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

    flat_vis = torch.nonzero(per_gauss.reshape(-1) > 0).squeeze(1)  # (V,) flat ids
    if flat_vis.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        counts = torch.zeros(C * tpc, dtype=torch.int64, device=device)
        return empty, counts, counts.clone(), tiles_per_gauss
    # Depth order first (stable: equal depths keep the splat order), then a stable sort by tile.
    d = depths.reshape(-1).index_select(0, flat_vis)
    flat_vis = flat_vis.index_select(0, torch.sort(d, stable=True).indices)
    cnt = per_gauss.reshape(-1).index_select(0, flat_vis)
    start = torch.cumsum(cnt, 0) - cnt
    cam = torch.div(flat_vis, N, rounding_mode="floor")
    # per visible splat: [first tile id of its box, box width, first intersection index]
    first = cam * tpc + y0.reshape(-1).index_select(0, flat_vis) * tiles_x + x0.reshape(-1).index_select(0, flat_vis)
    info = torch.stack([first, (x1 - x0).reshape(-1).index_select(0, flat_vis), start, flat_vis], dim=1)

    V = flat_vis.numel()
    rep = torch.repeat_interleave(torch.arange(V, device=device), cnt)
    per = info.index_select(0, rep)  # (M, 4)
    j = torch.arange(rep.numel(), device=device) - per[:, 2]
    wr = per[:, 1]
    row = torch.div(j, wr, rounding_mode="floor")
    tile = per[:, 0] + row * tiles_x + (j - row * wr)
    tile_sorted, perm = torch.sort(tile, stable=True)
    isect_flat = per[:, 3].index_select(0, perm)
    counts = torch.bincount(tile_sorted, minlength=C * tpc)
    offsets = torch.cumsum(counts, 0) - counts
    return isect_flat, counts, offsets, tiles_per_gauss


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
