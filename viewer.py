"""Interactive web viewer: look at a trained avatar from any angle and drive it with FLAME.

    python viewer.py -m OUTPUT [--port 8080] [--host 127.0.0.1] [-t SEQUENCE ...] [--resolution H]
                     [--iteration N] [--device D] [--backend B]

Open http://localhost:8080 in a browser. On a remote machine (a cluster node), the viewer runs
headless; reach it through an SSH tunnel: ``ssh -L 8080:localhost:8080 NODE``, then open
http://localhost:8080 on your own machine.

The page (a viser server; its web client ships inside the wheel, nothing is fetched) shows the
avatar rendered from the browser's camera (drag to orbit, scroll to zoom) with the fastest backend
that passes its check, and these controls:

- Sequence: the avatar's own splits (its tracked, fine-tuned FLAME motion) and every ``-t`` folder
  (or one typed into the page), as ``render.py --target`` takes them; play, pause, scrub.
  Selecting a frame loads its FLAME parameters into the pose controls.
- Pose: the first expression components as sliders (every other component through "component"
  and "value"), jaw, eyes (gaze of both), neck and global head rotation; "Neutral" zeroes the
  expression, jaw, eyes and neck.
- View: jump to a camera of the training rig; the render height (the width follows the browser's
  aspect); the measured render time and FPS of the avatar (decoders and rasterization).

On a CPU, keep the render height low (the default is 256 on a CPU, 720 on a GPU).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

from gaussian_renderer import backend_choices_text
from scene.viewer import AvatarViewer, ViewerOptions
from utils.cli_common import describe_device
from utils.errors import UserFacingError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Web viewer of a trained avatar with FLAME controls.")
    p.add_argument("-m", "--model_path", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default: this machine only; reach it through an SSH tunnel)")
    p.add_argument("-t", "--target", action="append", default=[],
                   help="a subject or sequence folder to play (repeatable), as render.py --target takes it")
    p.add_argument("--resolution", type=int, help="render height in pixels (default: 256 on a CPU, 720 on a GPU)")
    p.add_argument("--iteration", type=int, help="checkpoint (default: the latest)")
    p.add_argument("--flame", help="FLAME model pickle (default: the one training used)")
    p.add_argument("-s", "--source_path", help="the training subject's folder, if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", help=f"rasterizer: {backend_choices_text()} (default: the training run's)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="decoders and projection as torch.compile graphs: fewer kernel launches per frame (pays on a "
                        "GPU); the first frame, and each new render size, compiles")
    return p.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> ViewerOptions:
    """The :class:`ViewerOptions` the command line asks for."""
    return ViewerOptions(model_path=args.model_path, targets=list(args.target), resolution=args.resolution,
                         host=args.host, port=args.port, iteration=args.iteration, flame=args.flame,
                         source_path=args.source_path, device=args.device, backend=args.backend, quiet=args.quiet,
                         compile=args.compile)


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("viser") is None:
        print("error: the viewer needs viser: pip install -r requirements.txt (it lists viser)", file=sys.stderr)
        return 2
    try:
        viewer = AvatarViewer(options_from_args(args))
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = viewer.server.get_port()
    print(f"[viewer] {args.model_path} (iteration {viewer.renderer.model.iteration}), device "
          f"{describe_device(viewer.device)}; {viewer.renderer.backend.describe()}")
    print(f"[viewer] open http://localhost:{port} (on a remote machine: ssh -L {port}:localhost:{port} HOST); "
          "Ctrl+C stops")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
