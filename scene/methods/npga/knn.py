"""NPGA's Laplacian smoothness (paper eq. 11) on the k-nearest-neighbour graph of the canonical
Gaussian centres.

    R_lap(x) = mean_i || (1 / |N_i|) sum_{j in N_i} x_j - x_i ||_2^2

for per-splat quantities x (the latent features f, the predicted offsets of G). The paper sums
over splats; the mean keeps the weight independent of the splat count (ours).
"""
from __future__ import annotations

import torch

__all__ = ["knn_graph", "laplacian_smoothness"]


@torch.no_grad()
def knn_graph(points: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(N, min(k, N - 1)) int64 indices of each point's k nearest other points among ``points``
    (N, 3), nearest first. A point is never its own neighbour, even where another point sits at the
    same place (a fresh clone). Rows of ``chunk`` points at a time: memory chunk x N."""
    n = points.shape[0]
    k = min(int(k), n - 1)
    if k <= 0:
        return torch.zeros(n, 0, dtype=torch.long, device=points.device)
    out = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=points.device)
        d = torch.cdist(points[rows], points)  # (c, N)
        d[torch.arange(rows.shape[0], device=points.device), rows] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def laplacian_smoothness(values: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """() R_lap of ``values`` (N, D) on the graph ``neighbours`` (N, k) (:func:`knn_graph`): the
    mean over points of the squared distance of their value to their neighbours' mean value."""
    if values.shape[0] == 0 or neighbours.shape[1] == 0:
        return values.sum() * 0.0
    # index_select, whose gradient (index_add_ along dim 0) sums in index order: advanced
    # indexing's (index_put_ with accumulate) adds concurrently on the CPU, so its sums' rounding
    # (and a resumed run) would vary from run to run.
    gathered = values.index_select(0, neighbours.reshape(-1)).reshape(*neighbours.shape, values.shape[1])
    mean = gathered.mean(1)  # (N, D)
    return (mean - values).square().sum(1).mean()
