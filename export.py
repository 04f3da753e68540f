"""Export a trained avatar as standard 3D Gaussian Splatting files, in world space.

    python export.py -m OUTPUT [--timestep T | --target SEQUENCE_FOLDER] [--camera-split val]
                     [--format ply|splat] [--sh-degree 3] [--directions 256] [--sphere-fit] -o PATH

- One frame (default): the avatar posed by a timestep of its own subject (``--timestep``; default:
  the first timestep of the ``--camera-split`` split, test then val when not given), written to
  PATH (``.ply`` or ``.splat``).
- ``--target``: every timestep of a driving sequence (as ``render.py --target`` takes it: the
  avatar's identity, the target's motion), one file per frame: PATH/00000.ply, PATH/00001.ply ...
- Formats and the colour fit for triplane avatars: :mod:`scene.export_3dgs`. The SH fit's RMS
  error is printed and written to a JSON beside the output (PATH with ``.json``, or
  PATH/export.json for ``--target``), with a check: the exported file rendered by ``rasterize()``
  from the camera of the frame against the avatar's own render (PSNR, max abs difference).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import render
from gaussian_renderer import rasterize
from scene.cameras import camera_center_from_w2c
from scene.datasets import load_sequence
from scene.export_3dgs import TriplaneSHFit, export_frame, read_3dgs_ply, write_3dgs_ply, write_splat
from scene.protocols import protocol_splits
from utils.errors import InputFileError, UserFacingError
from utils.image_metrics import psnr


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export an avatar frame as a standard 3DGS PLY or .splat file.")
    p.add_argument("-m", "--model_path", required=True)
    p.add_argument("-o", "--output", required=True, help="file (one frame) or folder (--target)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--timestep", type=int, help="timestep of the avatar's own subject")
    which.add_argument("--target", help="a sequence folder whose FLAME motion drives the avatar (one file per frame)")
    p.add_argument("--camera-split", choices=("train", "val", "test"),
                   help="split whose first frame gives the default timestep and the check camera (default: test, else val)")
    p.add_argument("--format", choices=("ply", "splat"), default="ply")
    p.add_argument("--sh-degree", type=int, help="SH degree of the file (default: 3 for triplane avatars, the "
                                                 "avatar's own degree for per-splat SH)")
    p.add_argument("--directions", type=int, default=256, help="view directions of the SH fit (triplane avatars)")
    p.add_argument("--sphere-fit", action="store_true",
                   help="weight every view direction alike in the SH fit (default: favour the directions the "
                        "training cameras see each splat from)")
    p.add_argument("--iteration", type=int, help="checkpoint (default: the latest)")
    p.add_argument("--flame", help="FLAME model pickle (default: the one training used)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


class Exporter:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        if args.sh_degree is not None and not 0 <= args.sh_degree <= 3:
            raise InputFileError(f"--sh-degree must be 0, 1, 2 or 3, got {args.sh_degree}")
        if args.directions < 1:
            raise InputFileError(f"--directions must be positive, got {args.directions}")
        self.renderer = render.quiet_renderer(args.model_path, args.device, "torch", args.iteration, args.flame)
        self.avatar = self.renderer.model.avatar
        self.sh_fit = None
        self._rig_centers = None
        if self.avatar.color is not None:
            self.sh_fit = TriplaneSHFit(self.avatar, 3 if args.sh_degree is None else args.sh_degree, args.directions)

    @property
    def rig_centers(self) -> torch.Tensor | None:
        """(C, 3) centres of the training subject's cameras, which the SH fit favours; None with
        --sphere-fit or for avatars with their own SH."""
        if self.sh_fit is None or self.args.sphere_fit:
            return None
        if self._rig_centers is None:
            views = {f.camera_index: f.viewmat for f in self.renderer.subject.all_frames()}
            self._rig_centers = torch.stack([camera_center_from_w2c(v) for v in views.values()]).to(self.renderer.device)
        return self._rig_centers

    def log(self, text: str) -> None:
        if not self.args.quiet:
            print(text)

    def frame_camera(self):
        """The first frame of the chosen split (its timestep is the default; its camera checks)."""
        subject = self.renderer.subject
        protocol = self.renderer.protocol
        splits = subject.frames if protocol == "none" else protocol_splits(subject, protocol)
        order = [self.args.camera_split] if self.args.camera_split else ["test", "val", "train"]
        for name in order:
            if splits.get(name):
                return splits[name][0]
        if self.args.camera_split:
            raise InputFileError(f"--camera-split {self.args.camera_split}: the split has no frames under the "
                                 f"model's protocol ({protocol})")
        return subject.all_frames()[0]

    @torch.no_grad()
    def export(self, motion: dict, path: Path, camera=None) -> dict:
        """Write one frame driven by ``motion`` (dict of (1, ...) FLAME tensors) to ``path``."""
        verts = render.reenactment_vertices(self.renderer.model, motion)[0]
        expr, jaw = motion["expr"][0], motion["jaw_pose"][0]
        splats = export_frame(self.avatar, verts, expr, jaw, self.sh_fit, self.args.sh_degree, self.rig_centers)
        if self.args.format == "ply":
            write_3dgs_ply(path, splats)
        else:
            write_splat(path, splats)
        info = {"file": str(path), "splats": int(splats.means.shape[0]), "sh_degree": splats.sh_degree,
                "sh_fit_rms": splats.fit_rms, "sh_fit_rms_sphere": splats.fit_rms_sphere}
        if camera is not None and self.args.format == "ply":
            info.update(self.check(path, verts, expr, jaw, camera))
        return info

    def read_back(self, path: Path) -> dict:
        """An exported PLY as :func:`read_3dgs_ply` reads it, on the avatar's device."""
        device = self.renderer.device
        return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in read_3dgs_ply(path).items()}

    def file_vs_render(self, data: dict, verts, expr, jaw, viewmat, K, width: int, height: int) -> tuple[float, float]:
        """A read-back file (:meth:`read_back`) rasterized by the plain ``rasterize()`` from a camera
        (viewmat (4, 4), K (3, 3)) against the avatar's own render: (PSNR dB, max abs difference)."""
        viewmat, K = viewmat.to(verts.device), K.to(verts.device)
        rgb, _, _ = rasterize(data["means"], data["quats"], data["scales"], data["opacities"], data["sh"],
                              viewmat[None], K[None], width, height, sh_degree=data["sh_degree"],
                              backgrounds=self.renderer.background[None], backend="torch",
                              tile_size=16 if verts.is_cuda else 8)
        ours = self.renderer.render(verts, expr, jaw, viewmat, K, width, height)
        return float(psnr(rgb[0], ours)), float((rgb[0] - ours).abs().max())

    def check(self, path: Path, verts, expr, jaw, camera) -> dict:
        """The PLY as read back, rasterized from ``camera``, against the avatar's own render."""
        value, max_diff = self.file_vs_render(self.read_back(path), verts, expr, jaw, camera.viewmat, camera.K,
                                              camera.width, camera.height)
        return {"check_camera": camera.image_name, "check_psnr_db": value, "check_max_abs_diff": max_diff}

    def run(self) -> dict:
        args, out = self.args, Path(self.args.output)
        suffix = "." + args.format
        if args.target:
            sequence = load_sequence(args.target, resolution_scale=self.renderer.model.config.run.resolution_scale)
            timesteps = sorted({f.timestep for f in sequence.frames["all"]})
            if not timesteps:
                raise InputFileError(f"{args.target}: the target has no frames to drive the avatar")
            motion_fn = self.renderer.motion_from(sequence)
            out.mkdir(parents=True, exist_ok=True)
            frames = [self.export(motion_fn(t), out / f"{i:05d}{suffix}") | {"timestep": t}
                      for i, t in enumerate(timesteps)]
            report_path = out / "export.json"
        else:
            if out.suffix.lower() != suffix:
                raise InputFileError(f"-o {out}: a --format {args.format} file must end in {suffix}")
            subject = self.renderer.subject
            camera = self.frame_camera()
            t = camera.timestep if args.timestep is None else args.timestep
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
                  "format": args.format, "colour": "fitted SH" if self.sh_fit is not None else "per-splat SH",
                  "sh_fit_directions": args.directions if self.sh_fit is not None else None,
                  "sh_fit_weighting": None if self.sh_fit is None else ("sphere" if args.sphere_fit else "rig views"),
                  "sh_fit_rms_mean": sum(rms) / len(rms) if rms else None, "frames": frames}
        report_path.write_text(json.dumps(report, indent=2))
        fit = (f"; SH fit RMS {report['sh_fit_rms_mean']:.4f} over {args.directions} directions "
               f"({report['sh_fit_weighting']})" if rms else "")
        check = ""
        if "check_psnr_db" in frames[0]:
            check = (f"; rasterized back vs the avatar's render: {frames[0]['check_psnr_db']:.2f} dB PSNR, "
                     f"max abs diff {frames[0]['check_max_abs_diff']:.2e}")
        self.log(f"[export] {len(frames)} frame(s), {frames[0]['splats']} splats, SH degree {frames[0]['sh_degree']} "
                 f"-> {out}{fit}{check}; report {report_path}")
        return report


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        Exporter(args).run()
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
