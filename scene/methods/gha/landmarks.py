"""GHA's canonical landmarks, head length and the expression / pose blend weights (paper eq. after 3).

GHA weighs each Gaussian's expression- and pose-driven changes by its distance to the canonical 3D
facial landmarks P0: lambda_exp = 1 closer than t1, 0 beyond t2, linear between, lambda_pose =
1 - lambda_exp, with t1 = 0.15 and t2 = 0.25 "when the length of the head is set to approximately 1".

Our FLAME has no landmark embedding, so P0 is a fixed set of canonical mesh vertices: those of the
chosen FLAME region masks (default: eye region, nose, lips, which hold the brow, eye, nose and mouth
landmarks of the usual 68), thinned by farthest-point sampling to ``n_landmarks`` points. The head
length is the largest side of the canonical mesh's bounding box, the unit in which t1 and t2 are read.
"""
from __future__ import annotations

import torch

from utils.errors import InputFileError

__all__ = ["farthest_points", "canonical_landmarks", "head_length", "landmark_distance", "expression_weight"]


def farthest_points(points: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (min(n, P),) of ``points`` (P, 3) chosen by farthest-point sampling, starting from
    the point nearest their centroid (deterministic)."""
    n = min(int(n), points.shape[0])
    first = int(((points - points.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    dist = ((points - points[first]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, ((points - points[nxt]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.long, device=points.device)


def canonical_landmarks(vertices: torch.Tensor, vertex_masks: dict, regions: list[str], n_landmarks: int,
                        where: str) -> torch.Tensor:
    """(L, 3) landmark points: the canonical ``vertices`` (V, 3) of the FLAME ``regions`` masks,
    thinned to ``n_landmarks`` by farthest-point sampling. A region the masks file lacks is one
    error naming ``where`` (the config key) and the regions it has."""
    missing = [r for r in regions if r not in vertex_masks]
    if missing:
        raise InputFileError(f"{where}: the FLAME masks have no region(s) {missing} (they have "
                             f"{sorted(vertex_masks) or 'none: no masks file'}); list regions they have")
    selected = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    for r in regions:
        selected |= vertex_masks[r].to(vertices.device)
    points = vertices[selected]
    if points.shape[0] == 0:
        raise InputFileError(f"{where}: the regions {regions} hold no vertices")
    return points[farthest_points(points, n_landmarks)].clone()


def head_length(vertices: torch.Tensor) -> float:
    """The largest side of the bounding box of ``vertices`` (V, 3): GHA's unit head length."""
    return float((vertices.max(0).values - vertices.min(0).values).max())


def landmark_distance(points: torch.Tensor, landmarks: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(N,) distance of each of ``points`` (N, 3) to its nearest of ``landmarks`` (L, 3)."""
    out = [torch.cdist(points[i:i + chunk], landmarks).min(1).values for i in range(0, points.shape[0], chunk)]
    return torch.cat(out) if out else points.new_zeros(0)


def expression_weight(distance: torch.Tensor, t1: float, t2: float) -> torch.Tensor:
    """lambda_exp (N,) of GHA: 1 for ``distance`` < t1, 0 beyond t2, (t2 - d) / (t2 - t1) between
    (distances and thresholds in the same unit). lambda_pose = 1 - lambda_exp."""
    return ((t2 - distance) / (t2 - t1)).clamp(0.0, 1.0)
