"""Export a trained avatar as standard 3D Gaussian Splatting files, in world space.

    python export.py -m OUTPUT [--timestep T | --target SEQUENCE_FOLDER] [--camera-split val]
                     [--format ply|splat] [--sh-degree 3] [--directions 256] [--sphere-fit] -o PATH

- One frame (default): the avatar posed by a timestep of its own subject (``--timestep``; default:
  the first timestep of the ``--camera-split`` split, test then val when not given), written to
  PATH (``.ply`` or ``.splat``).
- ``--target``: every timestep of a driving sequence (as ``render.py --target`` takes it: the
  avatar's identity, the target's motion), one file per frame: PATH/00000.ply, PATH/00001.ply ...
- Formats and the colour fit for triplane avatars: :mod:`scene.interop.export_3dgs`. The SH fit's RMS
  error is printed and written to a JSON beside the output (PATH with ``.json``, or
  PATH/export.json for ``--target``), with a check: the exported file rendered by ``rasterize()``
  from the camera of the frame against the avatar's own render (PSNR, max abs difference).
"""
from __future__ import annotations

import argparse
import sys

from scene.interop.exporter import Exporter, ExportOptions
from utils.errors import UserFacingError


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


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The :class:`ExportOptions` the command line asks for."""
    return ExportOptions(model_path=args.model_path, output=args.output, timestep=args.timestep, target=args.target,
                         camera_split=args.camera_split, format=args.format, sh_degree=args.sh_degree,
                         directions=args.directions, sphere_fit=args.sphere_fit, iteration=args.iteration,
                         flame=args.flame, device=args.device, quiet=args.quiet)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        Exporter(options_from_args(args)).run()
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
