"""Triton rasterizer backend: the torch backend's projection, SH and binning + Triton compositing.

Projection, SH evaluation, per-splat features and the depth-sorted tile binning are the torch
backend's own functions (``torch_backend.prepare_splats``, ``tiles.bin_gaussians``); only the
per-tile alpha compositing and its backward run as Triton kernels (``triton_kernels.py``): one
program per (camera, tile) over the flat intersection list, so a frame is two kernel launches
(forward, backward) whatever the number of tiles. The only host-device sync is the binning's
sizing of its list, and with ``isect_capacity`` there is none: the whole call, projection to
image, can then be captured in a CUDA graph (``scene.rendering.GraphedAvatarRenderer``).

Results equal the torch backend's to float32 rounding in Triton's interpreter: same 0.99 clamp,
1/255 skip and 1e-4 transmittance stop (``compositing.py``), same parameter table. Compiled on a
GPU (approximate exp2, fused multiply-adds) they agree within ``parity.TOLERANCES``, which the
parity probe applies. float32 only.

Triton is imported lazily (``triton_available``, first call of ``rasterize_triton``), so the
package imports where triton is absent. On CPU tensors the kernels need Triton's interpreter:
``TRITON_INTERPRET=1`` in the environment *before triton is first imported* in the process (slow,
meant for tests), because ``triton.jit`` fixes compiled-vs-interpreted when it decorates a function,
triton's own ``tl`` library included.

Registered as the ``triton`` backend: CUDA, float32, first in ``auto``'s order (by the figures of
``bench/gpu_check.py``), the only one that takes ``isect_capacity``.
"""
from __future__ import annotations

import importlib

import torch

from .compositing import _conic_table
from .errors import BackendUnavailableError
from .registry import Backend, register_backend
from .tiles import Intersections, bin_gaussians, fits_int32
from .torch_backend import build_meta, finish_render, prepare_splats

_KERNELS_MODULE = "gaussian_renderer.triton_kernels"
_G_COLS = 6  # columns of the backward kernel's per-splat gradient table (mean x, y, conic a, b, c, opacity)
N_TABLE_COLS = 10  # columns of compositing._conic_table (triton_kernels.N_COLS)


def triton_import_error() -> str | None:
    """None when the triton package imports (it may still need a GPU or TRITON_INTERPRET=1 to
    run), else why not: the exception's type and first line."""
    try:
        import triton  # noqa: F401  (ships with CUDA builds of torch on Linux)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0]}" if lines and lines[0] else type(exc).__name__
    return None


def triton_available() -> bool:
    """True when the triton package imports (it may still need a GPU or TRITON_INTERPRET=1 to run)."""
    return triton_import_error() is None


def _kernels():
    """The kernel module (imports triton on first use)."""
    return importlib.import_module(_KERNELS_MODULE)


def _check_runnable(t: torch.Tensor) -> None:
    """Raise BackendUnavailableError when Triton cannot run on ``t``'s device or dtype."""
    if not triton_available():
        raise BackendUnavailableError(
            "rasterize(backend='triton'): the triton package cannot be imported; install it with "
            "`pip install triton` (Linux x86_64), or use backend='torch'")
    kern = _kernels()
    if kern.INTERPRETED != kern.TL_INTERPRETED:
        raise BackendUnavailableError(
            "rasterize(backend='triton'): TRITON_INTERPRET changed after triton was imported; set it (or unset "
            "it) in the environment before the first `import triton` of the process")
    if t.device.type != "cuda" and not kern.INTERPRETED:
        raise BackendUnavailableError(
            f"rasterize(backend='triton') needs CUDA tensors, got tensors on '{t.device}'; move the inputs to "
            "a CUDA device, use backend='torch', or (slow, for tests) set TRITON_INTERPRET=1 in the environment "
            "before triton is first imported to run the kernels in Triton's CPU interpreter")
    if t.dtype != torch.float32:
        raise BackendUnavailableError(
            f"rasterize(backend='triton') needs float32 tensors, got {t.dtype}; use backend='torch'")


