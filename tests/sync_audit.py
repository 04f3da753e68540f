"""Host-device synchronisations, found on the CPU: a dispatch mode that records every ATen call
which, on a CUDA tensor, makes the host wait for the device (or copies host data to it, which a
CUDA graph cannot capture).

On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` is the authority (bench/gpu_check.py counts
syncs that way); this audit lets ``./test.sh`` hold a code path sync-free on machines without one.
What it sees is what goes through the dispatcher, all on one device: Python reading a CPU
tensor's memory directly (``tolist()``, ``numpy()``) and moves between devices (``.cpu()``, a
CPU tensor mixed into CUDA work) are invisible to it; on CUDA those are transfers that the GPU
check and the CUDA-only tests catch.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Calls that wait for the device whatever their arguments: a scalar read (item(), int(), float(),
# bool(), `if tensor`), output sizes that depend on the data, error checks read on the host.
ALWAYS = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique", "_unique2", "unique_dim",
          "unique_consecutive", "_linalg_check_errors", "equal", "is_nonzero", "argwhere", "allclose", "histc"}
# A tensor made from Python data (torch.tensor(...), t[i] = 3.0): a host-to-device copy on CUDA
# (flagged conservatively: a scalar assigned into a slice becomes a fill there).
HOST_DATA = {"lift_fresh", "lift_fresh_copy"}
# Indexing with a boolean (or legacy uint8) mask compacts it first (nonzero).
INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}
# Fills whose value is a tensor: the CUDA kernels read the value back to the host.
TENSOR_FILLS = {"masked_fill.Tensor", "masked_fill_.Tensor", "index_fill.int_Tensor", "index_fill_.int_Tensor"}


def _has_mask_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in (indices or ()))


class SyncAudit(TorchDispatchMode):
    """``with SyncAudit() as audit: ...`` then ``audit.syncs``: the offending calls, in order.

    A ``torch.compile`` graph runs inside the audit (its fused kernels are no ATen calls; the
    ATen operators it calls, matrix products and the like, are audited): a ``fullgraph``
    compile holds no host sync of its own, since dynamo refuses data-dependent sizes and scalar
    reads in one graph (they are graph breaks)."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True  # else torch.compile refuses to run under the mode

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if (name in ALWAYS or name in HOST_DATA or f"{name}.{func._overloadname}" in TENSOR_FILLS
                or (name in INDEXING and _has_mask_index(args))
                # the (repeats) form that every repeat_interleave reaches: sized by a sync unless told
                or (func is torch.ops.aten.repeat_interleave.Tensor and kwargs.get("output_size") is None)):
            self.syncs.append(f"{name}.{func._overloadname}")
        return func(*args, **kwargs)
