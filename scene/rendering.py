"""Render an avatar for one camera and one set of FLAME vertices (train, eval and render.py)."""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass

import torch

from gaussian_renderer import rasterize
from gaussian_renderer.torch_backend import compiled_projection
from scene.model.avatar import GaussianAvatar
from utils.errors import UserFacingError
from utils.phase_timer import DISABLED, PhaseTimer


@dataclass
class RenderResult:
    image: torch.Tensor  # (H, W, 3) composited over the background (after the screen-space stage)
    alpha: torch.Tensor  # (h, w, 1) at the rasterized size
    meta: dict  # rasterizer meta: means2d (1, N, 2) with retained grad, radii (1, N), ...
    splats: dict  # the world-space splats and opacity offsets (see GaussianAvatar.splats)
    features: torch.Tensor | None = None  # (h, w, C) the rasterized image (= image without a stage)

    @property
    def raster_size(self) -> tuple[int, int]:
        """(w, h) the rasterized size (= (W, H) without a down-scaling screen-space stage)."""
        return self.features.shape[1], self.features.shape[0]


def raster_size(avatar: GaussianAvatar, width: int, height: int) -> tuple[int, int]:
    """(w, h) at which ``avatar`` is rasterized for a (width, height) image: 1/scale of it with a
    down-scaling screen-space stage, else the image's own size."""
    scale = avatar.screen.scale if avatar.screen.enabled() else 1
    return max(1, width // scale), max(1, height // scale)


def compile_problem(device: torch.device | str) -> str | None:
    """None when ``torch.compile`` (inductor) can build kernels for ``device``, else why not (one
    line): on the CPU it compiles C++ (a compiler such as g++ on the PATH, or $CXX), on CUDA
    Triton kernels (the triton package)."""
    kind = torch.device(device).type
    try:
        if kind == "cuda":
            import triton  # noqa: F401
        elif kind == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
        else:
            return f"torch.compile is not set up for '{kind}' devices here"
    except Exception as exc:  # the compiler search raises its own error types
        lines = str(exc).strip().splitlines()
        what = "a C++ compiler (g++, or $CXX)" if kind == "cpu" else "the triton package"
        return f"torch.compile on {kind} needs {what}: {lines[0] if lines else type(exc).__name__}"
    return None


def check_compile(device: torch.device | str, where: str) -> None:
    """Raise a one-line :class:`UserFacingError` when ``where`` (the option that asked for it,
    e.g. "--compile") cannot compile on ``device``."""
    problem = compile_problem(device)
    if problem is not None:
        raise UserFacingError(f"{where}: {problem}; run without it")


def _splats(avatar: GaussianAvatar, vertices, camera_center, motion, canonical_means) -> dict:
    return avatar.splats(vertices, camera_center, motion, canonical_means=canonical_means)


@functools.cache
def _compiled_splats():
    # One compiled function for every avatar: dynamo keys its graphs on what it guards (the
    # avatar, its components' settings, tensor shapes), so a new avatar or splat count recompiles.
    return torch.compile(_splats, fullgraph=True)


def frame_splats(avatar: GaussianAvatar, vertices: torch.Tensor, camera_center: torch.Tensor, motion: dict,
                 compile: bool = False) -> dict:
    """The decoders of one frame: :meth:`GaussianAvatar.splats` (arguments and result as there),
    with ``compile`` as one ``torch.compile`` graph (``fullgraph``: no break, no host sync). The
    canonical positions enter the graph as an input: without autograd they come from the
    geometry's per-version cache, Python state that no graph holds."""
    if not compile:
        return avatar.splats(vertices, camera_center, motion)
    return _compiled_splats()(avatar, vertices, camera_center, motion, avatar.canonical_splat_positions())


def render_avatar(
    avatar: GaussianAvatar,
    vertices: torch.Tensor,
    motion: dict,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor,
    backend: str = "auto",
    timer: PhaseTimer = DISABLED,
    isect_capacity: int | None = None,
    compile: bool = False,
) -> RenderResult:
    """Render the avatar posed by ``vertices`` (V, 3) from one camera.

    With a screen-space stage (``avatar.screen``), the colour's C channels are rasterized at
    (width // scale, height // scale) (K scaled to match, background channels beyond 3 zero) and
    the stage makes the (height, width, 3) image of them.

    Args:
        motion: the frame's FLAME parameters, one tensor per key (:func:`flame_model.frame_motion`):
            expr (n_expr,) and jaw_pose (3,) drive the opacity offsets; a geometry driven by the
            pose also reads rotation, neck_pose, eyes_pose and translation.
        viewmat: (4, 4) world-to-camera (OpenCV); K: (3, 3) pixel intrinsics.
        background: (3,) colour.
        The avatar renders in the state its schedule hooks set (:meth:`GaussianAvatar.set_step`:
        feature lines on or off, the active SH degree); a loaded avatar renders fully trained.
        timer: charges the splat decoders and the rasterization to phases "decoders" and
            "rasterization" (bench/step_profile.py).
        isect_capacity: None, or (backend "triton") the fixed length of the rasterizer's
            intersection list: the whole call then makes no host-device sync and can be captured
            in a CUDA graph (:class:`GraphedAvatarRenderer`); see ``gaussian_renderer.rasterize``.
        compile: run the decoders (``avatar.splats``) and the rasterizer's projection as
            ``torch.compile`` graphs (fused kernels: far fewer launches per frame; no graph break
            and no host sync, so a capture stays possible). The first frame (and a new image size or
            splat count) compiles, which takes seconds to minutes; results equal the eager
            frame's within float rounding. Check :func:`compile_problem` first.
    """
    # Camera centre -R^T t of the rigid world-to-camera map (no linalg.inv: it syncs on CUDA).
    camera_center = -viewmat[:3, :3].T @ viewmat[:3, 3]
    with timer("decoders"):
        splats = frame_splats(avatar, vertices, camera_center, motion, compile)
    if "colors" in splats:
        colors, degree = splats["colors"], None
    else:
        colors, degree = splats["sh"], splats["sh_degree"]
    screen = avatar.screen
    raster_w, raster_h = raster_size(avatar, width, height)
    if screen.enabled():
        if (raster_w, raster_h) != (width, height):
            K = torch.stack([K[0] * (raster_w / width), K[1] * (raster_h / height), K[2]])
        if colors.shape[-1] > background.shape[0]:  # feature channels beyond RGB start at zero
            background = torch.cat([background, background.new_zeros(colors.shape[-1] - background.shape[0])])
    # Tiles of 8 px waste fewer pixel-splat pairs on the CPU for millimetre-sized splats (the
    # images are identical for any tile size); CUDA kernels (gsplat) are tuned for 16.
    tile_size = 16 if vertices.is_cuda else 8
    with timer("rasterization"), (compiled_projection() if compile else contextlib.nullcontext()):
        rgb, alpha, meta = rasterize(
            splats["means"], splats["quats"], splats["scales"], splats["opacities"], colors,
            viewmat[None], K[None], raster_w, raster_h,
            sh_degree=degree, backgrounds=background[None], backend=backend, tile_size=tile_size,
            isect_capacity=isect_capacity,
        )
    image = features = rgb[0]
    if screen.enabled():
        with timer("screen"):
            image = screen(features, alpha[0], width, height)
    return RenderResult(image, alpha[0], meta, splats, features)


def tensor_signature(tensors) -> tuple:
    """(address, shape, dtype, device) of each tensor: what a captured CUDA graph has baked in."""
    return tuple((t.data_ptr(), tuple(t.shape), t.dtype, t.device) for t in tensors)


class GraphedAvatarRenderer:
    """:func:`render_avatar` captured once in a CUDA graph and replayed for every frame.

    A frame of the full avatar launches a few hundred small kernels (decoders, projection,
    binning); replaying them as one graph removes the host's launch cost, which bounds the frame
    rate on a fast GPU. The Triton backend with a fixed intersection capacity makes the path free
    of host-device syncs, which capture requires. The capacity is the first frame's number of
    (tile, splat) pairs times ``headroom``; with ``check_overflow`` a later frame that needs more
    is rendered again by a graph captured for twice its count, so images never lose splats (that
    check reads one flag back: a sync per frame; without it, read ``renderer.overflow`` yourself).

    Usage (one image size per renderer)::

        renderer = GraphedAvatarRenderer(avatar, width, height, background)
        image, alpha = renderer(vertices, motion, viewmat, K)  # (H, W, 3), (H, W, 1)

    ``image`` and ``alpha`` are the renderer's own buffers, the same tensors on every call and
    overwritten by the next one: clone them to keep a frame. The graph reads the avatar's
    parameters in place, so optimiser steps show in later frames (the canonical positions, which
    the avatar keeps per parameter version, are brought up to date in place before each replay);
    when any of its tensors is replaced (densification, ``.to()``, loading), the next call captures
    a new graph. ``compile``: the captured frame's decoders and projection are compiled graphs
    (:func:`render_avatar`'s option), fewer and fused kernels in the CUDA graph.
    """

    FRAME_KEYS = ("vertices", "viewmat", "K")  # and the motion's, as "motion.<key>"

    def __init__(self, avatar: GaussianAvatar, width: int, height: int, background: torch.Tensor,
                 headroom: float = 1.5, check_overflow: bool = True, compile: bool = False):
        """background (3,) on the CUDA device the frames will be rendered on."""
        if not background.is_cuda:
            raise ValueError(f"GraphedAvatarRenderer needs CUDA tensors (CUDA graphs), got a background on "
                             f"'{background.device}'; use render_avatar on this device")
        self.avatar, self.width, self.height, self.background = avatar, width, height, background
        self.headroom, self.check_overflow, self.compile = headroom, check_overflow, compile
        self.device = background.device
        self.image = torch.zeros(height, width, 3, device=self.device)
        raster_w, raster_h = raster_size(avatar, width, height)  # alpha comes at the rasterized size
        self.alpha = torch.zeros(raster_h, raster_w, 1, device=self.device)
        self.capacity = 0  # the captured graph's intersection capacity
        self.captures = 0
        self.n_isects = self.overflow = None  # the graph's (tile, splat) pair count and overflow flag
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: dict = {}  # the graph's input buffers, copied into before each replay
        self._baked: tuple = ()  # tensor_signature of what the graph reads besides its inputs

    def _read_tensors(self) -> tuple:
        return tensor_signature([*self.avatar.parameters(), *self.avatar.buffers(), self.background])

    def _render(self, inputs: dict, capacity: int | None) -> RenderResult:
        motion = {k.removeprefix("motion."): v for k, v in inputs.items() if k.startswith("motion.")}
        return render_avatar(self.avatar, inputs["vertices"], motion, inputs["viewmat"], inputs["K"], self.width, self.height, self.background, backend="triton",
                             isect_capacity=capacity, compile=self.compile)

    def _capture(self, frame: dict, capacity: int) -> None:
        inputs = {k: v.detach().to(self.device, torch.float32).clone() for k, v in frame.items()}
        with torch.cuda.device(self.device):
            # Warm-up on a side stream (Triton compiles its kernels, the allocator settles), as
            # torch.cuda.graphs asks; then capture on it. Other threads' CUDA work (a viewer's)
            # may go on meanwhile: thread-local capture errors.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._render(inputs, capacity)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                result = self._render(inputs, capacity)
                self.image.copy_(result.image)
                self.alpha.copy_(result.alpha)
        # Only now, so that a capture that raised leaves the previous graph working.
        self._graph, self._inputs, self.capacity = graph, inputs, capacity
        self.n_isects, self.overflow = result.meta["n_isects"], result.meta["isect_overflow"]
        self._baked = self._read_tensors()
        self.captures += 1

    def _frame(self, values: tuple, motion: dict) -> dict:
        frame = dict(zip(self.FRAME_KEYS, values))
        frame.update({f"motion.{k}": v for k, v in motion.items()})
        if self._inputs and frame.keys() != self._inputs.keys():
            raise ValueError(f"GraphedAvatarRenderer: the motion has the keys {sorted(motion)}, but the captured graph "
                             f"takes {sorted(k[7:] for k in self._inputs if k.startswith('motion.'))}")
        for key, value in frame.items():
            if not (torch.is_tensor(value) and value.is_floating_point()):
                raise ValueError(f"GraphedAvatarRenderer: `{key}` must be a floating-point tensor, got "
                                 f"{type(value).__name__ if not torch.is_tensor(value) else value.dtype}")
            if self._inputs and value.shape != self._inputs[key].shape:
                raise ValueError(f"GraphedAvatarRenderer: `{key}` has shape {tuple(value.shape)}, but the captured "
                                 f"graph takes {tuple(self._inputs[key].shape)}; make a new renderer for it")
        return frame

    @torch.no_grad()
    def __call__(self, vertices: torch.Tensor, motion: dict, viewmat: torch.Tensor,
                 K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vertices (V, 3), motion (the frame's FLAME parameters, as :func:`render_avatar` takes
        them), viewmat (4, 4), K (3, 3) -> image (H, W, 3), alpha (H, W, 1)."""
        frame = self._frame((vertices, viewmat, K), motion)
        self.avatar.canonical_splat_positions()  # the geometry's per-version values, refreshed in place
        if self._graph is None or self._baked != self._read_tensors():
            pairs = self._render(frame, None).meta["n_isects"]  # an int: the one sync of a capture
            self._capture(frame, max(1024, int(pairs * self.headroom)))
        for key, value in frame.items():
            self._inputs[key].copy_(value)
        self._graph.replay()
        if self.check_overflow and bool(self.overflow):
            self._capture(frame, 2 * int(self.n_isects))
            self._graph.replay()
        return self.image, self.alpha


@torch.no_grad()
def measure_render_speed(avatar: GaussianAvatar, vertices: torch.Tensor, motion: dict, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int, background: torch.Tensor,
                         backend: str, frames: int = 50, warmup: int = 5, compile: bool = False,
                         cuda_graph: bool = True) -> dict:
    """Speed of :func:`render_avatar` (the product's path, decoders included) for one frame.

    The frame rate is timed with no synchronisation inside the loop (as a viewer would run);
    the split into phases comes from a second, phase-synchronised pass.
    Returns {"fps", "ms_per_frame", "ms_decoders", "ms_rasterization", "frames_timed"}; on CUDA
    with the Triton backend also the same frame replayed as a CUDA graph
    (:class:`GraphedAvatarRenderer`): "fps_cuda_graph", "ms_per_frame_cuda_graph", "isect_capacity".
    ``compile``: :func:`render_avatar`'s option (the warm-up compiles). ``cuda_graph`` False:
    the eager frame only.
    """
    def render(timer=DISABLED):
        return render_avatar(avatar, vertices, motion, viewmat, K, width, height, background,
                             backend=backend, timer=timer, compile=compile)

    sync = (lambda: torch.cuda.synchronize(vertices.device)) if vertices.is_cuda else (lambda: None)
    for _ in range(max(warmup, 1)):
        render()
    sync()
    start = time.perf_counter()
    for _ in range(frames):
        render()
    sync()
    seconds = (time.perf_counter() - start) / frames
    timer = PhaseTimer(enabled=True, device=vertices.device)
    for _ in range(frames):
        render(timer)
    phases = timer.mean_ms(frames)
    result = {"fps": 1.0 / seconds, "ms_per_frame": 1000.0 * seconds, "ms_decoders": phases.get("decoders", 0.0),
              "ms_rasterization": phases.get("rasterization", 0.0), "frames_timed": frames}
    if cuda_graph and vertices.is_cuda and backend == "triton":
        graphed = GraphedAvatarRenderer(avatar, width, height, background, check_overflow=False, compile=compile)
        graphed(vertices, motion, viewmat, K)  # capture
        sync()
        start = time.perf_counter()
        for _ in range(frames):
            graphed(vertices, motion, viewmat, K)
        sync()
        seconds = (time.perf_counter() - start) / frames
        if bool(graphed.overflow):  # the capture's own frame: cannot happen, but never time a cut image
            raise RuntimeError("the CUDA-graph render dropped intersections")
        result.update(fps_cuda_graph=1.0 / seconds, ms_per_frame_cuda_graph=1000.0 * seconds,
                      isect_capacity=graphed.capacity)
    return result