def _launch_config(tile_size: int, n_channels: int) -> dict:
    """Compile-time sizes: pixel lanes PIX (tile_size^2 padded to a power of two, >= 16), chunk
    length BLOCK (splats per chunk) and the channel layout DPAD; with num_warps.

    DPAD: up to 4 channels, D rounded up to a power of two (per-channel arithmetic); more, a power
    of two >= 16 (``tl.dot``, which also needs PIX and BLOCK >= 16). Forward and backward use the
    same chunks, so the backward recomputes bit-identical running products and stop decisions (a
    scan's rounding depends on where the chunks start). BLOCK keeps a (PIX, BLOCK) tensor at ~2k
    elements (per channel) or ~1k (tl.dot, whose operands take registers too) because the
    backward holds about a dozen of them: with 8 warps ptxas (sm_90, triton 3.9) then spills
    nothing for D <= 4 at tile 16 and 8, nor for D > 4 at tile 8; the tile-16 tl.dot backward
    still spills (BLOCK cannot go below 16 there). Figures per (kernel, tile size, D):
    ``bench/triton_compile_report.py`` (docs/BENCHMARKS.md). Not yet tuned on a GPU.
    """
    pix = max(16, 1 << (tile_size * tile_size - 1).bit_length())
    per_channel = n_channels <= 4
    dpad = 1 << (n_channels - 1).bit_length() if per_channel else max(16, 1 << (n_channels - 1).bit_length())
    block = max(8, min(64, 2048 // pix)) if per_channel else max(16, min(64, 1024 // pix))
    return {"TILE": tile_size, "PIX": pix, "BLOCK": block, "DPAD": dpad,
            "num_warps": 8 if pix * block >= 1024 else 4}


def isect_index_dtype(n_ids: int, n_tiles: int, n_channels: int) -> torch.dtype:
    """The dtype of the intersection list's splat ids and tile keys for the kernels.

    int32 (half the bytes to sort and gather, 4 radix passes instead of 8) when every offset the
    kernels compute from an id in its dtype fits: ``id * max(10 table columns, 6 gradient
    columns, D)`` for ids up to ``n_ids`` (= C * N, the dummy id included), and the tile keys up
    to ``n_tiles`` (= C * tiles per camera). Otherwise int64, which renders the same (slower):
    e.g. int32 up to 214,748,364 splats x cameras with D <= 10, and up to 2^31 / D beyond.
    """
    widest = max(N_TABLE_COLS, _G_COLS, n_channels)
    return torch.int32 if fits_int32(n_ids * widest, n_tiles) else torch.int64


class _Binning:
    """The intersections of ``tiles.bin_gaussians`` and the image / tile layout the kernels need.

    isect (L,) int32 or int64 flat splat ids (L >= 1: the kernels take a pointer), offsets /
    counts (C * tiles,) int64."""

    def __init__(self, isects: Intersections, n_cameras, width, height, tile_size):
        flat = isects.flat
        self.isect = flat if flat.numel() else torch.zeros(1, dtype=flat.dtype, device=flat.device)
        self.offsets = isects.offsets.contiguous()
        self.counts = isects.counts.contiguous()
        self.n_cameras, self.width, self.height, self.tile_size = n_cameras, width, height, tile_size
        self.tiles_x = (width + tile_size - 1) // tile_size
        self.tiles_per_cam = self.tiles_x * ((height + tile_size - 1) // tile_size)

    def grid(self):
        return (self.n_cameras * self.tiles_per_cam,)

    def layout_args(self, n_channels: int):
        return (self.width, self.height, self.tiles_x, self.tiles_per_cam, n_channels)


class _TritonComposite(torch.autograd.Function):
    """(C, N) splats -> (C, H, W, D) colours (background included) and (C, H, W, 1) alphas."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, backgrounds, binning: _Binning):
        """means2d (C, N, 2), conics (C, N, 3), opacities (C, N), feats (C, N, D), backgrounds (C, D) or None."""
        C, N, D = feats.shape
        H, W = binning.height, binning.width
        kern = _kernels()
        table = _conic_table(means2d.detach(), conics.detach(), opacities.detach(), feats.dtype, feats.device)
        feat_flat = feats.detach().reshape(C * N, D).contiguous()
        color = torch.zeros(C, H, W, D, dtype=feats.dtype, device=feats.device)
        T = torch.ones(C, H, W, dtype=feats.dtype, device=feats.device)
        cfg = _launch_config(binning.tile_size, D)
        kern.composite_forward_kernel[binning.grid()](
            table, feat_flat, binning.isect, binning.offsets, binning.counts, color, T,
            *binning.layout_args(D), **cfg)

        image = color if backgrounds is None else color + T.unsqueeze(-1) * backgrounds[:, None, None, :]
        ctx.binning = binning
        ctx.save_for_backward(table, feat_flat, color, T, backgrounds)
        return image, (1.0 - T).unsqueeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v_image, v_alphas):
        """v_image (C, H, W, D), v_alphas (C, H, W, 1) -> gradients of forward's tensor inputs."""
        table, feat_flat, color, T, backgrounds = ctx.saved_tensors
        binning: _Binning = ctx.binning
        C, H, W, D = color.shape
        N = feat_flat.shape[0] // C
        v_image = torch.zeros_like(color) if v_image is None else v_image.contiguous()
        v_alphas = torch.zeros_like(T) if v_alphas is None else v_alphas[..., 0]
        # per pixel: sum_k w_k g_k = colour . dL/dC, and the part behind the last splat
        # T_final (bg . dL/dC - dL/dalpha) (alpha = 1 - T_final)
        behind = -v_alphas if backgrounds is None else (v_image * backgrounds[:, None, None, :]).sum(-1) - v_alphas
        rest = ((color * v_image).sum(-1) + T * behind).contiguous()
        v_bg = None if backgrounds is None else (T.unsqueeze(-1) * v_image).sum((1, 2))

        g_table = torch.zeros(C * N, _G_COLS, dtype=T.dtype, device=T.device)
        g_feats = torch.zeros(C * N, D, dtype=T.dtype, device=T.device)
        cfg = _launch_config(binning.tile_size, D)
        _kernels().composite_backward_kernel[binning.grid()](
            table, feat_flat, binning.isect, binning.offsets, binning.counts, v_image, rest, g_table, g_feats,
            *binning.layout_args(D), **cfg)

        v_means2d = g_table[:, 0:2].reshape(C, N, 2)
        v_conics = g_table[:, 2:5].reshape(C, N, 3)
        v_opac = g_table[:, 5].reshape(C, N)
        return v_means2d, v_conics, v_opac, g_feats.reshape(C, N, D), v_bg, None


def rasterize_triton(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d, tile_size, isect_capacity=None,
):
    """Rasterize N splats into C cameras with Triton compositing kernels.

    Arguments, shapes and return value as :func:`torch_backend.rasterize_torch` (already
    validated by :func:`gaussian_renderer.api.rasterize`): means (N, 3), quats (N, 4), scales
    (N, 3), opacities (N,) or (C, N), colors (N, D) / (C, N, D) or SH (N, K, 3) / (C, N, K, 3),
    viewmats (C, 4, 4), Ks (C, 3, 3), backgrounds (C, D) or None. Returns render (C, H, W, D[+1]),
    alphas (C, H, W, 1) and the meta dict of ``rasterize_torch`` with ``meta["backend"] = "triton"``.

    ``isect_capacity`` None: the intersection list is sized exactly (one host-device sync). An
    int L: the list has L entries whatever the frame, so the call never waits for the device and
    can be captured in a CUDA graph; ``meta["n_isects"]`` is then a 0-dim tensor and
    ``meta["isect_overflow"]`` a 0-dim bool tensor, true when pairs beyond L (the farthest splats')
    were dropped.

    Raises:
        BackendUnavailableError: triton missing, tensors not on CUDA (CPU needs TRITON_INTERPRET=1),
            or not float32.
    """
    _check_runnable(means)
    C = viewmats.shape[0]
    inputs = prepare_splats(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, eps2d=eps2d)
    proj = inputs.proj
    with torch.no_grad():
        n_tiles = C * ((width + tile_size - 1) // tile_size) * ((height + tile_size - 1) // tile_size)
        index_dtype = isect_index_dtype(C * proj["depths"].shape[1], n_tiles, inputs.feats.shape[-1])
        isects = bin_gaussians(proj["means2d"].detach(), proj["radii_xy"], proj["depths"].detach(), proj["visible"],
                               width, height, tile_size, isect_capacity, index_dtype=index_dtype)
    binning = _Binning(isects, C, width, height, tile_size)
    bg = inputs.backgrounds.contiguous() if inputs.backgrounds is not None else None
    render, alphas = _TritonComposite.apply(proj["means2d"], proj["conics"], inputs.opacities,
                                            inputs.feats, bg, binning)
    render = finish_render(render, alphas, render_mode)
    meta = build_meta("triton", inputs, isects.tiles_per_gauss, isects.n_isects, width, height, tile_size)
    if isects.overflow is not None:
        meta["isect_overflow"] = isects.overflow
    return render, alphas, meta


BACKEND = register_backend(Backend(
    name="triton", rasterize=rasterize_triton, import_error=triton_import_error,
    fix="the triton package ships with CUDA builds of torch on Linux; install the torch build for your driver, "
        "or use --backend torch",
    devices=("cuda",), dtypes=(torch.float32,), auto_rank=10, takes_isect_capacity=True,
))
