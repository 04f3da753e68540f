"""Screenshot of the web viewer showing an avatar, taken in headless Chromium (no display needed).

    python scripts/viewer_screenshot.py -m OUTPUT -o viewer.png [--size 1600 900] [--resolution 512]
                                        [--jaw 0.3] [--camera N]

Starts viewer.py's server on a free local port, opens the page, waits until the browser has
received a rendered frame, and saves what the page shows (docs/viewer.png was made this way).
Needs Chromium (``apt install chromium``).
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from scene.viewer import AvatarViewer, ViewerOptions  # noqa: E402
from utils.errors import UserFacingError  # noqa: E402
from utils.headless_chromium import HeadlessChromium  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model_path", required=True)
    p.add_argument("-o", "--output", required=True, help="PNG file")
    p.add_argument("--size", type=int, nargs=2, default=(1600, 900), metavar=("W", "H"), help="browser page size")
    p.add_argument("--resolution", type=int, default=512, help="the viewer's render height")
    p.add_argument("--jaw", type=float, default=0.0, help="jaw opening (radians) to show")
    p.add_argument("--camera", type=int, help="rig camera to look from (default: the viewer's)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to let the page draw the frame")
    args = p.parse_args(argv)
    try:
        avatar_viewer = AvatarViewer(ViewerOptions(model_path=args.model_path, port=free_port(), resolution=args.resolution,
                                                     quiet=True))
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.camera is not None:
            avatar_viewer.controls["camera"].value = str(args.camera)
        avatar_viewer.controls["jaw open"].value = args.jaw
        with HeadlessChromium(*args.size, timeout=120) as browser:
            browser.navigate(f"http://127.0.0.1:{avatar_viewer.server.get_port()}/")
            deadline = time.monotonic() + 120
            while not avatar_viewer.frames_sent and time.monotonic() < deadline:
                time.sleep(0.1)
            if not avatar_viewer.frames_sent:
                print("error: the viewer sent no frame to the page within 120 s", file=sys.stderr)
                return 1
            time.sleep(args.settle)
            # Headless Chromium draws WebGL in software, and the page says so in a notification
            # that would cover the picture: close it.
            browser.evaluate("document.querySelectorAll('[role=alert] button').forEach(b => b.click())")
            time.sleep(1.0)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(browser.screenshot()).save(args.output)
        stats = avatar_viewer.controls["stats"].content.replace("**", "").replace("  \n", "; ")
    finally:
        avatar_viewer.close()
    print(f"[screenshot] {args.output}; the viewer's last frame: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
