#!/usr/bin/env python
"""Generate the synthetic FLAME-format head model and NeRSemble-format subjects.

    python scripts/make_synthetic_subject.py --out data/synthetic [--preset demo|realistic|monocular|nersemble]
        [--seed 0] [--identities 1] [--downscale 5] [--cameras 16] [--timesteps 20] [--test-timesteps 10]
        [--free-timesteps 10] [--train-sequences 3] [--tracking-noise 0] [--blur 0] [--jpeg-quality 0] [--torso]
        [--workers 0] [--preview] [--force] [--quiet]

Presets (explicit options override them):
  demo       110x160 images (downscale 5), 3 training sequences x 20 timesteps, TEST and FREE x 10,
             clean images and exact tracking: the CPU demo of ./run.sh.
  realistic  the demo's sizes with what real capture adds: tracking error on the written FLAME
             parameters (0.01 rad on every pose, 1 mm on the translation, 0.1 on the expression
             coefficients: a multi-view tracker's typical 1-3 px landmark error at a 2,000 px focal
             length and 1 m is about 1 mm, what 0.01 rad does 10 cm from the neck joint), a mild
             optical blur (0.5 px), video-like JPEG compression (quality 90, 4:2:0 chroma) and a
             clothed torso below the neck that FLAME does not model (static while the head moves;
             the cameras aim lower, the head in the upper part of the frame, as in NeRSemble).
  monocular  a monocular talking-head clip: one frontal camera, one take of 200 timesteps, the
             first 160 (80%) training (EXP-1) and the last 40 scored (TEST: self-reenactment on
             unseen expressions), with the realistic preset's tracking error, degradation and torso.
  nersemble  NeRSemble's full 550x802 (downscale 1), 16 cameras, 2 training sequences x 8
             timesteps, TEST and FREE x 4: speed measured on real image sizes (bench/gpu_check.py).

Timesteps are rendered in parallel, one process per core (``--workers``); the output does not
depend on the number of workers. Skips the work when the output already holds a complete dataset
with the same settings (see ``OUT/synthetic_manifest.json``). Library:
:func:`synthetic.generate_dataset`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.errors import UserFacingError  # noqa: E402
from synthetic import DEFAULT_EVAL_TIMESTEPS, DEFAULT_TIMESTEPS, generate_dataset  # noqa: E402


CLEAN = {"tracking_noise": 0.0, "blur": 0.0, "jpeg_quality": 0, "torso": False}
REAL_CAPTURE = {"tracking_noise": 0.01, "blur": 0.5, "jpeg_quality": 90, "torso": True}  # see "realistic" above
DEMO_SIZES = {"downscale": 5, "cameras": 16, "timesteps": DEFAULT_TIMESTEPS, "test_timesteps": DEFAULT_EVAL_TIMESTEPS,
              "free_timesteps": DEFAULT_EVAL_TIMESTEPS, "train_sequences": 3}
PRESETS = {
    "demo": {**DEMO_SIZES, **CLEAN},
    "realistic": {**DEMO_SIZES, **REAL_CAPTURE},
    "monocular": {"downscale": 5, "cameras": 1, "timesteps": 160, "test_timesteps": 40,
                  "free_timesteps": DEFAULT_EVAL_TIMESTEPS, "train_sequences": 1, **REAL_CAPTURE},
    "nersemble": {"downscale": 1, "cameras": 16, "timesteps": 8, "test_timesteps": 4, "free_timesteps": 4,
                  "train_sequences": 2, **CLEAN},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (identities, motion, camera jitter)")
    p.add_argument("--identities", type=int, default=1, help="number of subjects s000, s001, ...")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes (see above)")
    p.add_argument("--downscale", type=int, help="image downscale of 550x802 (5 -> 110x160)")
    p.add_argument("--cameras", type=int, help="cameras on the 120-degree arc (camera 8 = frontal)")
    p.add_argument("--timesteps", type=int, help="timesteps per training sequence")
    p.add_argument("--test-timesteps", type=int, help="TEST timesteps")
    p.add_argument("--free-timesteps", type=int, help="FREE timesteps")
    p.add_argument("--train-sequences", type=int, help="training sequences EXP-1..")
    p.add_argument("--workers", type=int, default=0, help="rendering processes (0: one per CPU core)")
    p.add_argument("--tracking-noise", type=float,
                   help="sigma (radians) of noise on the written FLAME parameters; images use clean ones")
    p.add_argument("--blur", type=float, help="Gaussian blur sigma of the images, output pixels (0: none)")
    p.add_argument("--jpeg-quality", type=int, help="JPEG round trip of the images, quality 1..95 (0: none)")
    p.add_argument("--torso", action=argparse.BooleanOptionalAction, default=None,
                   help="a static clothed torso below the neck (not in FLAME), cameras aimed lower to show it")
    p.add_argument("--preview", action="store_true", help="also write OUT/<id>/contact_sheet.png")
    p.add_argument("--force", action="store_true", help="regenerate even if the output is complete")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _disk_usage(path: Path) -> str:
    try:
        return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return f"{size / 2 ** 20:.1f}M"


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        paths = generate_dataset(args.out, seed=args.seed, n_identities=args.identities, downscale=args.downscale,
                                 n_cameras=args.cameras, timesteps_per_sequence=args.timesteps,
                                 n_train_sequences=args.train_sequences, tracking_noise=args.tracking_noise,
                                 force=args.force, progress=not args.quiet, test_timesteps=args.test_timesteps,
                                 free_timesteps=args.free_timesteps, workers=args.workers, blur_sigma=args.blur,
                                 jpeg_quality=args.jpeg_quality, torso=args.torso)
        if args.preview:
            from synthetic.preview import write_contact_sheets
            for sheet in write_contact_sheets(paths, progress=not args.quiet):
                print(f"Contact sheet: {sheet}")
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for sid, subj in paths["subjects"].items():
            print(f"{sid}: union subject {subj['union']}")
        print(f"Done in {time.perf_counter() - start:.1f} s; {paths['root']} holds {_disk_usage(Path(paths['root']))}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
