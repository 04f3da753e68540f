"""Rendering a trained avatar: the :class:`Renderer` behind render.py, viewer.py and export.py.

    renderer = Renderer(RenderOptions(model_path="output/s000", backend="torch"))
    image = renderer.render(vertices, frame_motion(motion), viewmat, K, width, height)   # (H, W, 3)

It loads the model folder (config.yaml + a checkpoint) through :func:`scene.model.checkpoint.load_model`
and renders frames through :func:`scene.rendering.render_avatar`; its jobs write the folders
evaluate.py scores (module docstring of render.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from flame_model import MOTION_KEYS, frame_motion
from gaussian_renderer import select_backend
from scene.data.datasets import load_sequence, load_subject
from scene.data.protocols import protocol_splits, saved_protocol
from scene.model.checkpoint import LoadedModel, load_avatar_components, load_model, save_avatar, storage_report
from scene.rendering import check_compile, measure_render_speed, render_avatar
from utils.cli_common import describe_device, even_subset, pick_device
from utils.errors import InputFileError, UserFacingError
from utils.image_io import read_rgb, to_uint8, write_png
from utils.image_metrics import comparison_panel, psnr
from utils.render_manifest import read_manifest, write_manifest
from utils.stop_signals import StopSignals
from utils.subject_ids import own_free_sequence
from utils.write_pool import WritePool, default_write_workers

__all__ = ["RenderOptions", "Renderer", "RenderStopped", "FrameWriteError", "FrameTask", "FRAME_SUBFOLDERS",
           "fresh_frame_folders", "reenactment_vertices"]

FRAME_SUBFOLDERS = ("renders", "gt", "masks")


def splat_attribute_bytes(gaussians) -> dict[str, int]:
    """Bytes of each per-splat tensor in the splats' PLY (float32 columns, the binding int32),
    largest first: what the storage report's ``splats`` entry is made of, per component attribute
    (e.g. SH, or a method's blendshape deltas)."""
    n = len(gaussians)
    sizes = {name: 4 * n * math.prod(p.shape[1:]) for name, p in gaussians.params.items()}
    sizes["binding"] = 4 * n
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


@dataclass
class RenderOptions:
    """How to load and render a model folder (render.py's options; viewer.py and export.py set
    the first few).

    Attributes:
        model_path: the model folder; iteration: its checkpoint (None: the latest).
        device: auto | cpu | cuda[:N]; backend: the rasterizer (None: the training run's).
        flame: the FLAME model pickle (None: the one training used).
        source_path: the training subject's folder (None: the one in config.yaml).
        camera: render only this camera of the rig (splits), or a target from it.
        max_frames: at most this many frames per split / target, evenly spaced (0: all).
        video, fps: also write mp4 videos at this rate.
        orbit_frames, timestep: the turntable's length and timestep (None: the first training one).
        benchmark_frames: frames timed by :meth:`Renderer.benchmark`.
        compile: decoders and projection as ``torch.compile`` graphs (``render_avatar``'s option).
        quiet: no progress bars or log lines.
        write_workers: threads that encode and write the PNGs while the next frame renders
            (None: :func:`utils.write_pool.default_write_workers`; 0: on the main thread).
    """

    model_path: str
    iteration: int | None = None
    device: str = "auto"
    backend: str | None = None
    flame: str | None = None
    source_path: str | None = None
    camera: int | None = None
    max_frames: int = 0
    video: bool = False
    fps: int = 25
    orbit_frames: int = 60
    timestep: int | None = None
    benchmark_frames: int = 50
    quiet: bool = False
    write_workers: int | None = None
    compile: bool = False


def fresh_frame_folders(out: Path, subfolders=FRAME_SUBFOLDERS) -> int:
    """Create ``out/<sub>/`` for each subfolder and delete the ``*.png`` files in them (what an
    earlier run of render.py wrote there; nothing else is touched). Returns how many went."""
    removed = 0
    for sub in subfolders:
        folder = out / sub
        folder.mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            if png.is_file() and not png.is_symlink():
                png.unlink()
                removed += 1
    return removed


class RenderStopped(UserFacingError):
    """A stop signal ended the render at a frame boundary; what it wrote is kept and a rerun of
    the same command continues from there. ``exit_code``: 3 (SIGTERM/SIGUSR1) or 130 (SIGINT)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class FrameWriteError(UserFacingError):
    """A frame's PNG could not be written (disk full, permissions)."""


@dataclass
class FrameTask:
    """One frame of an output folder.

    Attributes:
        name: the file stem of its PNGs.
        spec: a digest of what its pixels depend on besides the model and the render settings
            (camera, size, motion, GT files): a frame already on disk is kept only if it is unchanged.
        make: renders it on the main thread -> {subfolder: image}, each image (H, W, C) float in
            [0, 1] on the CPU, a zero-argument loader of one (run by the writer: GT decoding), or
            None (nothing to write). ``renders`` comes last.
    """

    name: str
    spec: str
    make: Callable[[], dict]


def spec_digest(*parts) -> str:
    """A short digest of tensors (dtype and values) and plain values (their repr)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()[:20]


def write_frame(out: Path, name: str, outputs: dict) -> None:
    """Write a frame's PNGs atomically, ``renders/<name>.png`` last: a present render means the
    frame's GT and mask are complete too (what a resumed render relies on)."""
    for sub in sorted(outputs, key=lambda k: k == "renders"):
        image = outputs[sub]() if callable(outputs[sub]) else outputs[sub]
        if image is None:
            continue
        path = out / sub / f"{name}.png"
        try:
            write_png(path, image, atomic=True)
        except OSError as exc:
            raise FrameWriteError(f"cannot write {path}: {exc}; free space or fix the folder's permissions, then run "
                                  "the same render.py command again (the frames already written are kept)") from exc


def remove_leftover_temporaries(folder: Path) -> None:
    """Delete the temporary files of atomic writes a killed render left (``.<name>.*.tmp``)."""
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()


def reenactment_vertices(model: LoadedModel, motion: dict) -> torch.Tensor:
    """FLAME vertices (B, V, 3) with the avatar's identity and the target's motion.

    Args:
        motion: dict of (B, ...) tensors with keys expr, rotation, neck_pose, jaw_pose,
            eyes_pose, translation (the driving frames' FLAME parameters).
    """
    return model.flame.motion_vertices(model.shape, motion, model.static_offset)


class Renderer:
    """A trained avatar loaded for rendering, and the jobs of render.py (splits, reenactment,
    orbits, videos, speed, storage, 16-bit export); viewer.py and export.py use it to render."""

    def __init__(self, options: RenderOptions, stop: StopSignals | None = None):
        """``stop``: the stop-signal watch of the caller's whole run (render.py's); None: each
        job of frames watches for stop signals while it runs."""
        self.options = options
        self.stop = stop
        self.device = pick_device(options.device)
        self.model = load_model(options.model_path, options.iteration, flame_path=options.flame, device=self.device)
        self.model_dir = Path(options.model_path)
        cfg = self.model.config
        self.background = torch.tensor(cfg.run.background, dtype=torch.float32, device=self.device)
        self.backend = select_backend(options.backend or cfg.run.backend, self.device)
        self.log(f"[render] device {describe_device(self.device)}; {self.backend.describe()}")
        if options.compile:
            check_compile(self.device, "--compile")
        self._subject = None
        self.fine_tuned = None
        ft = self.model.folder / "flame_params.pt"
        if ft.is_file():
            self.fine_tuned = {k: v.to(self.device) for k, v in torch.load(ft, weights_only=True).items()}
        if options.source_path:
            self.use_source_path(options.source_path)

    def use_source_path(self, source: str) -> None:
        """Read the training subject (and its FREE sequence beside it) from ``source`` instead of
        the ``source_path`` in config.yaml (data moved since training)."""
        folder = Path(source)
        if not folder.is_dir():
            raise InputFileError(f"-s {source}: not a folder (expected the subject folder with transforms_*.json)")
        saved = self.model.extra.get("source_path")
        self.model.extra["source_path"] = str(folder.resolve())
        self._subject = None
        self.log(f"[render] subject read from {folder.resolve()} (-s), not {saved} (config.yaml)")

    def log(self, text: str) -> None:
        if not self.options.quiet:
            tqdm.write(text)

    @property
    def subject(self):
        """The avatar's training subject (lazily loaded; needed for splits and its camera rig)."""
        if self._subject is None:
            source = self.model.extra.get("source_path")
            if not source:
                raise InputFileError(f"{self.model_dir}/config.yaml does not name the training subject (source_path)")
            self._subject = load_subject(source, resolution_scale=self.model.config.run.resolution_scale)
        return self._subject

    def out_dir(self, name: str) -> Path:
        return self.model_dir / name / f"ours_{self.model.iteration}"

    @torch.no_grad()
    def render(self, vertices, motion, viewmat, K, width, height):
        """vertices (V, 3) posed by ``motion`` (one frame's FLAME parameters, :func:`flame_model.frame_motion`),
        viewmat (4, 4), K (3, 3) -> image (height, width, 3)."""
        return render_avatar(self.model.avatar, vertices, motion, viewmat.to(self.device), K.to(self.device),
                             width, height, self.background, backend=self.backend.name,
                             compile=self.options.compile).image

    # -- frames with ground truth ---------------------------------------------------------------

    def render_frames(self, name: str, subject, frames: list, motion_fn, camera_frame=None) -> Path:
        """Render ``frames`` (CameraFrame list) into OUTPUT/<name>/ours_<it>/, with GT where it applies."""
        out = self.out_dir(name)
        own_camera = camera_frame is None  # the target's own camera: its photo is the ground truth
        motion_specs: dict[int, str] = {}  # one motion per timestep, shared by its cameras

        def task(frame) -> FrameTask:
            cam = camera_frame or frame
            if frame.timestep not in motion_specs:
                motion = motion_fn(frame.timestep)
                motion_specs[frame.timestep] = spec_digest(*(motion[k] for k in MOTION_KEYS))
            spec = spec_digest(motion_specs[frame.timestep], cam.viewmat, cam.K, cam.width, cam.height,
                               *((str(frame.image_path), str(frame.mask_path)) if own_camera else ()))

            def make() -> dict:
                motion = motion_fn(frame.timestep)
                verts = reenactment_vertices(self.model, motion)[0]
                image = self.render(verts, frame_motion(motion), cam.viewmat, cam.K, cam.width,
                                    cam.height)
                outputs = {}
                if own_camera:  # decoded by the writer, off the main thread
                    outputs["gt"] = lambda: subject.load_image(frame)
                    outputs["masks"] = lambda: subject.load_mask(frame)
                outputs["renders"] = image.cpu()
                return outputs
            return FrameTask(frame.image_name, spec, make)

        names, changed = self.render_job(out, [task(f) for f in frames], FRAME_SUBFOLDERS, desc=f"render {name}")
        self.log(f"[render] {len(names)} frames -> {out}")
        if self.options.video and names:
            self.write_videos(out, names, only_missing=not changed)
        return out

    # -- a job of frames: resumable, written on a pool --------------------------------------------

    @cached_property
    def model_identity(self) -> dict:
        """What identifies the rendered model: its checkpoint (iteration, the digest of every file
        but the training state), its config and FLAME files."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.model.folder.iterdir() if p.is_file() and p.name != "training_state.pt"):
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        config = json.dumps(self.model.config.to_dict(), sort_keys=True, default=str)
        return {"iteration": self.model.iteration, "checkpoint_sha256": h.hexdigest(),
                "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
                "flame": str(self.options.flame or self.model.extra.get("flame_model")),
                "flame_masks": str(self.model.extra.get("flame_masks"))}

    def render_settings(self) -> dict:
        """Everything besides the model and the frames that can change a rendered pixel."""
        return {"backend": self.backend.name, "device": self.device.type, "torch": torch.__version__,
                "compile": bool(self.options.compile)}  # compiled arithmetic may differ in the last bits

    def prepare_output(self, out: Path, manifest: dict) -> list[str]:
        """Make ``out`` hold only frames of ``manifest`` that an earlier run of this very model and
        settings completed (the rest of its frame PNGs removed, with a line saying why); returns
        the names of those frames."""
        subfolders = manifest["subfolders"]
        for sub in subfolders:
            (out / sub).mkdir(parents=True, exist_ok=True)
            remove_leftover_temporaries(out / sub)
        old = read_manifest(out)
        differs = None if old is not None else [f"no readable {out.name}/render.json"]
        if old is not None:
            differs = [f"model {k}" for k in manifest["model"] if old.get("model", {}).get(k) != manifest["model"][k]]
            differs += [f"setting {k}" for k in manifest["settings"]
                        if old.get("settings", {}).get(k) != manifest["settings"][k]]
        if differs:
            removed = fresh_frame_folders(out, subfolders)
            if removed:
                self.log(f"[render] removed {removed} file(s) of an earlier run from {out}: it is not this render "
                         f"({', '.join(differs)})")
            return []
        wanted, previous = manifest["frames"], old["frames"]
        kept = [n for n in wanted if previous.get(n) == wanted[n] and (out / "renders" / f"{n}.png").is_file()]
        keep = set(kept)
        removed = 0
        for sub in subfolders:
            for png in (out / sub).glob("*.png"):
                if png.stem not in keep and png.is_file() and not png.is_symlink():
                    png.unlink()
                    removed += 1
        if removed:
            self.log(f"[render] removed {removed} file(s) from {out} of frames not asked for this time or changed")
        if kept:
            self.log(f"[render] {out}: {len(kept)} of {len(wanted)} frames were written by an earlier run of this "
                     f"model and settings and are kept; rendering the other {len(wanted) - len(kept)}")
        return kept

    def render_job(self, out: Path, tasks: list[FrameTask], subfolders, desc: str) -> tuple[list[str], bool]:
        """Render ``tasks`` into ``out`` in order, the PNGs written by a :class:`WritePool`,
        skipping the frames an earlier, stopped run of the same model and settings wrote.

        Every way it ends leaves a state a rerun resumes from exactly: the manifest is written
        first, each frame's PNGs atomically (its render last); a stop signal ends it at a frame
        boundary (:class:`RenderStopped`) once the queued frames are written.

        Returns (the frame names in order, whether anything was rendered or removed).
        """
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"{out}: two frames share a name")
        manifest = {"model": self.model_identity, "settings": self.render_settings(),
                    "subfolders": sorted(subfolders), "frames": {t.name: t.spec for t in tasks}}
        previous = read_manifest(out)
        kept = set(self.prepare_output(out, manifest))
        todo = [t for t in tasks if t.name not in kept]
        finished_before = (not todo and previous is not None and previous.get("complete") is True
                           and all(previous.get(k) == v for k, v in manifest.items()))
        if not finished_before:
            write_manifest(out, {**manifest, "complete": False})
        workers = default_write_workers() if self.options.write_workers is None else self.options.write_workers
        with (contextlib.nullcontext(self.stop) if self.stop is not None else StopSignals()) as stop:
            with WritePool(workers) as pool:
                bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=desc, disable=self.options.quiet,
                           dynamic_ncols=True)
                for task in todo:
                    if stop.received:
                        break
                    pool.submit(write_frame, out, task.name, task.make())
                    bar.update(1)
                bar.close()
            done = sum((out / "renders" / f"{n}.png").is_file() for n in names)
            if done < len(names):
                raise RenderStopped(f"[render] stopped by {stop.received}: {done} of {len(names)} frames written to "
                                    f"{out}; run the same command again to continue from there", stop.exit_code)
        if not finished_before:
            write_manifest(out, {**manifest, "complete": True})
        return names, not finished_before

    def motion_from(self, subject, fine_tuned=None):
        """timestep -> FLAME motion dict (1, ...) of ``subject`` (fine-tuned values when given)."""
        def motion(timestep: int) -> dict:
            row = subject.timestep_row[timestep]
            source = fine_tuned if fine_tuned is not None else subject.flame
            return {k: source[k][row:row + 1].to(self.device).float() for k in MOTION_KEYS}
        return motion

    @property
    def protocol(self) -> str:
        return saved_protocol(self.model.extra)

    def render_splits(self, splits: list[str]) -> None:
        """Render the held-out splits of the run's protocol (scene/data/protocols.py) beside their GT."""
        subject = self.subject
        by_protocol = subject.frames if self.protocol == "none" else protocol_splits(subject, self.protocol)
        camera = self.options.camera
        if camera is not None and camera not in subject.camera_indices:
            raise InputFileError(f"--camera {camera}: {subject.root} has no camera with camera_index {camera} "
                                 f"(available: {sorted(subject.camera_indices)})")
        for split in splits:
            if self.protocol == "paper" and split == "test":
                self.render_free_test()
                continue
            frames = [f for f in by_protocol[split] if camera is None or f.camera_index == camera]
            frames = even_subset(frames, self.options.max_frames)
            if not frames:
                # Said even under --quiet: evaluate.py will find no folder for this split.
                seen_by = "" if camera is None else f" seen by camera {camera}"
                why = " (a one-camera subject has no novel views)" if split == "val" and camera is None else ""
                print(f"[render] split {split} has no frames{seen_by} under protocol {self.protocol}{why}; nothing "
                      f"to render or score", file=sys.stderr)
                continue
            self.render_frames(split, subject, frames, self.motion_from(subject, self.fine_tuned))

    def render_free_test(self) -> None:
        """The paper protocol's test split: the subject's own FREE sequence, all cameras, driven by
        its tracked FLAME motion (self-reenactment), scored against its photos."""
        free, why = own_free_sequence(self.model.extra["source_path"])
        if free is None:
            self.log(f"[render] protocol paper: {why}; the test split is skipped")
            return
        sequence = load_sequence(free, resolution_scale=self.model.config.run.resolution_scale)
        camera = self.options.camera
        frames = even_subset([f for f in sequence.frames["all"] if camera is None or f.camera_index == camera],
                             self.options.max_frames)
        self.log(f"[render] protocol paper: test = {free.name} ({len(frames)} frames)")
        self.render_frames("test", sequence, frames, self.motion_from(sequence))

    def rig_camera(self, index: int):
        """A frame of the avatar's own rig seen by camera ``index`` (for its K and viewmat)."""
        for split in ("train", "val", "test"):
            for frame in self.subject.frames[split]:
                if frame.camera_index == index:
                    return frame
        raise InputFileError(f"--camera {index}: the avatar's subject has no camera with camera_index {index} "
                             f"(available: {sorted(self.subject.camera_indices)})")

    def render_target(self, target: str) -> None:
        scale = self.model.config.run.resolution_scale
        sequence = load_sequence(target, resolution_scale=scale)
        frames = sequence.frames["all"]
        if self.options.camera is not None:
            # One frame per timestep, seen by the avatar's own camera N.
            seen, unique = set(), []
            for f in frames:
                if f.timestep not in seen:
                    seen.add(f.timestep)
                    unique.append(f)
            frames = unique
        frames = even_subset(frames, self.options.max_frames)
        if not frames:
            raise InputFileError(f"{target}: the target has no frames to drive the avatar")
        name = f"reenact_{Path(target).resolve().name}"
        camera = self.rig_camera(self.options.camera) if self.options.camera is not None else None
        if camera is not None:
            name += f"_cam{self.options.camera:02d}"
        self.render_frames(name, sequence, frames, self.motion_from(sequence), camera_frame=camera)

    # -- orbit ----------------------------------------------------------------------------------

    def orbit_cameras(self, n: int, reference) -> list[torch.Tensor]:
        """World-to-camera matrices (4, 4) circling the head at the rig's distance and height."""
        head = self.model.avatar.canonical_vertices.mean(0).cpu()
        c2w = torch.linalg.inv(reference.viewmat.cpu())
        radius = float((c2w[:3, 3] - head).norm())
        height = float(c2w[1, 3] - head[1])
        flat = math.sqrt(max(radius ** 2 - height ** 2, 1e-6))
        mats = []
        for i in range(n):
            a = 2 * math.pi * i / n
            eye = head + torch.tensor([flat * math.sin(a), height, flat * math.cos(a)])
            forward = torch.nn.functional.normalize(head - eye, dim=0)  # OpenCV camera looks along +z
            right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, -1.0, 0.0])), dim=0)
            down = torch.linalg.cross(forward, right)
            R = torch.stack([right, down, forward])  # world -> camera rows
            view = torch.eye(4)
            view[:3, :3] = R
            view[:3, 3] = -R @ eye
            mats.append(view)
        return mats

    def render_orbit(self, target: str | None = None) -> None:
        """A turntable around the head at one timestep, or following the ``target`` sequence."""
        reference = self.rig_camera(8) if any(f.camera_index == 8 for f in self.subject.frames["val"] + self.subject.frames["train"]) else self.subject.frames["train"][0]
        n = self.options.orbit_frames
        if target:
            sequence = load_sequence(target, resolution_scale=self.model.config.run.resolution_scale)
            timesteps = sorted({f.timestep for f in sequence.frames["all"]})
            motion_fn, name = self.motion_from(sequence), f"orbit_{Path(target).resolve().name}"
            timesteps = [timesteps[i % len(timesteps)] for i in range(max(n, len(timesteps)))]
        else:
            t = self.options.timestep if self.options.timestep is not None else self.subject.frames["train"][0].timestep
            if t not in self.subject.timestep_row:
                raise InputFileError(f"--timestep {t} is not a timestep of {self.subject.root}")
            motion_fn, name, timesteps = self.motion_from(self.subject, self.fine_tuned), "orbit", [t] * n
        cams = self.orbit_cameras(len(timesteps), reference)
        out = self.out_dir(name)

        def task(i: int, t: int, view: torch.Tensor) -> FrameTask:
            def make() -> dict:
                motion = motion_fn(t)
                verts = reenactment_vertices(self.model, motion)[0]
                image = self.render(verts, frame_motion(motion), view, reference.K,
                                    reference.width, reference.height)
                return {"renders": image.cpu()}
            motion = motion_fn(t)
            spec = spec_digest(*(motion[k] for k in MOTION_KEYS), view, reference.K, reference.width, reference.height)
            return FrameTask(f"{i:05d}", spec, make)

        tasks = [task(i, t, view) for i, (t, view) in enumerate(zip(timesteps, cams))]
        names, changed = self.render_job(out, tasks, ("renders",), desc="orbit")
        self.log(f"[render] orbit of {len(names)} frames -> {out / 'renders'}")
        if self.options.video:
            self.write_videos(out, names, only_missing=not changed)

    # -- videos ---------------------------------------------------------------------------------

    def write_videos(self, out: Path, names: list[str], only_missing: bool = False) -> None:
        """render.mp4 of all frames in order, and compare.mp4 (render | GT | error) where GT exists;
        each written to a temporary file renamed into place (a stopped run leaves no half video).
        ``only_missing``: skip the videos already there (the frames did not change)."""
        import imageio.v2 as imageio

        def even(a: np.ndarray) -> np.ndarray:  # H.264 in yuv420p needs even sizes
            return a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2]

        has_gt = all((out / "gt" / f"{n}.png").is_file() for n in names)
        files = [file for file in ("render.mp4", "compare.mp4")[:2 if has_gt else 1]
                 if not (only_missing and (out / file).is_file())]
        if not files:
            return
        # Streamed frame by frame: at NeRSemble's size a split's frames do not fit in memory.
        with contextlib.ExitStack() as stack:
            writers = {file: stack.enter_context(imageio.get_writer(
                out / f".{file}.partial.mp4", fps=self.options.fps, codec="libx264", quality=8, macro_block_size=1))
                for file in files}
            for n in names:
                render = read_rgb(out / "renders" / f"{n}.png")
                if "render.mp4" in writers:
                    writers["render.mp4"].append_data(even(to_uint8(render)))
                if "compare.mp4" in writers:
                    gt = read_rgb(out / "gt" / f"{n}.png")
                    writers["compare.mp4"].append_data(even(to_uint8(comparison_panel(render, gt))))
        for file in files:
            os.replace(out / f".{file}.partial.mp4", out / file)
            self.log(f"[render] video {out / file}")

    # -- speed and storage ----------------------------------------------------------------------

    def benchmark(self) -> dict:
        """Frames per second at the data's resolution, split into decoders and rasterization."""
        avatar = self.model.avatar
        frame = (self.subject.frames["test"] or self.subject.frames["val"] or self.subject.frames["train"])[0]
        motion = self.motion_from(self.subject, self.fine_tuned)(frame.timestep)
        verts = reenactment_vertices(self.model, motion)[0]
        speed = measure_render_speed(avatar, verts, frame_motion(motion),
                                     frame.viewmat.to(self.device), frame.K.to(self.device), frame.width, frame.height,
                                     self.background, self.backend.name, frames=self.options.benchmark_frames,
                                     compile=self.options.compile)
        result = {"device": describe_device(self.device), "backend": self.backend.name,
                  "backend_reason": self.backend.reason, "width": frame.width, "height": frame.height,
                  "splats": len(avatar.gaussians), **speed}
        (self.model_dir / "benchmark.json").write_text(json.dumps(result, indent=2))
        print(f"[benchmark] {result['fps']:.1f} FPS at {frame.width}x{frame.height} on {result['device']} with "
              f"{result['backend']} ({result['splats']} splats): {result['ms_per_frame']:.2f} ms/frame; "
              f"decoders {result['ms_decoders']:.2f} ms, rasterization {result['ms_rasterization']:.2f} ms")
        if "fps_cuda_graph" in result:
            print(f"[benchmark] as one CUDA graph: {result['fps_cuda_graph']:.1f} FPS "
                  f"({result['ms_per_frame_cuda_graph']:.2f} ms/frame)")
        return result

    def storage(self) -> dict:
        sizes = storage_report(self.model.folder)
        total = sum(sizes.values())
        by_attribute = splat_attribute_bytes(self.model.avatar.gaussians)
        report = {"checkpoint": str(self.model.folder), "bytes": sizes, "total_bytes": total,
                  "splats": len(self.model.avatar.gaussians), "splat_attribute_bytes": by_attribute}
        (self.model_dir / "storage.json").write_text(json.dumps(report, indent=2))
        parts = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items())
        print(f"[storage] {total / 1e6:.2f} MB total ({parts})")
        print("[storage] splats by attribute: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in by_attribute.items()))
        return report

    @torch.no_grad()
    def export_half(self) -> dict:
        """Save the avatar with float16 networks; report the PSNR between fp32 and fp16 renders."""
        out = self.model_dir / "export_half"
        out.mkdir(exist_ok=True)
        save_avatar(out, self.model.avatar, self.model.shape, self.model.static_offset, half=True)
        frames = even_subset(self.subject.frames["val"] or self.subject.frames["test"] or self.subject.frames["train"], 8)
        avatar = self.model.avatar
        motion_fn = self.motion_from(self.subject, self.fine_tuned)
        renders = {}
        # The half renders come from the export as written (what a user who loads it gets); the
        # full-precision checkpoint is loaded back afterwards.
        for precision, folder in (("full", self.model.folder), ("half", out)):
            load_avatar_components(avatar, folder)
            renders[precision] = []
            for frame in frames:
                motion = motion_fn(frame.timestep)
                verts = reenactment_vertices(self.model, motion)[0]
                renders[precision].append(self.render(verts, frame_motion(motion), frame.viewmat, frame.K, frame.width, frame.height))
        load_avatar_components(avatar, self.model.folder)
        psnrs = [float(psnr(a, b)) for a, b in zip(renders["full"], renders["half"])]
        full_size = sum(storage_report(self.model.folder).values())
        half_size = sum(storage_report(out).values())
        report = {"folder": str(out), "bytes_full": full_size, "bytes_half": half_size,
                  "psnr_full_vs_half_db": float(np.mean(psnrs)), "frames": len(frames)}
        (self.model_dir / "export_half.json").write_text(json.dumps(report, indent=2))
        print(f"[half] {full_size / 1e6:.2f} MB -> {half_size / 1e6:.2f} MB; full vs half renders: "
              f"{report['psnr_full_vs_half_db']:.1f} dB PSNR over {len(frames)} frames")
        return report


