"""Import a GaussianAvatars-trained model as a model folder of ours (GaussianAvatars config).

    python scripts/import_gaussian_avatars.py GA_MODEL_FOLDER -s SUBJECT -o OUTPUT [--iteration N]
           [--flame PATH] [--flame-masks PATH] [--ga-faces FACES.npy] [--protocol ga|paper|none]

Reads ``GA_MODEL_FOLDER/point_cloud/iteration_N/{point_cloud.ply,flame_param.npz}`` and writes
OUTPUT/config.yaml and OUTPUT/checkpoints/iteration_N/, which render.py, evaluate.py and export.py
read like a model trained here. ``--ga-faces``: GA's face list as an (F, 3) integer .npy (e.g.
``np.save("faces.npy", gaussians.flame_model.faces.cpu().numpy())`` in GA's code), used to map its
teeth faces to ours by their vertices; without it GA's teeth faces are taken to be ours, in our
order. Conventions: :mod:`scene.interop.ga_import`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scene.interop.ga_import import import_gaussian_avatars  # noqa: E402
from scene.data.protocols import PROTOCOLS  # noqa: E402
from utils.errors import UserFacingError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Import a GaussianAvatars output folder as a model folder of ours.")
    p.add_argument("ga_model", help="GaussianAvatars output folder (point_cloud/iteration_N/)")
    p.add_argument("-s", "--source_path", required=True, help="the subject folder GaussianAvatars was trained on")
    p.add_argument("-o", "--output", required=True, help="new model folder")
    p.add_argument("--iteration", type=int, help="GaussianAvatars iteration (default: the highest saved)")
    p.add_argument("--flame", help="FLAME model pickle (default: flame_model/assets/flame/flame2023.pkl)")
    p.add_argument("--flame-masks", help="FLAME masks pickle (default: beside the model)")
    p.add_argument("--ga-faces", help="GaussianAvatars' face list, an (F, 3) integer .npy")
    p.add_argument("--protocol", choices=PROTOCOLS, default="ga", help="evaluation protocol to record (default: ga)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import_gaussian_avatars(args.ga_model, args.source_path, args.output, args.iteration, args.flame,
                                args.flame_masks, args.ga_faces, args.protocol,
                                log=(lambda _: None) if args.quiet else print)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
