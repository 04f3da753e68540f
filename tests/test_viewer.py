"""viewer.py: the viewer's camera, its FLAME controls, sequences, and the page in a real browser."""
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.importorskip("viser", reason="viser is in requirements.txt; this environment lacks it")

from flame_model import frame_motion  # noqa: E402
from scene.renderer import reenactment_vertices  # noqa: E402
import train  # noqa: E402
import viewer  # noqa: E402
from scene.viewer import NEUTRAL_KEYS  # noqa: E402
from scene.data.cameras import camera_pose, pinhole_camera  # noqa: E402
from conftest import SYNTHETIC_FIXTURE_SETTINGS  # noqa: E402
from test_train import SMALL_SCHEDULE  # noqa: E402
from utils.headless_chromium import HeadlessChromium, find_chromium  # noqa: E402
from utils.rotations import quat_to_matrix  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model(synthetic_dataset, tmp_path_factory) -> Path:
    """A short run on the synthetic head: a head-shaped avatar on the white background."""
    out = tmp_path_factory.mktemp("viewer") / "model"
    args = ["-s", synthetic_dataset["subjects"]["s000"]["union"], "-m", out, "--flame", synthetic_dataset["flame_model"],
            *SMALL_SCHEDULE, "--iterations", "20"]
    assert train.main(list(map(str, args))) == 0
    return out


@pytest.fixture
def avatar_viewer(model):
    v = viewer.AvatarViewer(viewer.options_from_args(viewer.parse_args(["-m", str(model), "--port", str(free_port()), "--quiet",
                                                "--resolution", "64", "--device", "cpu"])))
    yield v
    v.close()


def wait_until(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_pinhole_camera_inverts_camera_pose():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, generator=g), dim=0)
    viewmat, K = pinhole_camera(np.array([0.1, -0.2, 1.3]), q.numpy(), 0.4, 120, 90)
    position, wxyz, fov = camera_pose(viewmat, K, 90)
    viewmat2, K2 = pinhole_camera(position, wxyz, fov, 120, 90)
    assert torch.allclose(viewmat2, viewmat, atol=1e-6) and torch.allclose(K2, K)
    assert np.allclose(position, [0.1, -0.2, 1.3], atol=1e-6) and abs(fov - 0.4) < 1e-6
    assert torch.allclose(K, torch.tensor([[45 / np.tan(0.2), 0, 60], [0, 45 / np.tan(0.2), 45], [0, 0, 1]]).float())
    # The camera looks along +z of its orientation: a point ahead of it lands at the image centre.
    ahead = torch.from_numpy(position).float() + quat_to_matrix(torch.from_numpy(wxyz))[:, 2].float()
    cam = viewmat[:3, :3] @ ahead + viewmat[:3, 3]
    pix = K @ cam
    assert torch.allclose(pix[:2] / pix[2], torch.tensor([60.0, 45.0]), atol=1e-4)


def test_view_from_a_rig_camera_is_render_py_image(avatar_viewer):
    """The browser camera put where a rig camera is renders render.py's image of that camera."""
    assert_rig_view_is_render_py_image(avatar_viewer)


#: The other built-in methods: (paper config, demo overlay) under configs/.
OTHER_METHODS = {
    "gaussian_head_avatar": ("gaussian_head_avatar.yaml", "gaussian_head_avatar_demo.yaml"),
    "gaussian_blendshapes": ("gaussian_blendshapes.yaml", "gaussian_blendshapes_demo.yaml"),
}


