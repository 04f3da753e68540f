"""Read the official FLAME pickles without chumpy and without trusting the file.

The official ``flame2023.pkl`` / ``generic_model.pkl`` were written by Python 2 with arrays stored
as chumpy ``Ch`` objects and ``J_regressor`` as a scipy sparse matrix under module paths that no
longer exist (``scipy.sparse.csc``). numpy 2 renamed ``numpy.core`` to ``numpy._core``. A plain
``pickle.load`` therefore needs chumpy (unmaintained, broken on numpy 2) and would also execute
whatever a tampered file asks for. :class:`RestrictedUnpickler` resolves only an allow-list of
globals:

- any ``chumpy.*`` class -> a stand-in whose ``__setstate__`` keeps the pickled state; a plain
  ``Ch`` pickles ``__dict__`` (minus its weak references), where the array is under ``'x'``;
- ``scipy.sparse.*`` csc/csr/coo classes under any module path (``scipy.sparse.csc``,
  ``scipy.sparse._csc``, ...) -> the current scipy classes;
- the few numpy reconstruction helpers under ``numpy.core.*`` or ``numpy._core.*``;
- a few harmless builtins and ``copyreg`` helpers that protocol 0-2 pickles use.

Anything else raises :class:`~flame_model.paths.UnsafePickleError` naming the file and the global.
:func:`to_array` then turns every loaded value into a plain ``numpy.ndarray`` (sparse -> dense).
"""
from __future__ import annotations

import copyreg
import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .paths import FlameFileError, UnsafePickleError

__all__ = ["ChumpyStandIn", "RestrictedUnpickler", "load_pickle", "to_array"]

# Python 2 module names -> Python 3 (the C unpickler does this inside the default find_class,
# which we replace, so it has to be done here).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_PY2_NAMES = {("__builtin__", "long"): ("builtins", "int"), ("__builtin__", "unicode"): ("builtins", "str"),
              ("__builtin__", "basestring"): ("builtins", "str"), ("__builtin__", "xrange"): ("builtins", "range")}

# Builtins that only build plain data (no attribute access, evaluation or I/O).
_SAFE_BUILTINS = frozenset({"object", "set", "frozenset", "dict", "list", "tuple", "slice", "complex", "int",
                            "float", "str", "bytes", "bytearray", "bool", "range"})
# numpy's pickle helpers, keyed by the sub-module of numpy.core / numpy._core they live in.
_NUMPY_CORE_NAMES = {"multiarray": frozenset({"_reconstruct", "scalar"}),
                     "numeric": frozenset({"_frombuffer"})}
_NUMPY_TOP_NAMES = frozenset({"ndarray", "dtype"})
_SPARSE_NAMES = frozenset({"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"})


class ChumpyStandIn:
    """Stand-in for any pickled chumpy object; holds the pickled state instead of a graph node.

    ``chumpy_path`` (class attribute) is the original ``module.Class``. A plain ``chumpy.ch.Ch``
    stores its value under ``state['x']``; derived chumpy expressions have no ``'x'`` and cannot be
    evaluated without chumpy (:attr:`array` is then None).
    """

    chumpy_path = "chumpy.ch.Ch"

    def __init__(self, *args, **kwargs):  # called only for REDUCE-style pickles; keep an x if given
        self.state = {"x": args[0]} if args else {}

    def __setstate__(self, state: Any) -> None:
        # __reduce_ex__ may deliver (dict_state, slot_state); chumpy itself uses a plain dict.
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        self.state = state

    @property
    def array(self) -> Any:
        """The wrapped value (may itself be a stand-in or sparse matrix), or None."""
        if isinstance(self.state, dict):
            return self.state.get("x")
        return None

    def __array__(self, dtype=None, copy=None):
        value = self.array
        if value is None:
            raise TypeError(f"pickled {self.chumpy_path} object has no stored array 'x' (a chumpy expression)")
        return np.asarray(to_array(value), dtype=dtype)

    def __repr__(self) -> str:
        return f"<stand-in for {self.chumpy_path}>"


_STAND_INS: dict[str, type] = {}


def _chumpy_stand_in(module: str, name: str) -> type:
    """One stand-in subclass per chumpy class path, so error messages can name the original."""
    path = f"{module}.{name}"
    if path not in _STAND_INS:
        _STAND_INS[path] = type(name, (ChumpyStandIn,), {"chumpy_path": path, "__module__": __name__})
    return _STAND_INS[path]


