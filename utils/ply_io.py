"""Reading splat PLY files (ours, standard 3DGS, GaussianAvatars'): one opener, one column reader.

All three layouts keep splats in the ``vertex`` element with float fields ``x y z opacity scale_*
rot_*`` and, with per-splat colour, ``f_dc_0..2`` and ``f_rest_*`` stored channel-major (all
coefficients of R, then G, then B), as 3DGS writes them.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData

from utils.errors import InputFileError, MissingFileError


class VertexTable:
    """The ``vertex`` element of a PLY file, with float32 column access.

    Attributes:
        path: the file; names: its field names; n: number of splats.
    """

    def __init__(self, vertex, path: Path):
        self.vertex = vertex
        self.path = path
        self.names = vertex.data.dtype.names
        self.n = len(vertex.data)

    def columns(self, *keys: str) -> torch.Tensor:
        """(n, len(keys)) float32 tensor of the named fields."""
        return torch.from_numpy(np.stack([np.asarray(self.vertex[k], np.float32) for k in keys], 1))

    @property
    def n_rest(self) -> int:
        return sum(1 for name in self.names if name.startswith("f_rest_"))

    def sh_rest(self) -> torch.Tensor:
        """(n, n_rest // 3, 3) higher-order SH coefficients from the channel-major ``f_rest_*``."""
        k = self.n_rest // 3
        if k == 0:
            return torch.zeros(self.n, 0, 3)
        return self.columns(*[f"f_rest_{i}" for i in range(self.n_rest)]).reshape(self.n, 3, k).transpose(1, 2).contiguous()

    def sh_degree(self, error: type = InputFileError) -> int:
        """The SH degree (0..3) that ``f_rest_*`` holds; ``error`` when the count makes none."""
        k = self.n_rest // 3 + 1
        degree = int(round(math.sqrt(k))) - 1
        if self.n_rest % 3 or (degree + 1) ** 2 != k or degree > 3:
            raise error(f"{self.path}: {self.n_rest} f_rest fields do not make SH of degree 0..3")
        return degree


def read_vertex_table(path: str | Path, required: list[str], what: str, hint: str = "",
                      error: type = InputFileError) -> VertexTable:
    """Open PLY ``path`` and check that its vertex element has the ``required`` fields.

    Raises MissingFileError ("<what> not found"), or ``error`` naming the file when it is not a
    readable PLY or lacks fields (``hint`` says what such a file should hold).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as exc:  # plyfile raises several types for corrupt files
        raise error(f"{path}: not a readable PLY file ({exc})") from None
    table = VertexTable(vertex, path)
    missing = [name for name in required if name not in table.names]
    if missing:
        raise error(f"{path}: {what} lacks the fields {missing}{'; ' + hint if hint else ''}")
    return table
