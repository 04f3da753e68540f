"""Fake FLAME pickles for tests (no real FLAME is available here).

:func:`make_small_model` builds a tiny head with FLAME's layout (5 joints, kintree with the
uint32 root marker, sparse J_regressor, shapedirs with 300 identity + E expression columns):
a sphere of "skin" vertices, two eyeballs skinned to the eye joints, and two 15-vertex lip rings
(upper lip on the neck joint, lower lip on the jaw) stored in the masks pickle the way the
synthetic head does. :func:`make_flame_sized_model` has FLAME's counts (5023 vertices, 9976
faces) with FLAME's built-in lip-ring indices placed on a mouth. :func:`write_pickle` can store the
arrays as chumpy ``Ch`` objects (from a fake ``chumpy`` module that exists only while pickling)
and rewrite module paths to the old ``scipy.sparse.csc`` / ``numpy.core`` spellings.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT_PARENT = 4294967295  # FLAME stores the root's parent as uint32(-1)
FLAME_RING_UPPER = [1713, 1715, 1716, 1735, 1696, 1694, 1657, 3543, 2774, 2811, 2813, 2850, 2833, 2832, 2830]
FLAME_RING_LOWER = [1576, 1577, 1773, 1774, 1795, 1802, 1865, 3503, 2948, 2905, 2898, 2881, 2880, 2713, 2712]
CHUMPY_KEYS = ("v_template", "shapedirs", "posedirs", "weights", "J")


def _fibonacci_sphere(n: int, radius: float) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return radius * np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], 1)


def _mouth_rings(n: int = 15, half_width: float = 0.025, z0: float = 0.09, gap: float = 0.008):
    """Upper/lower outer lip rings, ordered along +x, curved back at the corners."""
    x = np.linspace(-half_width, half_width, n)
    z = z0 - 20.0 * x ** 2
    upper = np.stack([x, np.full(n, -0.03 + gap / 2) + 0.002 * np.cos(x * 60), z], 1)
    lower = np.stack([x, np.full(n, -0.03 - gap / 2) - 0.002 * np.cos(x * 60), z], 1)
    return upper, lower


def _sparse_regressor(rng, groups, num_verts):
    rows, cols, vals = [], [], []
    for k, idx in enumerate(groups):
        w = rng.uniform(0.5, 1.5, len(idx))
        rows += [k] * len(idx)
        cols += list(idx)
        vals += list(w / w.sum())
    return sp.csc_matrix((vals, (rows, cols)), shape=(len(groups), num_verts))


def make_small_model(seed: int = 0, n_expr: int = 100, posedirs_scale: float = 1e-3, num_skin: int = 120):
    """A tiny FLAME-layout head.

    Returns:
        model: dict with FLAME keys (numpy / scipy arrays, float64), plus ``J``.
        masks: dict region -> vertex indices, incl. ``lip_outside_ring_upper/lower``.
    """
    rng = np.random.default_rng(seed)
    skin = _fibonacci_sphere(num_skin, 0.1)
    eye_l = _fibonacci_sphere(8, 0.012) + [0.032, 0.03, 0.075]
    eye_r = _fibonacci_sphere(8, 0.012) + [-0.032, 0.03, 0.075]
    upper, lower = _mouth_rings()
    v = np.concatenate([skin, eye_l, eye_r, upper, lower], 0)
    num_verts = v.shape[0]
    ids_skin = np.arange(num_skin)
    ids_eye_l = num_skin + np.arange(8)
    ids_eye_r = num_skin + 8 + np.arange(8)
    ids_up = num_skin + 16 + np.arange(15)
    ids_low = num_skin + 31 + np.arange(15)

    weights = np.zeros((num_verts, 5))
    y = skin[:, 1]
    neck_w = np.clip((y + 0.07) / 0.05, 0.0, 1.0)  # smooth root->neck transition along the neck
    weights[ids_skin, 0] = 1 - neck_w
    weights[ids_skin, 1] = neck_w
    chin = ids_skin[(skin[:, 2] > 0.02) & (y < -0.02) & (y > -0.08)]
    weights[chin, 2] = 0.6 * weights[chin, 1]  # chin skin shares neck and jaw
    weights[chin, 1] *= 0.4
    weights[ids_eye_l, 3] = 1
    weights[ids_eye_r, 4] = 1
    weights[ids_up, 1] = 1
    weights[ids_low, 2] = 1

    groups = [ids_skin[y < -0.08], ids_skin[(y > -0.06) & (y < -0.03)], ids_low, ids_eye_l, ids_eye_r]
    j_reg = _sparse_regressor(rng, groups, num_verts)
    n_comp = 300 + n_expr
    # smooth-ish: a few random low-frequency fields of the rest position, plus small noise
    basis = np.concatenate([v, v ** 2 * 10, np.sin(v * 30)], 1)  # (V, 9)
    shapedirs = np.einsum("vf,fdc->vdc", basis, rng.normal(0, 1e-3, (9, 3, n_comp))) \
        + rng.normal(0, 1e-4, (num_verts, 3, n_comp))
    posedirs = rng.normal(0, posedirs_scale, (num_verts, 3, 36))
    faces = np.concatenate([
        rng.choice(ids_skin, (150, 3), replace=True),
        np.stack([ids_up[:-1], ids_low[:-1], ids_up[1:]], 1),
        rng.choice(ids_eye_l, (6, 3)), rng.choice(ids_eye_r, (6, 3))], 0).astype(np.uint32)
    model = {
        "v_template": v, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": j_reg,
        "weights": weights, "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "f": faces, "J": np.asarray(j_reg @ v), "bs_style": "lbs", "bs_type": "lrotmin",
    }
    masks = {
        "face": ids_skin[skin[:, 2] > 0.0], "neck": ids_skin[y < -0.06],
        "left_eyeball": ids_eye_l, "right_eyeball": ids_eye_r, "lips": np.concatenate([ids_up, ids_low]),
        "lip_outside_ring_upper": ids_up, "lip_outside_ring_lower": ids_low,
    }
    return model, masks


def make_flame_sized_model(seed: int = 1, n_comp: int = 310):
    """FLAME's vertex/face counts with FLAME's built-in lip rings on a mouth; float32 directions."""
    rng = np.random.default_rng(seed)
    num_verts, num_faces = 5023, 9976
    v = _fibonacci_sphere(num_verts, 0.1)
    upper, lower = _mouth_rings()
    v[FLAME_RING_UPPER] = upper
    v[FLAME_RING_LOWER] = lower
    weights = rng.uniform(0, 1, (num_verts, 5))
    weights /= weights.sum(1, keepdims=True)
    groups = [rng.choice(num_verts, 6, replace=False) for _ in range(5)]
    model = {
        "v_template": v, "shapedirs": rng.normal(0, 1e-3, (num_verts, 3, n_comp)).astype(np.float32),
        "posedirs": rng.normal(0, 1e-4, (num_verts, 3, 36)).astype(np.float32),
        "J_regressor": _sparse_regressor(rng, groups, num_verts), "weights": weights,
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "f": rng.integers(0, num_verts, (num_faces, 3)).astype(np.uint32),
    }
    masks = {"face": np.arange(0, 3000), "lips": np.array(FLAME_RING_UPPER + FLAME_RING_LOWER),
             "left_eyeball": np.arange(3931, 4477), "right_eyeball": np.arange(4477, 5023)}
    return model, masks


@contextlib.contextmanager
def fake_chumpy():
    """Temporarily install a fake ``chumpy`` / ``chumpy.ch`` with a ``Ch`` that pickles like chumpy's.

    Yields:
        (Ch, Add): a plain array holder (state dict with ``'x'``) and a derived expression class
        (``chumpy.ch_ops.add``, state without ``'x'``).
    """
    pkg, ch_mod, ops_mod = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.ch_ops"))

    class Ch:
        def __init__(self, x):
            # the attributes chumpy's Ch.__new__ sets, minus the weak references __getstate__ drops
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

        def __getstate__(self):
            return dict(self.__dict__)

    class add:  # noqa: N801 (chumpy's name)
        def __init__(self, a, b):
            self.a, self.b = a, b
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    ch_mod.Ch, ops_mod.add, pkg.Ch, pkg.ch, pkg.ch_ops = Ch, add, Ch, ch_mod, ops_mod
    saved = {n: sys.modules.get(n) for n in ("chumpy", "chumpy.ch", "chumpy.ch_ops")}
    sys.modules.update({"chumpy": pkg, "chumpy.ch": ch_mod, "chumpy.ch_ops": ops_mod})
    try:
        yield Ch, add
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def write_pickle(path: Path, data: dict, chumpy: bool = False, legacy_paths: bool = False, protocol: int = 2,
                 chumpy_expression_key: str | None = None) -> Path:
    """Pickle ``data`` the way the official files look.

    Args:
        chumpy: store :data:`CHUMPY_KEYS` arrays as chumpy ``Ch`` objects.
        legacy_paths: rewrite ``scipy.sparse._csc`` -> ``scipy.sparse.csc`` and ``numpy._core`` ->
            ``numpy.core`` (needs protocol <= 3, where globals are newline-terminated text).
        chumpy_expression_key: also store this key as a ``chumpy.ch_ops.add`` expression (no ``'x'``).
    """
    data = dict(data)
    with fake_chumpy() as (Ch, Add):
        if chumpy:
            for k in CHUMPY_KEYS:
                if k in data:
                    data[k] = Ch(data[k])
        if chumpy_expression_key:
            data[chumpy_expression_key] = Add(Ch(np.zeros(3)), Ch(np.ones(3)))
        blob = pickle.dumps(data, protocol=protocol)
    if legacy_paths:
        assert protocol <= 3
        blob = blob.replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n").replace(b"numpy._core.", b"numpy.core.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def dense(model: dict) -> dict:
    """Model arrays as plain float64 numpy (the values the loader must reproduce)."""
    out = {}
    for k in ("v_template", "shapedirs", "posedirs", "weights"):
        out[k] = np.asarray(model[k], dtype=np.float64)
    out["J_regressor"] = np.asarray(model["J_regressor"].toarray() if sp.issparse(model["J_regressor"])
                                    else model["J_regressor"], dtype=np.float64)
    out["f"] = np.asarray(model["f"], dtype=np.int64)
    return out


def write_small_flame(folder: Path) -> tuple[Path, int]:
    """The small FLAME-layout head as ``folder/flame2023.pkl`` with ``FLAME_masks.pkl`` beside it;
    returns (model path, vertex count with teeth) for fake subjects that fit it."""
    import pickle

    from flame_model import FLAME
    model, masks = make_small_model()
    model.pop("J", None)
    path = write_pickle(Path(folder) / "flame2023.pkl", model)
    with open(Path(folder) / "FLAME_masks.pkl", "wb") as f:
        pickle.dump(masks, f)
    return path, FLAME(path).num_vertices