def _import_numpy_core(sub: str):
    # numpy >= 2 (and 1.26's forward-compat shim) has numpy._core; older numpy only numpy.core.
    for prefix in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{prefix}.{sub}")
        except ImportError:
            continue
    raise ImportError(f"numpy has neither numpy._core.{sub} nor numpy.core.{sub}")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` (latin1, for Python 2 pickles) with an allow-list of globals.

    Args:
        file: binary file object.
        source: path shown in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str | os.PathLike):
        super().__init__(file, encoding="latin1")
        self.source = str(source)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 (pickle API)
        module, name = _PY2_NAMES.get((module, name), (_PY2_MODULES.get(module, module), name))
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_stand_in(module, name)
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_NAMES:
            import scipy.sparse  # imported lazily: only pickles with sparse matrices need scipy
            return getattr(scipy.sparse, name)
        if module == "numpy" and name in _NUMPY_TOP_NAMES:
            return getattr(np, name)
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix):
                sub = module[len(prefix):]
                if name in _NUMPY_CORE_NAMES.get(sub, ()):
                    return getattr(_import_numpy_core(sub), name)
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "copyreg" and name in ("_reconstructor", "__newobj__"):
            # Both only instantiate a class that itself had to pass this allow-list.
            return getattr(copyreg, name)
        if module == "_codecs" and name == "encode":
            # Python 3 protocol 0-2 pickles store bytes as latin1 text re-encoded with this.
            import _codecs
            return _codecs.encode
        raise UnsafePickleError(
            f"{self.source}: refusing to load '{module}.{name}' from this pickle: a FLAME model or masks "
            f"file may only contain numpy arrays, scipy sparse matrices and chumpy arrays. Re-download the "
            f"file from the official site if it was modified.")


def load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle with :class:`RestrictedUnpickler`.

    Args:
        path: an existing file (existence is the caller's business: it knows the download hint).

    Returns:
        The unpickled object; chumpy values are :class:`ChumpyStandIn` instances.

    Raises:
        UnsafePickleError: a global outside the allow-list.
        FlameFileError: the file is not a readable pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path).load()
    except FlameFileError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError,
            ValueError, UnicodeDecodeError, MemoryError, OSError) as exc:
        raise FlameFileError(f"{path}: not a readable FLAME pickle ({type(exc).__name__}: {exc}). "
                             f"Re-download it from the official site.") from exc


def _is_sparse(value: Any) -> bool:
    try:
        import scipy.sparse
    except ImportError:  # pragma: no cover - scipy is a runtime requirement
        return False
    return scipy.sparse.issparse(value)


def _sparse_to_dense(value: Any) -> np.ndarray:
    """Dense copy of a (possibly old-scipy-pickled) sparse matrix."""
    try:
        return np.asarray(value.toarray())
    except Exception:
        # Very old pickles may miss attributes the current class expects; rebuild from raw fields.
        state = vars(value)
        shape = tuple(state.get("_shape", state.get("shape")))
        fmt = type(value).__name__[:3]
        dense = np.zeros(shape, dtype=np.asarray(state["data"]).dtype)
        if fmt in ("csc", "csr"):
            indptr, indices, data = (np.asarray(state[k]) for k in ("indptr", "indices", "data"))
            for outer in range(len(indptr) - 1):
                sl = slice(indptr[outer], indptr[outer + 1])
                if fmt == "csc":
                    np.add.at(dense, (indices[sl], outer), data[sl])
                else:
                    np.add.at(dense, (outer, indices[sl]), data[sl])
            return dense
        if fmt == "coo":
            row, col = state["coords"] if "coords" in state else (state["row"], state["col"])
            np.add.at(dense, (np.asarray(row), np.asarray(col)), np.asarray(state["data"]))
            return dense
        raise


def to_array(value: Any) -> np.ndarray:
    """Convert a loaded value to a plain ``numpy.ndarray``.

    Args:
        value: ndarray, chumpy stand-in, scipy sparse matrix, list or scalar.

    Returns:
        A plain array (sparse matrices densified).

    Raises:
        TypeError: the value cannot be made a numeric array (e.g. a chumpy expression).
    """
    if isinstance(value, ChumpyStandIn):
        inner = value.array
        if inner is None:
            raise TypeError(f"it holds a {value.chumpy_path} object without a stored array "
                            f"(a chumpy expression, which cannot be evaluated without chumpy)")
        return to_array(inner)
    if _is_sparse(value):
        return _sparse_to_dense(value)
    arr = np.asarray(value)
    if arr.dtype == object:
        raise TypeError(f"it holds a non-numeric {type(value).__name__}")
    return arr
