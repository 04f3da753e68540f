"""Class-balanced frame sampling (docs/DESIGN.md section 3.5, paper section 3.4).

Most training frames show small expressions; a few show large ones. Timesteps are grouped by
how their FLAME meshes differ from neutral, then training draws a class uniformly and a frame
uniformly inside it, so rare large expressions are seen as often as the common small ones.

Pipeline:
  1. :func:`expression_displacements` - per timestep, vertices of the expression mesh
     (expression + jaw + eyes; no global rotation, neck or translation) minus the canonical mesh.
  2. :func:`timestep_distance_matrix` - mean per-vertex Euclidean distance between two
     timesteps' displacements over face-region vertices, eye-region vertices weighted x2
     (weighted mean). (The paper writes a weighted squared L2; this code uses the mean distance.)
  3. :func:`cluster_timesteps` - spectral clustering (scikit-learn) of a Gaussian-kernel
     affinity of that distance into 16 classes.
  4. :class:`ClassBalancedSampler` - the infinite frame-index stream; :class:`UniformFrameSampler`
     is the ablation with the same interface.
  5. :func:`save_clusters` / :func:`load_clusters` - cache of step 3, keyed on the training
     timesteps and the settings (:func:`cluster_settings`: a digest of the expressions, the
     clustering settings and :data:`CLUSTER_CODE_VERSION`), so that one entry serves every run of
     a subject (the trainer keeps it in :class:`scene.data.subject_cache.SubjectCache`), and the
     distances of step 2 (the quadratic part) under :func:`distance_cache_key`, which leaves out
     seed and number of classes: every seed and ablation of a subject shares them.

Step 2 has a plain reference (:func:`timestep_distance_matrix`, on the CPU) and the fast path the
trainer uses (:func:`expression_distance_matrix`: on the run's device, in cache-sized blocks, with
progress); they agree to float rounding, and the classes are the same.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from utils.atomic import atomic_write

__all__ = [
    "cluster_expressions",
    "expression_displacements",
    "timestep_distance_matrix",
    "expression_distance_matrix",
    "distance_block",
    "COMPILED_MIN_WORK",
    "cluster_timesteps",
    "ClassBalancedSampler",
    "UniformFrameSampler",
    "UniformSampler",
    "cluster_cache_key",
    "distance_cache_key",
    "expression_distances",
    "cluster_settings",
    "clusters_document",
    "CLUSTER_CODE_VERSION",
    "save_clusters",
    "load_clusters",
    "frame_draw_ratio",
]


# ----------------------------------------------------------------------------- distances


@dataclass
class SamplingConfig:
    class_balanced: bool = True
    n_classes: int = 16
    # How far the classes are balanced (alpha): a frame of a class of n frames is drawn with weight
    # n^-alpha, so a class is drawn with probability proportional to n^(1 - alpha). 1 = class-uniform
    # (the paper: every class alike, so a frame of a small class is seen (largest / smallest) times
    # as often as one of the largest); 0 = every frame alike (as class_balanced: false, but with the
    # classes computed); between: the rare expressions favoured less. Used when class_balanced.
    balance: float = 1.0


def frame_draw_ratio(class_sizes, balance: float) -> float:
    """How many times as often a frame of the smallest class is drawn as one of the largest:
    (largest / smallest)^alpha for ``class_sizes`` (frame or timestep counts) and ``balance`` alpha."""
    return (max(class_sizes) / min(class_sizes)) ** float(balance)


def expression_displacements(expression_verts: torch.Tensor, canonical_verts: torch.Tensor) -> torch.Tensor:
    """Per-vertex displacement from neutral.

    Args:
        expression_verts: (T, V, 3) FLAME vertices per timestep with expression, jaw and eye
            poses applied and rotation, neck and translation zero (same shape + static offset
            as the canonical mesh).
        canonical_verts: (V, 3) or (1, V, 3) canonical mesh.
    Returns:
        (T, V, 3) displacements.
    """
    return expression_verts - canonical_verts.reshape(1, -1, 3)


def _vertex_index(sel, n_verts: int) -> torch.Tensor:
    """Long indices from an index list or a (V,) bool mask."""
    t = torch.as_tensor(np.asarray(sel))
    if t.dtype == torch.bool:
        if t.numel() != n_verts:
            raise ValueError(f"vertex mask has {t.numel()} entries, mesh has {n_verts} vertices")
        return t.nonzero(as_tuple=True)[0]
    return t.reshape(-1).long()


def timestep_distance_matrix(
    displacements: torch.Tensor,
    face_vertex_idx,
    eye_vertex_idx,
    eye_weight: float = 2.0,
    max_chunk_elements: int = 1 << 24,
) -> torch.Tensor:
    """Pairwise expression distance between timesteps.

    Args:
        displacements: (T, V, 3) from :func:`expression_displacements`.
        face_vertex_idx: face-region vertices, index list or (V,) bool mask.
        eye_vertex_idx: eye-region vertices, likewise (usually inside the face region; a vertex
            in both counts once, with the eye weight).
        eye_weight: weight of eye-region vertices (2, the paper's empirical value: eyes move
            far less than lips, so without it eye motion barely separates classes).
        max_chunk_elements: memory bound for the (rows, T, S, 3) difference block.
    Returns:
        (T, T) float32 symmetric, zero diagonal:
        dist(i, j) = sum_v w_v |D_i,v - D_j,v| / sum_v w_v over the selected vertices.
    """
    T, V, _ = displacements.shape
    sel, w = _selection_weights(V, face_vertex_idx, eye_vertex_idx, eye_weight)
    D = displacements.detach().to(torch.float32).cpu().index_select(1, sel)  # (T, S, 3)
    S = sel.numel()
    rows = max(1, int(max_chunk_elements // max(1, T * S * 3)))
    out = torch.zeros(T, T, dtype=torch.float32)
    for i0 in range(0, T, rows):
        i1 = min(T, i0 + rows)
        # Symmetric: only columns >= i0 are computed, the rest mirrored.
        diff = D[i0:i1, None] - D[None, i0:]  # (b, T - i0, S, 3)
        block = (diff.norm(dim=-1) * w).sum(-1)
        out[i0:i1, i0:] = block
        out[i0:, i0:i1] = block.t()
    out.fill_diagonal_(0.0)
    return out


def _selection_weights(n_vertices: int, face_vertex_idx, eye_vertex_idx, eye_weight: float):
    """(S,) selected vertex indices (face and eye regions) and (S,) float32 weights summing to 1."""
    face = _vertex_index(face_vertex_idx, n_vertices)
    eye = _vertex_index(eye_vertex_idx, n_vertices)
    sel = torch.unique(torch.cat([face, eye]))
    if sel.numel() == 0:
        raise ValueError("no face/eye vertices selected for the expression distance")
    w = torch.ones(sel.numel(), dtype=torch.float32)
    w[torch.isin(sel, eye)] = float(eye_weight)
    return sel, w / w.sum()


def expression_distance_matrix(
    displacements: torch.Tensor,
    face_vertex_idx,
    eye_vertex_idx,
    eye_weight: float = 2.0,
    max_block_elements: Optional[int] = None,
    progress: bool = False,
    compiled: Optional[bool] = None,
) -> torch.Tensor:
    """:func:`timestep_distance_matrix` on the displacements' device, in square blocks of bounded
    memory, with a progress bar: the fast path for thousands of timesteps.

    Args:
        displacements: (T, V, 3) from :func:`expression_displacements`, on any device.
        face_vertex_idx, eye_vertex_idx, eye_weight: as :func:`timestep_distance_matrix`.
        max_block_elements: bound on the (b, b, S) difference block of one coordinate (4 bytes
            each; about four such blocks are alive at a time). None: 2^22 on the CPU (64 MiB in
            all; smaller blocks mean more, shorter parallel operations, which cost more than they
            save on a busy CPU: 2^20 took 2.4x the CPU time there), 2^24 on a GPU.
        progress: a tqdm bar over the blocks.
        compiled: on the CPU, compute the blocks with one fused kernel built by ``torch.compile``
            (:func:`distance_block`; inductor's C++ backend, so a C++ compiler). None: when the
            work is large enough to repay building it (at least :data:`COMPILED_MIN_WORK`
            vertex-pairs, about 1,100 timesteps of FLAME's face) and a compiler is there
            (:func:`scene.rendering.compile_problem`); otherwise, or where the build fails (a
            warning), the plain blocked torch code. Ignored on a GPU (plain code, already fast).
    Returns:
        (T, T) float32 on the CPU: :func:`timestep_distance_matrix`'s values to float rounding
        (the per-vertex length is summed coordinate by coordinate, sqrt(dx^2 + dy^2 + dz^2),
        rather than by ``norm``: 2-3x faster on the CPU, within a few 1e-7 relative; the fused
        kernel sums the vertices in SIMD lanes, also within a few 1e-7 relative).

    Only blocks on and above the diagonal are computed (the matrix is symmetric), so T^2 / 2
    pairs in all; the coordinates are split so that each operation runs over contiguous memory.
    The plain path makes about ten passes over memory per block (differences, squares, sums,
    root, weights); the fused kernel reads each timestep's coordinates from cache and writes only
    the (b, b) result: about 20x less CPU time at 2,500 timesteps (docs/BENCHMARKS.md).
    """
    T, V, _ = displacements.shape
    device = displacements.device
    sel, w = _selection_weights(V, face_vertex_idx, eye_vertex_idx, eye_weight)
    # (3, T, S): one contiguous (T, S) plane per coordinate.
    X = displacements.detach().to(torch.float32).index_select(1, sel.to(device)).permute(2, 0, 1).contiguous()
    w = w.to(device)
    S = sel.numel()
    if device.type == "cpu" and _use_compiled(compiled, T, S):
        try:
            return _compiled_distance_matrix(X, w, progress)
        except Exception as exc:  # inductor's build errors have many types; the plain path is always there
            lines = str(exc).strip().splitlines()
            warnings.warn(f"the fused expression-distance kernel could not be built ({lines[0] if lines else type(exc).__name__}); "
                          "using the plain blocked code (same distances, slower)")
    if max_block_elements is None:
        max_block_elements = 1 << (24 if device.type == "cuda" else 22)
    b = max(1, min(T, math.isqrt(max(1, max_block_elements // S))))
    starts = list(range(0, T, b))
    out = torch.zeros(T, T, dtype=torch.float32, device=device)
    n_blocks = len(starts) * (len(starts) + 1) // 2
    with torch.no_grad(), tqdm(total=n_blocks, desc="expression distances", unit="block", disable=not progress,
                               leave=False) as bar:
        for i0 in starts:
            rows = X[:, i0:i0 + b, None]  # (3, bi, 1, S)
            for j0 in starts:
                if j0 < i0:
                    continue
                diff = rows - X[:, None, j0:j0 + b]  # (3, bi, bj, S)
                length = diff[0].square_().add_(diff[1].square_()).add_(diff[2].square_()).sqrt_()
                block = length.mul_(w).sum(-1)  # (bi, bj)
                out[i0:i0 + b, j0:j0 + b] = block
                out[j0:j0 + b, i0:i0 + b] = block.t()
                bar.update(1)
    out.fill_diagonal_(0.0)
    return out.cpu()


#: Vertex-pairs (T^2 / 2 x S) from which ``expression_distance_matrix`` builds its fused kernel by
#: default: below it the plain code takes less than building the kernel would (seconds).
COMPILED_MIN_WORK = 1 << 30
#: Timesteps per side of the fused kernel's blocks (one compiled shape; the last block is padded).
COMPILED_BLOCK = 256


def distance_block(rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean per-vertex distance between two sets of timesteps, as one expression for
    ``torch.compile`` to fuse (eagerly it would hold (bi, bj, S) tensors; the plain blocked path of
    :func:`expression_distance_matrix` is the eager reference).

    Args:
        rows: (3, bi, S) displacements, one (bi, S) plane per coordinate.
        cols: (3, bj, S) likewise.
        weights: (S,) vertex weights summing to 1.
    Returns:
        (bi, bj): sum_s weights[s] * sqrt(sum_c (rows[c, i, s] - cols[c, j, s])^2).
    """
    d0 = rows[0, :, None, :] - cols[0, None, :, :]
    d1 = rows[1, :, None, :] - cols[1, None, :, :]
    d2 = rows[2, :, None, :] - cols[2, None, :, :]
    return (torch.sqrt(d0 * d0 + d1 * d1 + d2 * d2) * weights).sum(-1)


@functools.cache
def _compiled_distance_block():
    # Static shapes: one kernel per (block, S), i.e. per FLAME model; inductor keeps it on disk.
    return torch.compile(distance_block, dynamic=False, fullgraph=True)


def _use_compiled(compiled: Optional[bool], T: int, S: int) -> bool:
    if compiled is False:
        return False
    if compiled is None and T * T * S // 2 < COMPILED_MIN_WORK:
        return False
    from scene.rendering import compile_problem  # the one test of inductor's C++ compiler

    problem = compile_problem("cpu")
    if problem is not None and compiled:
        warnings.warn(f"{problem}; the expression distances use the plain blocked code (same distances, slower)")
    return problem is None


def _compiled_distance_matrix(X: torch.Tensor, w: torch.Tensor, progress: bool) -> torch.Tensor:
    """(T, T) distances of the (3, T, S) CPU planes ``X`` with (S,) weights ``w`` by the fused
    :func:`distance_block` in :data:`COMPILED_BLOCK`-sized blocks on and above the diagonal."""
    _, T, S = X.shape
    b = COMPILED_BLOCK
    n = -(-T // b)
    padded = X.new_zeros(3, n * b, S)  # zero rows past T: their distances are dropped
    padded[:, :T] = X
    # (n, 3, b, S): every block contiguous with the same strides whatever T, so that one compiled
    # kernel serves every subject of a FLAME model.
    blocks = padded.reshape(3, n, b, S).permute(1, 0, 2, 3).contiguous()
    del padded
    kernel = _compiled_distance_block()
    out = torch.zeros(n * b, n * b, dtype=torch.float32)
    with torch.no_grad(), tqdm(total=n * (n + 1) // 2, desc="expression distances (fused)", unit="block",
                               disable=not progress, leave=False) as bar:
        for i in range(n):
            for j in range(i, n):
                block = kernel(blocks[i], blocks[j], w)
                out[i * b:(i + 1) * b, j * b:(j + 1) * b] = block
                out[j * b:(j + 1) * b, i * b:(i + 1) * b] = block.t()
                bar.update(1)
    out = out[:T, :T].contiguous()
    out.fill_diagonal_(0.0)
    return out


# ----------------------------------------------------------------------------- clustering


def _distinct_groups(distance: np.ndarray, tol: float) -> np.ndarray:
    """Label timesteps whose distance is <= tol (transitively) with the same group id."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, groups = connected_components(csr_matrix(distance <= tol), directed=False)
    return groups


def _relabel_by_first_occurrence(labels: np.ndarray) -> np.ndarray:
    """Map labels to 0..K-1 in order of first appearance (stable, no empty classes)."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    uniq = np.unique(labels)[order]
    remap = {int(u): i for i, u in enumerate(uniq)}
    return np.array([remap[int(l)] for l in labels], dtype=np.int64)


def cluster_timesteps(distance, n_classes: int = 16, seed: int = 0, duplicate_tol: float = 1e-12) -> np.ndarray:
    """Spectral clustering of timesteps.

    Args:
        distance: (T, T) symmetric distances (tensor or array).
        n_classes: wanted classes (16).
        seed: random state of the eigensolver start vector.
        duplicate_tol: timesteps this close count as the same expression.
    Returns:
        (T,) int64 labels in 0..K-1, numbered by first appearance, K = min(n_classes, number of
        distinct expressions). With K equal to the number of distinct expressions the groups of
        duplicates are the classes (spectral clustering would have nothing to decide).

    Affinity: A = exp(-d^2 / (2 sigma^2)) with sigma = median off-diagonal distance - a
    scale-free choice that works in metres or millimetres alike. Label assignment uses
    scikit-learn's "cluster_qr" (deterministic, no k-means restarts to seed).
    """
    d = np.asarray(distance.detach().cpu() if isinstance(distance, torch.Tensor) else distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance must be square (T, T), got {d.shape}")
    T = d.shape[0]
    if T == 0:
        return np.zeros(0, dtype=np.int64)
    d = 0.5 * (d + d.T)
    groups = _distinct_groups(d, duplicate_tol)
    n_distinct = int(groups.max()) + 1
    k = max(1, min(int(n_classes), n_distinct))
    if k == n_distinct:
        return _relabel_by_first_occurrence(groups)

    off = d[~np.eye(T, dtype=bool)]
    sigma = float(np.median(off))
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(off[off > 0].mean())
    affinity = np.exp(-(d ** 2) / (2.0 * sigma ** 2))

    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr")
    with warnings.catch_warnings():
        # Well-separated expression groups can give a (numerically) disconnected graph;
        # the spectral embedding handles that, the warning is noise here.
        warnings.filterwarnings("ignore", message=".*not fully connected.*")
        labels = model.fit_predict(affinity)
    return _relabel_by_first_occurrence(np.asarray(labels))


# ----------------------------------------------------------------------------- samplers


def expression_distances(expression_offsets: torch.Tensor, vertex_masks: dict, progress: bool = False) -> torch.Tensor:
    """The paper's expression distance between timesteps, on the offsets' device.

    Args:
        expression_offsets: (T, V, 3) each timestep's mesh with expression, jaw and eyes (no global
            pose or neck) minus the canonical mesh, on any device: the distances are computed there
            (:func:`expression_distance_matrix`).
        vertex_masks: FLAME's vertex masks; the distance looks at the "face" region (every vertex
            without it) and weights the "eye_region" twice (:func:`timestep_distance_matrix`).
        progress: a progress bar over the distance blocks.
    Returns:
        (T, T) float32 on the CPU.
    """
    n_vertices = expression_offsets.shape[1]
    face = vertex_masks["face"].cpu() if "face" in vertex_masks else torch.ones(n_vertices, dtype=torch.bool)
    eye = vertex_masks["eye_region"].cpu() if "eye_region" in vertex_masks else torch.zeros(n_vertices, dtype=torch.bool)
    return expression_distance_matrix(expression_offsets, face, eye, progress=progress)


def cluster_expressions(expression_offsets: torch.Tensor, vertex_masks: dict, n_classes: int, seed: int,
                        progress: bool = False) -> np.ndarray:
    """Expression classes of timesteps (the paper's class-balanced sampling): the spectral
    clusters (:func:`cluster_timesteps`) of :func:`expression_distances` (same arguments).

    Returns:
        (T,) class labels.
    """
    return cluster_timesteps(expression_distances(expression_offsets, vertex_masks, progress), n_classes=n_classes,
                             seed=seed)


class ClassBalancedSampler:
    """Infinite stream of training-frame indices, uniform over classes then over frames.

    Args:
        labels: (n_timesteps,) class per timestep.
        frame_timesteps: (n_frames,) timestep of each training frame (a frame = one
            (timestep, camera) image); values are entries of ``timesteps``. None: ``labels``
            already holds one class per frame.
        timesteps: (n_timesteps,) the timestep value that ``labels[i]`` belongs to; default
            0..n_timesteps-1 (i.e. ``frame_timesteps`` holds positions into ``labels``).
        seed: seed of the numpy PCG64 generator.
        balance: alpha of :class:`SamplingConfig` (1: a class uniformly, the paper's; below 1: a
            class with probability proportional to its frame count^(1 - alpha)).

    A frame inherits its timestep's class. Classes with no frame are dropped. Each draw takes
    two generator calls (class, then frame in class), so the stream is fully determined by the
    generator state: :meth:`state_dict` / :meth:`load_state_dict` resume it exactly. (When a
    DataLoader prefetches indices from this iterator, the saved state is ahead of what the
    trainer consumed; draw indices in the training loop itself for exact resume.)
    """

    kind = "class_balanced"

    def __init__(self, labels, frame_timesteps=None, timesteps=None, seed: int = 0, balance: float = 1.0) -> None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if frame_timesteps is None:
            frame_timesteps = np.arange(labels.shape[0])
        frame_timesteps = np.asarray(frame_timesteps, dtype=np.int64).reshape(-1)
        if timesteps is None:
            timesteps = np.arange(labels.shape[0])
        timesteps = np.asarray(timesteps, dtype=np.int64).reshape(-1)
        if timesteps.shape != labels.shape:
            raise ValueError("labels and timesteps must have the same length")
        if frame_timesteps.size == 0:
            raise ValueError("no training frames to sample from")
        lookup = {int(t): int(l) for t, l in zip(timesteps, labels)}
        missing = sorted({int(t) for t in frame_timesteps} - lookup.keys())
        if missing:
            raise ValueError(f"frames reference timesteps without a class label: {missing[:10]}")
        self.frame_classes = np.array([lookup[int(t)] for t in frame_timesteps], dtype=np.int64)
        self.class_frames = [np.flatnonzero(self.frame_classes == c) for c in np.unique(self.frame_classes)]
        self.n_frames = int(frame_timesteps.size)
        sizes = np.array([f.size for f in self.class_frames], dtype=np.float64)
        weights = sizes ** (1.0 - float(balance))
        # None: class-uniform draws exactly as they always were (one integer draw per class).
        self.class_probabilities = None if balance == 1.0 else weights / weights.sum()
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.n_drawn = 0

    @property
    def n_classes(self) -> int:
        """Number of non-empty classes."""
        return len(self.class_frames)

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self.class_probabilities is None:
            c = int(self._rng.integers(len(self.class_frames)))
        else:
            c = int(self._rng.choice(len(self.class_frames), p=self.class_probabilities))
        frames = self.class_frames[c]
        self.n_drawn += 1
        return int(frames[int(self._rng.integers(frames.size))])

    def next(self) -> int:
        """The next frame index (same as ``next(sampler)``)."""
        return self.__next__()

    def sample(self, n: int) -> np.ndarray:
        """The next ``n`` frame indices as an (n,) int64 array (same stream as ``next``)."""
        return np.array([next(self) for _ in range(n)], dtype=np.int64)

    def state_dict(self) -> Dict[str, Any]:
        """Resumable state (plain Python types, fits torch.save and JSON)."""
        return {"kind": self.kind, "rng": self._rng.bit_generator.state, "n_drawn": self.n_drawn}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next draws repeat the saved stream exactly."""
        if state.get("kind") != self.kind:
            raise ValueError(f"sampler state is for {state.get('kind')!r}, not {self.kind!r}")
        self._rng.bit_generator.state = state["rng"]
        self.n_drawn = int(state["n_drawn"])


class UniformFrameSampler:
    """Ablation sampler with the same interface: every frame equally often.

    Args:
        n_frames: number of training frames.
        seed: numpy PCG64 seed.
    Draws epochs of random permutations (like GA, which pops from a reshuffled list), so each
    frame appears once per epoch. State = generator state at the start of the current epoch +
    position in it; the permutation is regenerated on load.
    """

    kind = "uniform"

    def __init__(self, n_frames: int, seed: int = 0) -> None:
        if n_frames < 1:
            raise ValueError("no training frames to sample from")
        self.n_frames = int(n_frames)
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.n_drawn = 0
        self._new_epoch()

    def _new_epoch(self) -> None:
        self._epoch_state = self._rng.bit_generator.state
        self._perm = self._rng.permutation(self.n_frames)
        self._pos = 0

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self._pos >= self.n_frames:
            self._new_epoch()
        i = int(self._perm[self._pos])
        self._pos += 1
        self.n_drawn += 1
        return i

    def next(self) -> int:
        """The next frame index (same as ``next(sampler)``)."""
        return self.__next__()

    def sample(self, n: int) -> np.ndarray:
        """The next ``n`` frame indices as an (n,) int64 array."""
        return np.array([next(self) for _ in range(n)], dtype=np.int64)

    def state_dict(self) -> Dict[str, Any]:
        """Resumable state (plain Python types)."""
        return {"kind": self.kind, "epoch_rng": self._epoch_state, "pos": self._pos, "n_drawn": self.n_drawn}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly."""
        if state.get("kind") != self.kind:
            raise ValueError(f"sampler state is for {state.get('kind')!r}, not {self.kind!r}")
        self._rng.bit_generator.state = state["epoch_rng"]
        self._new_epoch()
        self._pos = int(state["pos"])
        self.n_drawn = int(state["n_drawn"])


UniformSampler = UniformFrameSampler  # short alias


# ----------------------------------------------------------------------------- cache

_CACHE_VERSION = 1
#: Version of the classes computed from given inputs: bump it whenever a change of this module
#: would give other classes for the same expressions (the cache keys include it).
CLUSTER_CODE_VERSION = 2


def cluster_settings(n_classes: int, seed: int, inputs_digest: str) -> Dict[str, Any]:
    """The ``meta`` of a content-keyed cache entry: everything the labels depend on.

    Args:
        n_classes, seed: the clustering's settings.
        inputs_digest: a digest of the expressions clustered (FLAME model, identity and the
            training timesteps' expression, jaw and eye parameters), e.g. from
            :func:`scene.data.subject_cache.content_digest`.
    """
    return {"n_classes": int(n_classes), "seed": int(seed), "eye_weight": 2.0, "duplicate_tol": 1e-12,
            "code": CLUSTER_CODE_VERSION, "inputs": inputs_digest}


def distance_cache_key(timesteps: Sequence[int], inputs_digest: str) -> str:
    """Key of the (T, T) :func:`expression_distances` of ``timesteps`` (in that order): seed and
    number of classes do not enter, so every seed and ablation of a subject shares them.

    Args:
        timesteps: the training timesteps, in the rows' order.
        inputs_digest: as :func:`cluster_settings`.
    """
    payload = {"distances": CLUSTER_CODE_VERSION, "eye_weight": 2.0, "inputs": inputs_digest,
               "timesteps": [int(t) for t in np.asarray(timesteps).reshape(-1)]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cluster_cache_key(timesteps: Sequence[int], meta: Dict[str, Any]) -> str:
    """sha256 over the sorted training timesteps and the settings in ``meta``.

    ``meta`` must hold ``n_classes`` and should hold everything else the labels depend on
    (:func:`cluster_settings`); it must be JSON-serialisable.
    """
    if "n_classes" not in meta:
        raise ValueError("cluster cache meta must include 'n_classes'")
    payload = {
        "version": _CACHE_VERSION,
        "timesteps": sorted(int(t) for t in np.asarray(timesteps).reshape(-1)),
        "meta": meta,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def clusters_document(labels, timesteps, meta: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON document :func:`save_clusters` writes and :func:`load_clusters` reads.

    Args:
        labels: (T,) class per timestep.
        timesteps: (T,) timestep values the labels belong to.
        meta: settings dict (see :func:`cluster_cache_key`).
    """
    labels = [int(l) for l in np.asarray(labels).reshape(-1)]
    timesteps = [int(t) for t in np.asarray(timesteps).reshape(-1)]
    if len(labels) != len(timesteps):
        raise ValueError("labels and timesteps must have the same length")
    return {
        "version": _CACHE_VERSION,
        "key": cluster_cache_key(timesteps, meta),
        "timesteps": timesteps,
        "labels": labels,
        "meta": meta,
    }


def save_clusters(path, labels, timesteps, meta: Dict[str, Any]) -> None:
    """Write :func:`clusters_document` as JSON, atomically (:func:`utils.atomic.atomic_write`);
    folders are created."""
    doc = clusters_document(labels, timesteps, meta)
    with atomic_write(path) as f:
        json.dump(doc, f)


def load_clusters(
    path, timesteps: Optional[Sequence[int]] = None, meta: Optional[Dict[str, Any]] = None
) -> Optional[Tuple[np.ndarray, np.ndarray, Dict[str, Any]]]:
    """Read a cache written by :func:`save_clusters`.

    Args:
        path: the .json file.
        timesteps, meta: the current training timesteps and settings; when both are given the
            cache is used only if its key matches, and labels come back in the order of
            ``timesteps``.
    Returns:
        (labels (T,) int64, timesteps (T,) int64, meta) or None when the file is missing,
        unreadable, from another version, or stale (key mismatch) - the caller re-clusters.
    """
    try:
        with open(path) as f:
            doc = json.load(f)
        if doc.get("version") != _CACHE_VERSION:
            return None
        labels = np.asarray(doc["labels"], dtype=np.int64)
        stored_ts = np.asarray(doc["timesteps"], dtype=np.int64)
        stored_meta = doc["meta"]
        if doc["key"] != cluster_cache_key(stored_ts, stored_meta):
            return None  # edited or corrupted by hand
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if timesteps is not None and meta is not None:
        if cluster_cache_key(timesteps, meta) != doc["key"]:
            return None
        pos = {int(t): i for i, t in enumerate(stored_ts)}
        want = np.asarray(timesteps, dtype=np.int64).reshape(-1)
        return labels[[pos[int(t)] for t in want]], want, stored_meta
    return labels, stored_ts, stored_meta
