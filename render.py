"""Render a trained avatar: dataset splits, self/cross-identity reenactment, orbits, videos, speed.

    python render.py -m OUTPUT [--split val test] [--target SUBJECT_OR_SEQUENCE] [--camera N]
                     [--orbit] [--video] [--benchmark] [--half] [--iteration N] [-s SUBJECT]
                     [--device D] [--backend B]   (GaussianAvatars' --skip_*, --select_camera_id, -t
                     also work: README, "Coming from GaussianAvatars")

- Splits of the training subject under the run's protocol (val = novel views, test = self-
  reenactment: the held-out sequence under ``ga``, the subject's FREE sequence under ``paper``;
  scene/data/protocols.py): PNGs in ``OUTPUT/<split>/ours_<iteration>/{renders,gt,masks}/`` (the layout
  evaluate.py scores). ``--camera N``: that camera's frames only.
- ``--target PATH``: reenactment. The avatar keeps its own shape and static offset; expression,
  jaw, eyes, neck, global pose and translation come from the target's FLAME parameters. Frames are
  rendered with the target's cameras (ground truth saved beside them), or with camera N of the
  avatar's own rig (``--camera N``). Output: ``OUTPUT/reenact_<target>/ours_<iteration>/``.
- ``--orbit``: a turntable around the head for one timestep (``--timestep``), or following the
  ``--target`` sequence. Output: ``OUTPUT/orbit[_<target>]/ours_<iteration>/``.
- ``--video``: mp4 of the renders; for frames with ground truth, also render | GT | error.
- ``--benchmark``: FPS of the full avatar at the data's resolution, split into decoders and
  rasterization (with the Triton backend on CUDA also replayed as one CUDA graph); printed and
  saved to ``OUTPUT/benchmark.json``.
- Always: a storage report (bytes of each saved component) in ``OUTPUT/storage.json``.
- ``--half``: export the avatar with 16-bit network weights to ``OUTPUT/export_half/`` and
  report the PSNR between full- and half-precision renders of the val split.

Resuming: each output folder holds ``render.json`` (utils/render_manifest.py): the model (its
checkpoint's content), the settings (backend, device) and every frame asked for. A rerun with the
same model and settings keeps the frames an earlier run completed (each PNG is written atomically,
the render last, so a present render is a complete frame) and renders the rest: a render stopped by
SIGTERM/SIGUSR1 (exit 3, as a scheduler's preemption), Ctrl-C (exit 130), a crash or a kill ends,
once rerun, with the very files of a straight render. Frames not asked for this time (e.g. after a
run with more ``--max-frames``, or with ``--camera`` where no GT is written) are deleted, so that
evaluate.py scores exactly this run's frames; with another model or settings every ``*.png`` of
the folder's ``renders/``, ``gt/`` and ``masks/`` is deleted first (a line says why; other files and
folders stay). evaluate.py refuses a folder whose render did not finish.

PNGs are encoded and written by ``--write-workers`` threads (default: one per core, at most 4;
0: on the main thread) while the next frame renders; the files are the same either way.

Exit status: 0 done, 2 bad input (one line), 3 stopped by SIGTERM/SIGUSR1, 130 stopped by Ctrl-C
(frames kept: the same command continues).
"""
from __future__ import annotations

import argparse
import sys

from gaussian_renderer import backend_choices_text
from scene.renderer import Renderer, RenderOptions, RenderStopped
from utils.errors import UserFacingError
from utils.stop_signals import StopSignals

