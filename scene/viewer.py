"""The web viewer behind viewer.py: a viser server that renders the avatar from the browser's camera,
with FLAME controls and driving sequences (module docstring of viewer.py)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from flame_model import frame_motion
from scene.data.cameras import camera_pose, pinhole_camera
from scene.data.datasets import load_sequence
from scene.data.protocols import protocol_splits
from utils.errors import UserFacingError
from utils.image_io import to_uint8
from utils.subject_ids import own_free_sequence
from scene.renderer import Renderer, RenderOptions, reenactment_vertices

__all__ = ["ViewerOptions", "AvatarViewer", "DrivingSequence", "EXPRESSION_SLIDERS", "POSE_CONTROLS", "NEUTRAL_KEYS"]

EXPRESSION_SLIDERS = 10
# (label, FLAME parameter, indices it sets, slider range in radians). Eye gaze sets both eyes.
POSE_CONTROLS = (
    ("jaw open", "jaw_pose", (0,), (-0.2, 0.8)),
    ("jaw sideways", "jaw_pose", (1,), (-0.4, 0.4)),
    ("jaw twist", "jaw_pose", (2,), (-0.4, 0.4)),
    ("gaze up/down", "eyes_pose", (0, 3), (-0.6, 0.6)),
    ("gaze left/right", "eyes_pose", (1, 4), (-0.8, 0.8)),
    ("neck pitch", "neck_pose", (0,), (-0.8, 0.8)),
    ("neck yaw", "neck_pose", (1,), (-1.0, 1.0)),
    ("neck roll", "neck_pose", (2,), (-0.6, 0.6)),
    ("head pitch", "rotation", (0,), (-1.0, 1.0)),
    ("head yaw", "rotation", (1,), (-1.6, 1.6)),
    ("head roll", "rotation", (2,), (-1.0, 1.0)),
)
EXPRESSION_RANGE = (-3.0, 3.0)
NEUTRAL_KEYS = ("expr", "jaw_pose", "eyes_pose", "neck_pose")



@dataclass
class ViewerOptions:
    """viewer.py's options: the model folder and how to load it (as :class:`RenderOptions`), the
    driving sequence folders ``targets``, the initial render height ``resolution`` (None: 256 on
    a CPU, 720 on a GPU), and where the server listens."""

    model_path: str
    targets: list = field(default_factory=list)
    resolution: int | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    iteration: int | None = None
    flame: str | None = None
    source_path: str | None = None
    device: str = "auto"
    backend: str | None = None
    quiet: bool = False
    compile: bool = False  # decoders and projection as torch.compile graphs (render_avatar's option)


@dataclass
class DrivingSequence:
    """Frames that drive the avatar: their timesteps and timestep -> FLAME motion (dict of (1, ...))."""
    name: str
    timesteps: list
    motion: Callable[[int], dict]


class AvatarViewer:
    """The viser server, its controls and the render thread. ``close()`` stops both."""

    def __init__(self, options: ViewerOptions):
        import viser  # the viewer's own dependency: imported here so the rest of the package stays importable

        self.options = args = options
        self.renderer = Renderer(RenderOptions(model_path=args.model_path, iteration=args.iteration, device=args.device,
                                               backend=args.backend, flame=args.flame, source_path=args.source_path,
                                               quiet=True, compile=args.compile))
        self.device = self.renderer.device
        self.initial_height = args.resolution or (720 if self.device.type == "cuda" else 256)
        if not 16 <= self.initial_height <= 4096:
            raise UserFacingError(f"--resolution must be between 16 and 4096 pixels, got {self.initial_height}")

        self.sequences: dict[str, DrivingSequence] = {}
        self._add_own_splits()
        for target in args.targets:
            self.add_sequence_folder(target)
        if not self.sequences:
            raise UserFacingError(f"{args.model_path}: no frames to drive the avatar (its subject has no split "
                                  "with frames); pass a sequence with -t")
        self.sequence = next(iter(self.sequences.values()))
        self.frame_index = 0
        self.motion = self.sequence.motion(self.sequence.timesteps[0])

        self._lock = threading.RLock()  # guards motion, sequence and frame_index
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._syncing = False  # set while code (not the user) moves the controls
        self.playing = False
        self.frames_sent = 0
        self.last_image: dict[int, np.ndarray] = {}  # client id -> the (H, W, 3) uint8 image sent last

        self.server = viser.ViserServer(host=args.host, port=args.port, verbose=False)
        self.server.scene.set_up_direction("+y")
        # viser's share button sends the avatar through a public relay: never, for a research subject.
        self.server.gui.configure_theme(show_share_button=False)
        self.controls: dict = {}
        self._build_gui()
        self.server.on_client_connect(self._on_connect)
        self._thread = threading.Thread(target=self._render_loop, name="viewer-render", daemon=True)
        self._thread.start()

    # -- driving sequences ----------------------------------------------------------------------

    def _add_own_splits(self) -> None:
        renderer = self.renderer
        subject = renderer.subject
        splits = subject.frames if renderer.protocol == "none" else protocol_splits(subject, renderer.protocol)
        motion = renderer.motion_from(subject, renderer.fine_tuned)
        if renderer.protocol == "paper":  # its test split is the subject's own FREE sequence
            free, _ = own_free_sequence(renderer.model.extra["source_path"])
            if free is not None:
                self.add_sequence_folder(str(free))
        for split in ("test", "val", "train"):
            timesteps = sorted({f.timestep for f in splits.get(split, [])})
            if timesteps:
                self.sequences[f"{split} split"] = DrivingSequence(f"{split} split", timesteps, motion)

    def add_sequence_folder(self, folder: str) -> str:
        """Load a subject or sequence folder as a driving sequence; returns its name."""
        sequence = load_sequence(folder, resolution_scale=self.renderer.model.config.run.resolution_scale)
        timesteps = sorted({f.timestep for f in sequence.frames["all"]})
        if not timesteps:
            raise UserFacingError(f"{folder}: the sequence has no frames to drive the avatar")
        name = Path(folder).resolve().name
        self.sequences[name] = DrivingSequence(name, timesteps, self.renderer.motion_from(sequence))
        return name

    def select_frame(self, index: int) -> None:
        """Show frame ``index`` of the current sequence: its FLAME motion becomes the pose."""
        with self._lock:
            self.frame_index = index % len(self.sequence.timesteps)
            self.motion = self.sequence.motion(self.sequence.timesteps[self.frame_index])
        self._sync_controls()
        self._dirty.set()

    # -- GUI ------------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self.server.gui
        with gui.add_folder("Sequence"):
            self.controls["sequence"] = gui.add_dropdown("sequence", tuple(self.sequences), initial_value=self.sequence.name)
            self.controls["frame"] = gui.add_slider("frame", 0, max(len(self.sequence.timesteps) - 1, 1), 1, 0)
            self.controls["play"] = gui.add_button("Play")
            self.controls["fps"] = gui.add_number("playback fps", 25, min=1, max=120, step=1)
            self.controls["folder"] = gui.add_text("load folder", "")
            self.controls["load"] = gui.add_button("Load sequence")
            self.controls["message"] = gui.add_markdown("")
        with gui.add_folder("Expression"):
            n_expr = self.motion["expr"].shape[1]
            for k in range(min(EXPRESSION_SLIDERS, n_expr)):
                self.controls[f"expr {k}"] = gui.add_slider(f"expr {k}", *EXPRESSION_RANGE, 0.01, 0.0)
            if n_expr > EXPRESSION_SLIDERS:
                self.controls["component"] = gui.add_number("component", EXPRESSION_SLIDERS, min=0,
                                                            max=n_expr - 1, step=1)
                self.controls["value"] = gui.add_slider("value", *EXPRESSION_RANGE, 0.01, 0.0)
        with gui.add_folder("Jaw, eyes, neck, head"):
            for label, _, _, (lo, hi) in POSE_CONTROLS:
                self.controls[label] = gui.add_slider(label, lo, hi, 0.01, 0.0)
            self.controls["neutral"] = gui.add_button("Neutral")
        with gui.add_folder("View"):
            cameras = tuple(str(i) for i in self.renderer.subject.camera_indices)
            self.controls["camera"] = gui.add_dropdown("rig camera", cameras, initial_value=cameras[len(cameras) // 2])
            self.controls["go"] = gui.add_button("Go to rig camera")
            self.controls["height"] = gui.add_slider("render height", 16, 4096, 16, int(self.initial_height))
            self.controls["stats"] = gui.add_markdown("")
        self._sync_controls()

        c = self.controls
        c["sequence"].on_update(lambda _: self._on_sequence(c["sequence"].value))
        c["frame"].on_update(lambda _: None if self._syncing else self.select_frame(int(c["frame"].value)))
        c["play"].on_click(lambda _: self.set_playing(not self.playing))
        c["load"].on_click(lambda _: self._on_load(c["folder"].value))
        for k in range(min(EXPRESSION_SLIDERS, self.motion["expr"].shape[1])):
            c[f"expr {k}"].on_update(lambda _, k=k: self._set_motion("expr", (k,), c[f"expr {k}"].value))
        if "component" in c:
            c["component"].on_update(lambda _: self._sync_controls())
            c["value"].on_update(lambda _: self._set_motion("expr", (int(c["component"].value),), c["value"].value))
        for label, key, indices, _ in POSE_CONTROLS:
            c[label].on_update(lambda _, label=label, key=key, indices=indices: self._set_motion(key, indices, c[label].value))
        c["neutral"].on_click(lambda _: self.neutral())
        c["go"].on_click(lambda event: self.go_to_rig_camera(int(c["camera"].value), event.client))
        c["height"].on_update(lambda _: self._dirty.set())

    def _sync_controls(self) -> None:
        """Move the controls to the current pose and frame without treating it as user input."""
        with self._lock:
            motion = {k: v[0].tolist() for k, v in self.motion.items()}
            frame = self.frame_index
        self._syncing = True
        try:
            c = self.controls
            if "frame" in c:
                c["frame"].value = frame
            for name, handle in c.items():
                if name.startswith("expr "):
                    handle.value = _clamp(motion["expr"][int(name[5:])], EXPRESSION_RANGE)
            if "component" in c:
                c["value"].value = _clamp(motion["expr"][int(c["component"].value)], EXPRESSION_RANGE)
            for label, key, indices, bounds in POSE_CONTROLS:
                if label in c:
                    c[label].value = _clamp(motion[key][indices[0]], bounds)
        finally:
            self._syncing = False

    def _set_motion(self, key: str, indices: tuple, value: float) -> None:
        if self._syncing:
            return
        with self._lock:
            tensor = self.motion[key].clone()
            for i in indices:
                tensor[0, i] = float(value)
            self.motion = {**self.motion, key: tensor}
        self._dirty.set()

    def neutral(self) -> None:
        """Zero the expression, jaw, eyes and neck (keep the head's rotation and translation)."""
        with self._lock:
            self.motion = {k: torch.zeros_like(v) if k in NEUTRAL_KEYS else v for k, v in self.motion.items()}
        self._sync_controls()
        self._dirty.set()

    def set_playing(self, playing: bool) -> None:
        self.playing = playing
        self.controls["play"].label = "Pause" if playing else "Play"
        self._dirty.set()

    def _on_sequence(self, name: str) -> None:
        with self._lock:
            self.sequence = self.sequences[name]
        self.controls["frame"].max = max(len(self.sequence.timesteps) - 1, 1)
        self.select_frame(0)

    def _on_load(self, folder: str) -> None:
        try:
            name = self.add_sequence_folder(folder.strip())
        except UserFacingError as exc:
            self.controls["message"].content = f"**error:** {exc}"
            return
        self.controls["message"].content = f"loaded {name} ({len(self.sequences[name].timesteps)} frames)"
        self.controls["sequence"].options = tuple(self.sequences)
        self.controls["sequence"].value = name  # its callback selects the sequence

    # -- cameras --------------------------------------------------------------------------------

    def go_to_rig_camera(self, index: int, client=None) -> None:
        """Put the browser camera (of ``client``, else every client) where rig camera ``index`` is."""
        frame = self.renderer.rig_camera(index)
        position, wxyz, fov = camera_pose(frame.viewmat, frame.K, frame.height)
        with torch.no_grad():
            head = reenactment_vertices(self.renderer.model, self.motion)[0].mean(0).cpu().double().numpy()
        clients = [client] if client is not None else list(self.server.get_clients().values())
        for c in clients:
            with c.atomic():
                c.camera.fov = fov
                c.camera.position = position
                c.camera.look_at = head  # the orbit centre, at the head's distance ...
                c.camera.wxyz = wxyz  # ... then the rig camera's exact orientation
        self._dirty.set()

    def _on_connect(self, client) -> None:
        client.camera.on_update(lambda _: self._dirty.set())
        self.go_to_rig_camera(int(self.controls["camera"].value), client)

    # -- rendering ------------------------------------------------------------------------------

    @torch.no_grad()
    def render_view(self, position, wxyz, fov_y: float, aspect: float) -> tuple[np.ndarray, float]:
        """The avatar in the current pose from a camera at ``position`` (3,) with orientation
        ``wxyz`` (4,); (H, W, 3) uint8 at the chosen render height, and the milliseconds it took."""
        height = int(self.controls["height"].value)
        width = max(16, int(round(height * aspect)))
        viewmat, K = pinhole_camera(position, wxyz, fov_y, width, height)
        with self._lock:
            motion = self.motion
        start = time.perf_counter()
        verts = reenactment_vertices(self.renderer.model, motion)[0]
        image = self.renderer.render(verts, frame_motion(motion), viewmat, K, width, height)
        if image.is_cuda:
            torch.cuda.synchronize(image.device)
        ms = 1000.0 * (time.perf_counter() - start)
        return to_uint8(image), ms

    def _render_loop(self) -> None:
        next_frame = time.perf_counter()
        while not self._stop.is_set():
            if self.playing:
                delay = next_frame - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_frame = max(next_frame, time.perf_counter() - 1.0) + 1.0 / float(self.controls["fps"].value)
                self.select_frame(self.frame_index + 1)
            elif not self._dirty.wait(0.1):
                continue
            self._dirty.clear()
            for client in list(self.server.get_clients().values()):
                try:
                    self._render_client(client)
                except Exception as exc:  # a client that left mid-frame, a render error: show it, keep serving
                    self.controls["stats"].content = f"**render error:** {type(exc).__name__}: {exc}"

    def _render_client(self, client) -> None:
        camera = client.camera
        if camera.update_timestamp == 0.0:  # its first camera message has not arrived yet
            return
        image, ms = self.render_view(camera.position, camera.wxyz, camera.fov, camera.aspect)
        client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
        self.last_image[client.client_id] = image
        self.frames_sent += 1
        h, w = image.shape[:2]
        self.controls["stats"].content = (f"**{1000.0 / ms:.1f} FPS** ({ms:.1f} ms per frame) at {w}x{h}  \n"
                                          f"{self.renderer.backend.describe()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.server.stop()


def _clamp(value: float, bounds: tuple) -> float:
    return min(max(float(value), bounds[0]), bounds[1])


