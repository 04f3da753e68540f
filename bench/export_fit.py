"""How well export.py's SH colour holds a triplane avatar's look, from the rig and between it.

    python bench/export_fit.py -m OUTPUT [OUTPUT ...] [--orbit 24]

For each avatar: exports its first val frame twice (SH fit favouring the rig's view directions, the
default, and ``--sphere-fit``), rasterizes each PLY as read back with the plain ``rasterize()``
from every camera of the rig and from ``--orbit`` turntable cameras (novel views around the
head at the rig's distance, most of them between or behind the rig's cameras), and prints the mean
PSNR against the avatar's own render of the same camera, per weighting and camera group.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene.interop.exporter import Exporter, ExportOptions  # noqa: E402
from scene.renderer import reenactment_vertices  # noqa: E402


@torch.no_grad()
def measure(model: str, orbit: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for weighting, sphere_fit in (("rig views", False), ("sphere", True)):
            ply = Path(tmp) / f"{len(rows)}.ply"
            exporter = Exporter(ExportOptions(model_path=model, output=str(ply), camera_split="val", quiet=True,
                                              device="cpu", sphere_fit=sphere_fit))
            exporter.run()
            renderer, subject = exporter.renderer, exporter.renderer.subject
            frame = exporter.frame_camera()
            motion = renderer.motion_from(subject, renderer.fine_tuned)(frame.timestep)
            verts = reenactment_vertices(renderer.model, motion)[0]
            expr, jaw = motion["expr"][0], motion["jaw_pose"][0]
            data = exporter.read_back(ply)
            rig = {f.camera_index: f for f in subject.all_frames()}
            rig_psnr = [exporter.file_vs_render(data, verts, expr, jaw, f.viewmat, f.K, f.width, f.height)[0]
                        for f in rig.values()]
            orbit_psnr = [exporter.file_vs_render(data, verts, expr, jaw, v, frame.K, frame.width, frame.height)[0]
                          for v in renderer.orbit_cameras(orbit, frame)]
            rows[weighting] = {"rig": float(np.mean(rig_psnr)), "rig_min": float(np.min(rig_psnr)),
                               "orbit": float(np.mean(orbit_psnr)), "orbit_min": float(np.min(orbit_psnr))}
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model_path", nargs="+", required=True)
    p.add_argument("--orbit", type=int, default=24, help="turntable cameras (novel views)")
    args = p.parse_args(argv)
    print("| avatar | SH fit | rig cameras, mean (min) PSNR dB | turntable, mean (min) PSNR dB |")
    print("|---|---|---|---|")
    for model in args.model_path:
        for weighting, r in measure(model, args.orbit).items():
            print(f"| {model} | {weighting} | {r['rig']:.2f} ({r['rig_min']:.2f}) | {r['orbit']:.2f} "
                  f"({r['orbit_min']:.2f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
