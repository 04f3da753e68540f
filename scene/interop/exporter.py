"""Exporting a trained avatar as standard 3D Gaussian Splatting files: the :class:`Exporter` behind
export.py (formats and the SH fit: :mod:`scene.interop.export_3dgs`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from flame_model import frame_motion
from gaussian_renderer import rasterize
from scene.data.cameras import camera_center_from_w2c
from scene.data.datasets import load_sequence
from scene.data.protocols import protocol_splits
from scene.interop.export_3dgs import SHFit, export_frame, read_3dgs_ply, write_3dgs_ply, write_splat
from scene.renderer import Renderer, RenderOptions, reenactment_vertices
from scene.rendering import render_avatar
from utils.errors import InputFileError
from utils.image_metrics import psnr

__all__ = ["ExportOptions", "Exporter"]


@dataclass
class ExportOptions:
    """What export.py writes (its flags; module docstring of export.py).

    Attributes:
        model_path: the model folder; output: a file (one frame) or a folder (``target``).
        timestep: the avatar's own timestep to export (None: the ``camera_split``'s first frame's).
        target: a sequence folder whose FLAME motion drives the avatar (one file per frame).
        camera_split: the split whose first frame gives the default timestep and the check camera.
        format: "ply" or "splat"; sh_degree: the file's SH degree (None: 3 when fitted, else the
            avatar's own); directions / sphere_fit: the SH fit's view directions and weighting.
        iteration, flame, device, quiet: as :class:`scene.renderer.RenderOptions`.
    """

    model_path: str
    output: str
    timestep: int | None = None
    target: str | None = None
    camera_split: str | None = None
    format: str = "ply"
    sh_degree: int | None = None
    directions: int = 256
    sphere_fit: bool = False
    iteration: int | None = None
    flame: str | None = None
    device: str = "auto"
    quiet: bool = False


class Exporter:
    """Writes a trained avatar's frames as standard 3DGS files (export.py), with the SH fit of a
    colour that has no SH of its own and a check of the file against the avatar's render."""

    def __init__(self, options: ExportOptions):
        self.options = options
        if options.sh_degree is not None and not 0 <= options.sh_degree <= 3:
            raise InputFileError(f"--sh-degree must be 0, 1, 2 or 3, got {options.sh_degree}")
        if options.directions < 1:
            raise InputFileError(f"--directions must be positive, got {options.directions}")
        self.renderer = Renderer(RenderOptions(model_path=options.model_path, iteration=options.iteration,
                                               device=options.device, backend="torch", flame=options.flame, quiet=True))
        self.avatar = self.renderer.model.avatar
        screen = self.avatar.screen
        # With a screen-space stage whose first rasterized channels are RGB (GHA's), the file holds
        # those: the splats' own image, at the stage's input resolution, without the stage.
        self.stage_left_out = screen.type_name if screen.enabled() else None
        if screen.enabled() and not screen.exports_feature_rgb:
            raise InputFileError(f"{options.model_path}: the avatar's images come from a screen-space stage "
                                 f"(model.screen {screen.type_name!r}) after rasterization, which a 3DGS "
                                 "file cannot hold; export needs an avatar whose splats make the image")
        self.sh_fit = None
        self._rig_centers = None
        if self.avatar.export_sh(None) is None and self.avatar.color.view_dependent:  # no SH of its own: fitted
            self.sh_fit = SHFit(self.avatar, 3 if options.sh_degree is None else options.sh_degree, options.directions)

    def colour_kind(self) -> str:
        """How the file's colour was made (the report's "colour")."""
        if self.sh_fit is not None:
            return "fitted SH"
        if not self.avatar.color.view_dependent and self.avatar.export_sh(None) is None:
            return "frame colour (first three channels, SH degree 0)"
        return "the avatar's own SH (the frame's)"

    @property
    def rig_centers(self) -> torch.Tensor | None:
        """(C, 3) centres of the training subject's cameras, which the SH fit favours; None with
        --sphere-fit or for avatars with their own SH."""
        if self.sh_fit is None or self.options.sphere_fit:
            return None
        if self._rig_centers is None:
            views = {f.camera_index: f.viewmat for f in self.renderer.subject.all_frames()}
            self._rig_centers = torch.stack([camera_center_from_w2c(v) for v in views.values()]).to(self.renderer.device)
        return self._rig_centers

    def log(self, text: str) -> None:
        if not self.options.quiet:
            print(text)

    def frame_camera(self):
        """The first frame of the chosen split (its timestep is the default; its camera checks)."""
        subject = self.renderer.subject
        protocol = self.renderer.protocol
        splits = subject.frames if protocol == "none" else protocol_splits(subject, protocol)
        order = [self.options.camera_split] if self.options.camera_split else ["test", "val", "train"]
        for name in order:
            if splits.get(name):
                return splits[name][0]
        if self.options.camera_split:
            raise InputFileError(f"--camera-split {self.options.camera_split}: the split has no frames under the "
                                 f"model's protocol ({protocol})")
        return subject.all_frames()[0]

    @torch.no_grad()
    def export(self, motion: dict, path: Path, camera=None) -> dict:
        """Write one frame driven by ``motion`` (dict of (1, ...) FLAME tensors) to ``path``."""
        verts = reenactment_vertices(self.renderer.model, motion)[0]
        one = frame_motion(motion)
        splats = export_frame(self.avatar, verts, one, self.sh_fit, self.options.sh_degree, self.rig_centers)
        if self.options.format == "ply":
            write_3dgs_ply(path, splats)
        else:
            write_splat(path, splats)
        info = {"file": str(path), "splats": int(splats.means.shape[0]), "sh_degree": splats.sh_degree,
                "sh_fit_rms": splats.fit_rms, "sh_fit_rms_sphere": splats.fit_rms_sphere}
        if camera is not None and self.options.format == "ply":
            info.update(self.check(path, verts, one, camera))
        return info

    def read_back(self, path: Path) -> dict:
        """An exported PLY as :func:`read_3dgs_ply` reads it, on the avatar's device."""
        device = self.renderer.device
        return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in read_3dgs_ply(path).items()}

    def file_vs_render(self, data: dict, verts, motion, viewmat, K, width: int, height: int) -> tuple[float, float]:
        """A read-back file (:meth:`read_back`) rasterized by the plain ``rasterize()`` from a camera
        (viewmat (4, 4), K (3, 3)) against the avatar's own render: (PSNR dB, max abs difference).
        With a screen stage left out of the file, against the first three rasterized channels, at
        their size."""
        viewmat, K = viewmat.to(verts.device), K.to(verts.device)
        rgb, _, _ = rasterize(data["means"], data["quats"], data["scales"], data["opacities"], data["sh"],
                              viewmat[None], K[None], width, height, sh_degree=data["sh_degree"],
                              backgrounds=self.renderer.background[None], backend="torch",
                              tile_size=16 if verts.is_cuda else 8)
        if self.stage_left_out is None:
            ours = self.renderer.render(verts, motion, viewmat, K, width, height)
        else:  # the rasterized first three channels, at the stage's input size, against the file there
            result = render_avatar(self.avatar, verts, motion, viewmat, K, width, height, self.renderer.background,
                                   backend="torch")
            ours = result.features[..., :3]
            (w, h), size = result.raster_size, torch.tensor([result.raster_size[0] / width, result.raster_size[1] / height,
                                                             1.0], device=K.device)
            rgb, _, _ = rasterize(data["means"], data["quats"], data["scales"], data["opacities"], data["sh"],
                                  viewmat[None], (K * size[:, None])[None], w, h, sh_degree=data["sh_degree"],
                                  backgrounds=self.renderer.background[None], backend="torch",
                                  tile_size=16 if verts.is_cuda else 8)
        return float(psnr(rgb[0], ours)), float((rgb[0] - ours).abs().max())

    def check(self, path: Path, verts, motion, camera) -> dict:
        """The PLY as read back, rasterized from ``camera``, against the avatar's own render."""
        value, max_diff = self.file_vs_render(self.read_back(path), verts, motion, camera.viewmat, camera.K,
                                              camera.width, camera.height)
        return {"check_camera": camera.image_name, "check_psnr_db": value, "check_max_abs_diff": max_diff}

    def run(self) -> dict:
        options, out = self.options, Path(self.options.output)
        suffix = "." + options.format
        if options.target:
            sequence = load_sequence(options.target, resolution_scale=self.renderer.model.config.run.resolution_scale)
            timesteps = sorted({f.timestep for f in sequence.frames["all"]})
            if not timesteps:
                raise InputFileError(f"{options.target}: the target has no frames to drive the avatar")
            motion_fn = self.renderer.motion_from(sequence)
            out.mkdir(parents=True, exist_ok=True)
            frames = [self.export(motion_fn(t), out / f"{i:05d}{suffix}") | {"timestep": t}
                      for i, t in enumerate(timesteps)]
            report_path = out / "export.json"
        else:
            if out.suffix.lower() != suffix:
                raise InputFileError(f"-o {out}: a --format {options.format} file must end in {suffix}")
            subject = self.renderer.subject
            camera = self.frame_camera()
            t = camera.timestep if options.timestep is None else options.timestep
            if t not in subject.timestep_row:
                raise InputFileError(f"--timestep {t} is not a timestep of {subject.root} "
                                     f"(it has {subject.timesteps[0]}..{subject.timesteps[-1]})")
            if t != camera.timestep:  # the check camera sees the chosen timestep
                camera = next(f for f in subject.all_frames() if f.timestep == t)
            frames = [self.export(self.renderer.motion_from(subject, self.renderer.fine_tuned)(t), out, camera)
                      | {"timestep": t}]
            report_path = out.with_suffix(".json")
        rms = [f["sh_fit_rms"] for f in frames if f["sh_fit_rms"] is not None]
        report = {"model": str(self.renderer.model_dir), "iteration": self.renderer.model.iteration,
                  "format": options.format, "colour": self.colour_kind(),
                  "screen_stage_left_out": self.stage_left_out,
                  "sh_fit_directions": options.directions if self.sh_fit is not None else None,
                  "sh_fit_weighting": None if self.sh_fit is None else ("sphere" if options.sphere_fit else "rig views"),
                  "sh_fit_rms_mean": sum(rms) / len(rms) if rms else None, "frames": frames}
        report_path.write_text(json.dumps(report, indent=2))
        fit = (f"; SH fit RMS {report['sh_fit_rms_mean']:.4f} over {options.directions} directions "
               f"({report['sh_fit_weighting']})" if rms else "")
        check = ""
        if "check_psnr_db" in frames[0]:
            check = (f"; rasterized back vs the avatar's render: {frames[0]['check_psnr_db']:.2f} dB PSNR, "
                     f"max abs diff {frames[0]['check_max_abs_diff']:.2e}")
        stage = ""
        if self.stage_left_out is not None:
            stage = (f"; the screen-space stage (model.screen {self.stage_left_out!r}) is not in the file: it holds "
                     "the splats' first three colour channels, the low-resolution RGB the stage starts from")
        self.log(f"[export] {len(frames)} frame(s), {frames[0]['splats']} splats, SH degree {frames[0]['sh_degree']} "
                 f"-> {out}{fit}{check}{stage}; report {report_path}")
        return report