SPLITS = ("train", "val", "test")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Render a trained avatar.")
    p.add_argument("-m", "--model_path", required=True)
    p.add_argument("--split", nargs="+", choices=("train", "val", "test"), help="splits of the training subject (default: val test)")
    p.add_argument("-t", "--target", "--target_path", help="a subject or sequence folder whose FLAME motion drives the avatar")
    p.add_argument("--camera", "--select_camera_id", type=int, metavar="N",
                   help="camera N of the avatar's own rig: splits render only its frames; a --target is rendered "
                        "from it instead of the target's cameras")
    p.add_argument("-s", "--source_path", help="the training subject's folder, instead of the source_path in "
                                               "OUTPUT/config.yaml (data moved since training)")
    p.add_argument("--orbit", action="store_true", help="turntable around the head")
    p.add_argument("--orbit-frames", type=int, default=60)
    p.add_argument("--timestep", type=int, help="timestep for --orbit without --target (default: the first training timestep)")
    p.add_argument("--video", action="store_true", help="also write mp4 videos")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--benchmark", action="store_true", help="measure rendering speed")
    p.add_argument("--benchmark-frames", type=int, default=50)
    p.add_argument("--half", action="store_true", help="export a 16-bit avatar and measure its PSNR change")
    p.add_argument("--iteration", type=int, help="checkpoint to render (default: the latest)")
    p.add_argument("--max-frames", type=int, default=0, help="render at most N frames per split/target (evenly spaced)")
    p.add_argument("--flame", help="FLAME model pickle (default: the one training used)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", help=f"rasterizer: {backend_choices_text()} (default: the training run's)")
    p.add_argument("--write-workers", type=int, metavar="N",
                   help="threads writing the PNGs while the next frame renders (default: one per CPU core, at most 4; "
                        "0: on the main thread)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="decoders and projection as torch.compile graphs: fewer kernel launches per frame (pays on a "
                        "GPU); the first frame compiles (minutes on a small CPU)")
    for split in SPLITS:
        p.add_argument(f"--skip_{split}", action="store_true",
                       help=f"GaussianAvatars' flag: do not render the {split} split (with any --skip_*, the splits "
                            "default to train val test, as there)")
    return p.parse_args(argv)


def chosen_splits(args: argparse.Namespace) -> list[str]:
    """The splits to render: --split, else none when a target, orbit, benchmark or export is asked
    for, else val test (train val test, GaussianAvatars' default, once a --skip_* flag is given);
    less the --skip_* ones."""
    skipped = {split for split in SPLITS if getattr(args, f"skip_{split}")}
    if args.split:
        base = args.split
    elif args.target or args.orbit or args.benchmark or args.half:
        base = []
    else:
        base = list(SPLITS) if skipped else ["val", "test"]
    return [split for split in base if split not in skipped]


def options_from_args(args: argparse.Namespace) -> RenderOptions:
    """The :class:`RenderOptions` the command line asks for."""
    return RenderOptions(model_path=args.model_path, iteration=args.iteration, device=args.device,
                         backend=args.backend, flame=args.flame, source_path=args.source_path, camera=args.camera,
                         max_frames=args.max_frames, video=args.video, fps=args.fps, orbit_frames=args.orbit_frames,
                         timestep=args.timestep, benchmark_frames=args.benchmark_frames, quiet=args.quiet,
                         write_workers=args.write_workers, compile=args.compile)


def main(argv=None) -> int:
    args = parse_args(argv)
    splits = chosen_splits(args)
    if not (splits or args.target or args.orbit or args.benchmark or args.half):
        print("[render] nothing to render: every split is skipped (--skip_* / --split)", file=sys.stderr)
        return 0
    if args.write_workers is not None and args.write_workers < 0:
        print(f"error: --write-workers {args.write_workers}: give 0 (write on the main thread) or more threads",
              file=sys.stderr)
        return 2
    try:
        with StopSignals() as stop:
            renderer = Renderer(options_from_args(args), stop=stop)
            jobs = [lambda: renderer.render_splits(splits)] if splits else []
            if args.target and not args.orbit:
                jobs.append(lambda: renderer.render_target(args.target))
            if args.orbit:
                jobs.append(lambda: renderer.render_orbit(args.target))
            if args.benchmark:
                jobs.append(renderer.benchmark)
            if args.half:
                jobs.append(renderer.export_half)
            for job in jobs:
                if stop.received:  # between two jobs: the finished ones are complete on disk
                    raise RenderStopped(f"[render] stopped by {stop.received} before all was rendered; run the same "
                                        "command again to continue (what is finished is kept)", stop.exit_code)
                job()
            renderer.storage()  # a few file sizes: done even when a stop signal came after the last frame
    except RenderStopped as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
