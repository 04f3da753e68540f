"""A headless Chromium driven through the DevTools protocol: open a page, run JavaScript, take
screenshots. Used by the viewer's browser test and ``scripts/viewer_screenshot.py``.

Needs a Chromium or Chrome executable (Debian/Ubuntu: ``apt install chromium``) and the
``websockets`` package (installed with viser). WebGL runs on SwiftShader, Chromium's software
renderer, so no GPU or display is needed.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of the first Chromium/Chrome executable on PATH, or None."""
    for name in EXECUTABLES:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless browser with one page of ``width`` x ``height`` CSS pixels (device scale 1).

    Use as a context manager; ``close()`` ends the browser and deletes its profile folder.
    """

    def __init__(self, width: int = 1280, height: int = 800, executable: str | None = None, timeout: float = 30.0):
        from websockets.sync.client import connect

        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError(f"no Chromium found on PATH (looked for {', '.join(EXECUTABLES)}); "
                                    "install it, e.g. apt install chromium")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._proc = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--no-first-run", "--disable-gpu-sandbox",
             "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--remote-debugging-port=0",
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=timeout) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
            self._next_id = 0
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except Exception:
            self.close()
            raise

    def _devtools_port(self) -> int:
        """The port Chromium chose, from the DevToolsActivePort file it writes in its profile."""
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with code {self._proc.returncode} before it opened DevTools")
            if active.is_file() and active.read_text().strip():
                return int(active.read_text().split()[0])
            time.sleep(0.05)
        raise TimeoutError(f"Chromium opened no DevTools port in {self.timeout:.0f} s")

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """Value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error in {expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.1):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"{expression!r} stayed false for {timeout or self.timeout:.0f} s")

    def screenshot(self) -> np.ndarray:
        """The page as it is displayed: (H, W, 3) uint8."""
        from PIL import Image

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