@pytest.mark.parametrize("method", sorted(OTHER_METHODS))
def test_other_methods_view_is_render_py_image(method, synthetic_dataset, tmp_path):
    """The viewer knows the model interface, not a method: each method's view from a rig camera
    is what render.py's renderer gives (its screen-space stage included)."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    paper, demo = OTHER_METHODS[method]
    out = tmp_path / method
    args = ["-s", synthetic_dataset["subjects"]["s000"]["union"], "-m", out, "--flame", synthetic_dataset["flame_model"],
            "--config", configs / paper, "--config", configs / "demo.yaml", "--config", configs / demo,
            "--iterations", "10", "--eval", "--quiet", "--set", "run.eval_interval=1000",
            "--set", "densify.densify_from_iter=1000"]
    assert train.main(list(map(str, args))) == 0
    v = viewer.AvatarViewer(viewer.options_from_args(viewer.parse_args(
        ["-m", str(out), "--port", str(free_port()), "--quiet", "--resolution", "64", "--device", "cpu"])))
    try:
        assert_rig_view_is_render_py_image(v)
    finally:
        v.close()


def assert_rig_view_is_render_py_image(v) -> None:
    frame = v.renderer.rig_camera(int(v.controls["camera"].value))
    v.controls["height"].value = frame.height
    position, wxyz, fov = camera_pose(frame.viewmat, frame.K, frame.height)
    image, ms = v.render_view(position, wxyz, fov, frame.width / frame.height)
    assert image.shape == (frame.height, frame.width, 3) and ms > 0
    motion = v.motion
    verts = reenactment_vertices(v.renderer.model, motion)[0]
    _, K = pinhole_camera(position, wxyz, fov, frame.width, frame.height)  # centred principal point
    expected = v.renderer.render(verts, frame_motion(motion), frame.viewmat, K,
                                 frame.width, frame.height)
    assert np.abs(image.astype(int) - np.round(expected.clamp(0, 1).numpy() * 255).astype(int)).max() <= 1
    assert (image < 250).any(axis=-1).mean() > 0.05  # the avatar covers part of the white background


def test_controls_set_the_flame_pose(avatar_viewer):
    v = avatar_viewer
    c = v.controls
    c["jaw open"].value = 0.3
    c["gaze left/right"].value = -0.25
    c["expr 2"].value = 1.5
    assert float(v.motion["jaw_pose"][0, 0]) == pytest.approx(0.3)
    assert v.motion["eyes_pose"][0, [1, 4]].tolist() == pytest.approx([-0.25, -0.25])
    assert float(v.motion["expr"][0, 2]) == pytest.approx(1.5)
    n_expr = v.motion["expr"].shape[1]
    if "component" in c:  # components beyond the sliders
        c["component"].value = n_expr - 1
        c["value"].value = -0.7
        assert float(v.motion["expr"][0, n_expr - 1]) == pytest.approx(-0.7)
        assert float(v.motion["expr"][0, 2]) == pytest.approx(1.5)
    v.neutral()
    for key in NEUTRAL_KEYS:
        assert not v.motion[key].any(), key
    assert c["jaw open"].value == 0.0 and c["expr 2"].value == 0.0


def test_frames_load_their_motion_and_play(avatar_viewer):
    v = avatar_viewer
    seq = v.sequence
    assert seq.name == "test split" and len(seq.timesteps) >= 2
    v.controls["frame"].value = 1  # scrubbing, as the browser does
    expected = seq.motion(seq.timesteps[1])
    for key, value in expected.items():
        assert torch.equal(v.motion[key], value), key
    assert v.controls["jaw open"].value == pytest.approx(float(expected["jaw_pose"][0, 0]), abs=1e-6)
    v.controls["fps"].value = 50
    v.set_playing(True)
    wait_until(lambda: v.frame_index != 1, 5.0, "playback to advance")
    v.set_playing(False)
    assert v.controls["play"].label == "Play"


def test_sequence_folders_load_from_the_page(avatar_viewer, tiny):
    v = avatar_viewer
    v.controls["folder"].value = str(Path(tiny["subject"]) / "missing")
    v.controls["load"].value = True  # a button click, as the browser sends it
    assert v.controls["message"].content.startswith("**error:**")
    v.controls["folder"].value = str(tiny["subject"])
    v.controls["load"].value = True
    name = Path(tiny["subject"]).resolve().name
    assert name in v.controls["sequence"].options and v.sequence.name == name and v.frame_index == 0


def test_bad_model_folder_is_one_error_line(tmp_path, capsys):
    assert viewer.main(["-m", str(tmp_path / "nothing"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nothing" in err[0]


def centre_crop(image: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    h, w = image.shape[:2]
    dh, dw = int(h * fraction / 2), int(w * fraction / 2)
    return image[h // 2 - dh:h // 2 + dh, w // 2 - dw:w // 2 + dw].astype(np.float32) / 255.0


def canvas_region(shot: np.ndarray, rect: dict, shape: tuple) -> np.ndarray:
    """The canvas' part of a screenshot, resampled (nearest) to the rendered image's (H, W)."""
    x0, y0 = int(round(rect["x"])), int(round(rect["y"]))
    region = shot[y0:y0 + int(round(rect["height"])), x0:x0 + int(round(rect["width"]))]
    rows = (np.arange(shape[0]) + 0.5) * region.shape[0] / shape[0]
    cols = (np.arange(shape[1]) + 0.5) * region.shape[1] / shape[1]
    return region[rows.astype(int)][:, cols.astype(int)]


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (apt install chromium); "
                                                    ".ci/run installs it, so CI runs this test")
def test_page_in_headless_chromium_shows_the_avatar_and_follows_the_jaw(avatar_viewer):
    v = avatar_viewer
    v.controls["height"].value = 160
    url = f"http://127.0.0.1:{v.server.get_port()}/"
    with HeadlessChromium(1600, 900) as browser:
        browser.navigate(url)
        browser.wait_for("document.querySelectorAll('canvas').length > 0", 60)
        wait_until(lambda: v.last_image, 60, "the viewer's first frame for the page")
        client_id = next(iter(v.last_image))
        # The largest canvas is the 3D view (the others are gizmos).
        rect = browser.evaluate("JSON.stringify([...document.querySelectorAll('canvas')].map(c => "
                                "c.getBoundingClientRect()).sort((a, b) => b.width * b.height - a.width * a.height)[0])")
        rect = json.loads(rect)

        def shown_matches_sent() -> bool:
            """The page shows the last image sent: the avatar's pixels in the view's centre match."""
            sent = centre_crop(v.last_image[client_id])
            shown = centre_crop(canvas_region(browser.screenshot(), rect, v.last_image[client_id].shape[:2]))
            avatar = (sent < 0.9).any(axis=-1)  # not the white background
            return avatar.mean() > 0.05 and np.abs(shown - sent)[avatar].mean() < 0.05

        wait_until(shown_matches_sent, 60, "the page to show the rendered avatar")
        first = v.last_image[client_id]
        shot_before = canvas_region(browser.screenshot(), rect, first.shape[:2])

        sent = v.frames_sent
        v.controls["jaw open"].value = 0.6  # through the server's control, as a slider drag arrives
        wait_until(lambda: v.frames_sent > sent and not np.array_equal(v.last_image[client_id], first), 60,
                   "a new frame after the jaw moved")
        wait_until(shown_matches_sent, 60, "the page to show the new frame")
        shot_after = canvas_region(browser.screenshot(), rect, first.shape[:2])
        changed = np.abs(shot_after.astype(int) - shot_before.astype(int)).max(axis=-1) > 40
        assert changed.mean() > 0.002, f"the jaw moved but only {changed.mean():.4%} of the view changed"


def test_paper_protocol_offers_the_subjects_free_sequence(synthetic_dataset, tmp_path):
    """Under the paper protocol the test split is the subject's own FREE folder: the viewer plays it."""
    entry = synthetic_dataset["subjects"]["s000"]
    schedule = [a for a in SMALL_SCHEDULE if a != "--eval"] + ["--protocol", "paper"]
    args = ["-s", entry["union"], "-m", tmp_path / "paper", "--flame", synthetic_dataset["flame_model"], *schedule,
            "--iterations", "2"]
    assert train.main(list(map(str, args))) == 0
    v = viewer.AvatarViewer(viewer.options_from_args(viewer.parse_args(["-m", str(tmp_path / "paper"), "--port", str(free_port()), "--quiet",
                                                "--device", "cpu"])))
    try:
        free = Path(entry["sequences"]["FREE"]).resolve()
        assert free.name in v.sequences and v.sequence.name == free.name
        assert "test split" not in v.sequences and "val split" in v.sequences
        assert len(v.sequences[free.name].timesteps) == SYNTHETIC_FIXTURE_SETTINGS["free_timesteps"]
    finally:
        v.close()
