"""NeRSemble subject reader: scene/data/subject.py, scene/data/cameras.py, utils/image_io.py.

Fake subjects come from tests/subject_fixtures.py (tiny random images, valid JSON, FLAME npz).
The last tests read the synthetic generator's union subject (tests/conftest.py's
``synthetic_dataset``) and check that posed FLAME vertices project onto the rendered head.
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene.data.cameras import (
    camera_center_from_w2c,
    intrinsics_matrix,
    opencv_w2c_to_opengl_c2w,
    opengl_c2w_to_opencv_w2c,
    scale_intrinsics,
)
from scene.data.nersemble import load_sequence, load_subject
from scene.data.subject import CameraFrame, Subject
from tests.subject_fixtures import edit_json, look_at_opengl, read_json, write_fake_subject, write_flame_npz, write_json
from utils.errors import InputFileError, MissingFileError, UserFacingError
from utils.image_io import ImageCache, load_mask_uint8, load_rgb_uint8


# ============================================================================================
# Fixtures
# ============================================================================================
@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Default fake subject (shared, read-only): 2 train sequences + TEST, 4 cameras, 2 steps."""
    return write_fake_subject(tmp_path_factory.mktemp("fake"), seed=1)


@pytest.fixture
def fake_copy(fake, tmp_path):
    """A private copy of ``fake`` that a test may break."""
    dst = tmp_path / "data"
    shutil.copytree(fake.parent, dst)
    info = pickle.loads(pickle.dumps(fake))
    info.parent = dst
    info.union = dst / "UNION"
    info.sequences = {k: dst / k for k in fake.sequences}
    return info


def _project(frame: CameraFrame, X: torch.Tensor) -> torch.Tensor:
    """World points (N, 3) -> pixel coordinates (N, 2) with the frame's viewmat and K."""
    Xh = torch.cat([X, torch.ones(len(X), 1)], dim=1)
    cam = (frame.viewmat @ Xh.T).T[:, :3]
    uv = (frame.K @ cam.T).T
    return uv[:, :2] / uv[:, 2:3]


# ============================================================================================
# Camera conversion
# ============================================================================================
def test_opengl_camera_on_z_axis_sees_origin_in_front():
    # OpenGL: camera at (0, 0, 1) with identity rotation looks along -z, i.e. at the origin.
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[2, 3] = 1.0
    w2c = opengl_c2w_to_opencv_w2c(c2w)
    origin_cam = w2c @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(origin_cam[:3], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # A point above the origin (world +y = OpenGL camera up) is at negative OpenCV y (image up).
    up_cam = w2c @ torch.tensor([0.0, 0.1, 0.0, 1.0], dtype=torch.float64)
    assert up_cam[1] < 0 and up_cam[2] > 0
    # Camera to the right (world +x) stays +x in OpenCV.
    right_cam = w2c @ torch.tensor([0.1, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert right_cam[0] > 0


def test_opengl_to_opencv_matches_direct_computation_batched():
    rng = np.random.default_rng(0)
    mats = []
    for _ in range(6):
        pos = rng.standard_normal(3)
        pos = pos / np.linalg.norm(pos) * rng.uniform(0.5, 2.0)
        mats.append(look_at_opengl(pos, target=rng.standard_normal(3) * 0.1))
    c2w = np.stack(mats)
    w2c = opengl_c2w_to_opencv_w2c(c2w)  # numpy input -> float32 tensor
    assert w2c.shape == (6, 4, 4) and w2c.dtype == torch.float32
    for m, got in zip(c2w, w2c):
        flip = m.copy()
        flip[:3, 1] *= -1
        flip[:3, 2] *= -1
        expected = np.linalg.inv(flip)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    # Round trip and camera centre.
    back = opencv_w2c_to_opengl_c2w(w2c.double())
    np.testing.assert_allclose(back.numpy(), c2w, atol=1e-6)
    np.testing.assert_allclose(camera_center_from_w2c(w2c.double()).numpy(), c2w[:, :3, 3], atol=1e-6)


def test_intrinsics_helpers():
    K = intrinsics_matrix(100.0, 120.0, 30.5, 40.25)
    assert K.dtype == torch.float32
    assert torch.equal(K, torch.tensor([[100.0, 0, 30.5], [0, 120.0, 40.25], [0, 0, 1]]))
    Ks = scale_intrinsics(K, 0.5, 0.25)
    assert torch.allclose(Ks, torch.tensor([[50.0, 0, 15.25], [0, 30.0, 10.0625], [0, 0, 1]]))
    batched = intrinsics_matrix(torch.tensor([1.0, 2.0]), 3.0, 4.0, 5.0)
    assert batched.shape == (2, 3, 3) and batched[1, 0, 0] == 2.0 and batched[0, 1, 1] == 3.0


# ============================================================================================
# Loading a fake subject
# ============================================================================================
def test_union_counts_paths_and_indices(fake):
    s = load_subject(fake.union)
    assert isinstance(s, Subject) and s.root == fake.union
    for split, n in fake.counts.items():
        assert s.num_frames(split) == n == len(s.frames[split])
    assert all(f.camera_index == fake.val_camera for f in s.frames["val"])
    assert all(f.camera_index != fake.val_camera for f in s.frames["train"])
    assert {f.camera_index for f in s.frames["test"]} == set(range(fake.n_cameras))
    n_seq = len(fake.sequences)
    assert s.timesteps == list(range(n_seq * fake.n_timesteps))
    assert s.timestep_row == {t: t for t in s.timesteps}
    assert s.camera_indices == list(range(fake.n_cameras))
    # The union's frames point into sibling folders through '../': resolved, normalised, existing.
    for f in s.all_frames():
        assert f.image_path.is_file() and ".." not in f.image_path.parts
        assert f.image_path.parent.parent.parent == fake.parent
        assert f.mask_path is not None and f.mask_path.is_file()
        assert f.flame_param_path.is_file()
        assert f.image_name == f"{f.timestep:05d}_{f.camera_index:02d}"
        assert f.camera_id == f"2221{f.camera_index:04d}"
    t0 = s.frames["test"][0]
    assert t0.image_path.parent.parent.name == "SEQ_TEST" and t0.timestep == 2 * fake.n_timesteps
    # Stacked FLAME parameters follow timestep_row.
    assert s.flame["expr"].shape == (len(s.timesteps), 100)
    assert s.flame["eyes_pose"].shape == (len(s.timesteps), 6)
    for t in s.timesteps:
        for k in ("translation", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "expr"):
            np.testing.assert_array_equal(s.flame[k][s.timestep_row[t]].numpy(), fake.flame[t][k].reshape(-1))
    assert "dynamic_offset" not in s.flame
    np.testing.assert_array_equal(s.shape.numpy(), fake.canonical["shape"])
    assert s.static_offset.shape == (5143, 3)
    np.testing.assert_array_equal(s.static_offset.numpy(), fake.canonical["static_offset"][0])
    assert set(s.canonical) >= {"shape", "static_offset", "expr"}
    p = s.flame_at(3)
    assert p["expr"].shape == (1, 100) and p["shape"].shape == (1, 300) and p["static_offset"].shape == (1, 5143, 3)
    with pytest.raises(KeyError, match="loaded splits"):
        s.num_frames("nope")


def test_cameras_shared_intrinsics_and_pose(fake):
    s = load_subject(fake.union, splits=("train",))
    assert list(s.frames) == ["train"]
    sh = fake.shared
    centers = []
    for f in s.frames["train"]:
        assert (f.width, f.height) == (fake.width, fake.height)
        expected_K = torch.tensor([[sh["fl_x"], 0, sh["cx"]], [0, sh["fl_y"], sh["cy"]], [0, 0, 1]], dtype=torch.float32)
        assert torch.allclose(f.K, expected_K)
        np.testing.assert_allclose(f.camera_center.numpy(), fake.c2w[f.camera_index][:3, 3], atol=1e-6)
        # Every fake camera looks at the origin: the origin is straight ahead at the camera's
        # distance and projects onto the principal point.
        origin = f.viewmat @ torch.tensor([0.0, 0.0, 0.0, 1.0])
        dist = float(np.linalg.norm(fake.c2w[f.camera_index][:3, 3]))
        assert torch.allclose(origin[:3], torch.tensor([0.0, 0.0, dist]), atol=1e-5)
        assert torch.allclose(_project(f, torch.zeros(1, 3))[0], torch.tensor([sh["cx"], sh["cy"]]), atol=1e-3)
        centers.append(f.camera_center)
    c = torch.stack(centers).double()
    expected = float((c - c.mean(0)).norm(dim=1).max()) * 1.1
    assert s.cameras_extent == pytest.approx(expected, rel=1e-6)


def test_per_frame_intrinsics_override_and_per_frame_size(tmp_path):
    info = write_fake_subject(tmp_path, per_frame_intrinsics=True, odd_size_camera=2, n_train_sequences=1, test_sequence=False)
    s = load_subject(info.union)
    for f in s.all_frames():
        rec = {**info.shared, **info.intrinsics[f.camera_index]}
        assert (f.width, f.height) == (rec["w"], rec["h"])
        expected = torch.tensor([[rec["fl_x"], 0, rec["cx"]], [0, rec["fl_y"], rec["cy"]], [0, 0, 1]], dtype=torch.float32)
        assert torch.allclose(f.K, expected), (f.camera_index, f.K, expected)
        img = s.load_image(f)
        assert img.shape == (rec["h"], rec["w"], 3)
    odd = [f for f in s.all_frames() if f.camera_index == 2]
    assert odd and odd[0].width == info.width + 2 and odd[0].height == info.height + 4
    # Cameras without a per-frame w/h use the shared top-level size.
    c0 = [f for f in s.all_frames() if f.camera_index == 0][0]
    assert (c0.width, c0.height) == (info.width, info.height)


@pytest.mark.parametrize("scale", [0.5, 0.3, 2.0])
def test_resolution_scale_intrinsics_images_and_masks(tmp_path, scale):
    info = write_fake_subject(tmp_path, odd_size_camera=1, per_frame_intrinsics=True, n_train_sequences=1, test_sequence=False)
    full = load_subject(info.union)
    s = load_subject(info.union, resolution_scale=scale)
    for f0, f in zip(full.all_frames(), s.all_frames()):
        new_w, new_h = round(f0.width * scale), round(f0.height * scale)
        assert (f.width, f.height) == (new_w, new_h)
        sx, sy = new_w / f0.width, new_h / f0.height
        assert torch.allclose(f.K[0], f0.K[0] * sx) and torch.allclose(f.K[1], f0.K[1] * sy)
        assert torch.equal(f.viewmat, f0.viewmat)
        # The same world point lands at the same relative image position.
        X = torch.tensor([[0.03, -0.02, 0.05]])
        assert torch.allclose(_project(f, X)[0] / torch.tensor([sx, sy]), _project(f0, X)[0], atol=1e-3)
    f = s.frames["train"][0]
    img = s.load_image(f)
    assert img.shape == (f.height, f.width, 3) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    # Against PIL's own area (BOX) / bicubic resize of the float image.
    src = np.asarray(Image.open(f.image_path), dtype=np.float32) / 255.0
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    ref = np.stack([np.asarray(Image.fromarray(src[..., c]).resize((f.width, f.height), resample)) for c in range(3)], -1)
    np.testing.assert_allclose(img.numpy(), np.clip(ref, 0, 1), atol=0.5 / 255 + 1e-6)
    if scale < 1:
        # Antialiasing: the downscaled noise is smoother than point sampling would give.
        assert img.std() < torch.from_numpy(src).std() * 0.9
    m = s.load_mask(f)
    assert m.shape == (f.height, f.width, 1)
    msrc = np.asarray(Image.open(f.mask_path), dtype=np.float32) / 255.0
    mref = np.asarray(Image.fromarray(msrc).resize((f.width, f.height), resample))
    np.testing.assert_allclose(m[..., 0].numpy(), np.clip(mref, 0, 1), atol=0.5 / 255 + 1e-6)


def test_rgba_composited_over_white_and_paths_without_extension(tmp_path):
    info = write_fake_subject(tmp_path, rgba=True, with_extension=False, n_train_sequences=1, test_sequence=False)
    s = load_subject(info.union)
    f = s.frames["train"][0]
    assert f.image_path.suffix == ".png" and f.image_path.is_file()
    rgba = np.asarray(Image.open(f.image_path), dtype=np.float32) / 255.0
    expected = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    np.testing.assert_allclose(s.load_image(f).numpy(), expected, atol=0.5 / 255 + 1e-6)


def test_masks_absent_and_found_by_convention(tmp_path):
    none = write_fake_subject(tmp_path / "a", masks=False, n_train_sequences=1, test_sequence=False)
    s = load_subject(none.union)
    assert all(f.mask_path is None for f in s.all_frames())
    assert s.load_mask(s.frames["train"][0]) is None
    conv = write_fake_subject(tmp_path / "b", masks=True, mask_field=False, n_train_sequences=1, test_sequence=False)
    s = load_subject(conv.union)
    for f in s.all_frames():
        assert f.mask_path == f.image_path.parent.parent / "fg_masks" / f.image_path.name
    m = s.load_mask(s.frames["train"][0])
    assert m.shape == (conv.height, conv.width, 1) and 0.0 < float(m.mean()) < 1.0


def test_empty_test_split(tmp_path):
    info = write_fake_subject(tmp_path, test_sequence=False)
    s = load_subject(info.union)
    assert s.frames["test"] == [] and s.num_frames("test") == 0
    assert s.num_frames("train") == info.counts["train"] > 0
    assert s.timesteps == list(range(2 * info.n_timesteps))


def test_single_sequence_and_load_sequence(fake, tmp_path):
    seq = fake.sequences["SEQ_EXP-1"]
    single = load_subject(seq)
    assert single.num_frames("train") == fake.n_timesteps * (fake.n_cameras - 1)
    assert single.num_frames("test") == 0 and single.timesteps == list(range(fake.n_timesteps))
    # Union of the split files when there is no transforms.json.
    d = load_sequence(seq)
    assert set(d.frames) == {"train", "val", "test", "all"}
    assert len(d.frames["all"]) == fake.n_timesteps * fake.n_cameras
    assert len({f.image_path for f in d.frames["all"]}) == len(d.frames["all"])
    # transforms.json wins when present; a JSON file may be given directly.
    dst = tmp_path / "SEQ"
    shutil.copytree(seq, dst)
    data = read_json(dst / "transforms_train.json")
    data["frames"] = data["frames"][:2]
    write_json(dst / "transforms.json", data)
    d2 = load_sequence(dst)
    assert len(d2.frames["all"]) == 2 and d2.num_frames("train") == fake.n_timesteps * (fake.n_cameras - 1)
    d3 = load_sequence(dst / "transforms.json")
    assert list(d3.frames) == ["all"] and len(d3.frames["all"]) == 2
    with pytest.raises(MissingFileError, match="transforms.json"):
        load_sequence(tmp_path)


def test_dynamic_offset_and_canonical_fallback(tmp_path, capsys):
    info = write_fake_subject(tmp_path, dynamic_offset=True, n_vertices=5023, n_train_sequences=1, test_sequence=False)
    (info.union / "canonical_flame_param.npz").unlink()
    s = load_subject(info.union)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "canonical_flame_param.npz does not exist" in warning[0]
    assert "using timestep 0's" in warning[0]
    assert s.flame["dynamic_offset"].shape == (info.n_timesteps, 5023, 3)
    assert s.canonical == {}
    # No canonical file: identity from the first timestep's file.
    np.testing.assert_array_equal(s.shape.numpy(), info.flame[0]["shape"])
    np.testing.assert_array_equal(s.static_offset.numpy(), info.flame[0]["static_offset"][0])


def test_image_cache_is_bounded_and_returns_copies(fake):
    per_image = fake.width * fake.height * 3  # uint8 entries
    budget = 3 * per_image + 10
    s = load_subject(fake.union, image_cache_bytes=budget)
    frames = s.all_frames()
    assert len(frames) > 3
    for f in frames:
        s.load_image(f)
        assert s.image_cache.current_bytes <= budget
    st = s.image_cache.stats()
    assert st["entries"] == 3 and st["evictions"] == len(frames) - 3 and st["misses"] == len(frames)
    # The most recent image is a hit; the first one was evicted (a miss again).
    s.load_image(frames[-1])
    assert s.image_cache.hits == 1
    s.load_image(frames[0])
    assert s.image_cache.misses == len(frames) + 1
    # Callers get copies: modifying one does not change the cache.
    a = s.load_image(frames[-1])
    a.zero_()
    assert float(s.load_image(frames[-1]).sum()) > 0
    # Budget 0 disables caching; pickling keeps the budget, drops the contents.
    s0 = load_subject(fake.union, splits=("val",), image_cache_bytes=0)
    s0.load_image(s0.frames["val"][0])
    assert len(s0.image_cache) == 0 and s0.image_cache.current_bytes == 0
    clone = pickle.loads(pickle.dumps(s.image_cache))
    assert clone.max_bytes == budget and len(clone) == 0


def test_image_cache_unit():
    c = ImageCache(100)
    arr = lambda n: np.full((n,), 255, np.uint8)
    c.get("a", lambda: arr(40)); c.get("b", lambda: arr(40))
    c.get("a", lambda: arr(40))  # a is now most recent
    c.get("c", lambda: arr(40))  # evicts b
    assert "b" not in c and "a" in c and "c" in c and c.current_bytes == 80
    big = c.get("big", lambda: arr(500))  # larger than the budget: returned, not kept
    assert big.shape == (500,) and "big" not in c and c.current_bytes == 80
    assert float(c.get("a", lambda: arr(40))[0]) == 1.0


# ============================================================================================
# Errors: every bad input names the file and the field
# ============================================================================================
def _first_frame_del(field):
    def fn(j):
        del j["frames"][1][field]
    return fn


def _set_frame(field, value, idx=1):
    def fn(j):
        j["frames"][idx][field] = value
    return fn


def _drop_top_intrinsic(field):
    def fn(j):
        del j[field]
    return fn


JSON_CASES = [
    # (id, file, edit, expected substrings)
    ("missing-frames", "transforms_train.json", lambda j: j.pop("frames"), ["'frames'"]),
    ("frames-not-list", "transforms_train.json", lambda j: j.update(frames={"a": 1}), ["'frames'", "list"]),
    ("frame-not-object", "transforms_train.json", lambda j: j["frames"].__setitem__(1, 5), ["frames[1]"]),
    ("missing-transform_matrix", "transforms_train.json", _first_frame_del("transform_matrix"), ["frames[1]", "'transform_matrix'"]),
    ("missing-file_path", "transforms_train.json", _first_frame_del("file_path"), ["frames[1]", "'file_path'"]),
    ("missing-timestep_index", "transforms_val.json", _first_frame_del("timestep_index"), ["frames[1]", "'timestep_index'"]),
    ("missing-camera_index", "transforms_test.json", _first_frame_del("camera_index"), ["frames[1]", "'camera_index'"]),
    ("missing-flame_param_path", "transforms_train.json", _first_frame_del("flame_param_path"), ["frames[1]", "'flame_param_path'"]),
    ("missing-fl_x-everywhere", "transforms_train.json", _drop_top_intrinsic("fl_x"), ["'fl_x'", "frames[0]", "top level"]),
    ("missing-h-everywhere", "transforms_val.json", _drop_top_intrinsic("h"), ["'h'"]),
    ("bad-cx", "transforms_train.json", _set_frame("cx", "abc"), ["'cx'", "frames[1]"]),
    ("zero-fl_y", "transforms_train.json", _set_frame("fl_y", 0), ["'fl_y'", "> 0"]),
    ("float-w", "transforms_train.json", _set_frame("w", 24.5), ["'w'", "integer"]),
    ("negative-timestep", "transforms_train.json", _set_frame("timestep_index", -1), ["'timestep_index'", ">= 0"]),
    ("camera-index-string", "transforms_train.json", _set_frame("camera_index", "8"), ["'camera_index'", "integer"]),
    ("file_path-not-string", "transforms_train.json", _set_frame("file_path", 3), ["'file_path'"]),
    ("matrix-3-rows", "transforms_train.json", lambda j: j["frames"][1]["transform_matrix"].pop(), ["'transform_matrix'", "frames[1]", "4x4", "3 rows"]),
    ("matrix-short-row", "transforms_train.json", lambda j: j["frames"][1]["transform_matrix"][2].pop(), ["'transform_matrix'", "4x4", "[4, 4, 3, 4]"]),
    ("matrix-flat-16", "transforms_train.json", lambda j: j["frames"][1].update(transform_matrix=sum(j["frames"][1]["transform_matrix"], [])), ["'transform_matrix'", "4x4"]),
    ("matrix-not-numbers", "transforms_train.json", lambda j: j["frames"][1]["transform_matrix"][0].__setitem__(0, "x"), ["'transform_matrix'", "numbers"]),
    ("matrix-scaled", "transforms_train.json", lambda j: j["frames"][1].update(transform_matrix=(np.array(j["frames"][1]["transform_matrix"]) * np.array([2, 2, 2, 1])[None, :]).tolist()), ["'transform_matrix'", "rotation"]),
    ("matrix-bottom-row", "transforms_train.json", lambda j: j["frames"][1]["transform_matrix"][3].__setitem__(0, 0.5), ["'transform_matrix'", "last row"]),
]


@pytest.mark.parametrize("case", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_malformed_json_fields(fake_copy, case):
    _, name, edit, needles = case
    edit_json(fake_copy.union / name, edit)
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    msg = str(ei.value)
    assert isinstance(ei.value, UserFacingError)
    assert str(fake_copy.union / name) in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_missing_json_file(fake_copy):
    (fake_copy.union / "transforms_val.json").unlink()
    with pytest.raises(MissingFileError, match="transforms_val.json"):
        load_subject(fake_copy.union)
    # Not asking for the split is fine.
    assert load_subject(fake_copy.union, splits=("train", "test")).num_frames("train") > 0
    with pytest.raises(MissingFileError, match="subject folder not found"):
        load_subject(fake_copy.parent / "nope")


def test_json_decode_error_has_line_and_column(fake_copy):
    p = fake_copy.union / "transforms_test.json"
    p.write_text('{\n  "frames": [\n    {"a": 1,,}\n  ]\n}\n')
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    msg = str(ei.value)
    assert str(p) in msg and "line 3" in msg and "column" in msg
    p.write_text("[1, 2]")
    with pytest.raises(InputFileError, match="top level must be a JSON object"):
        load_subject(fake_copy.union)


def test_missing_images_masks_npz_reported_early_with_count(fake_copy):
    seq = fake_copy.sequences["SEQ_EXP-1"]
    (seq / "images" / "00001_00.png").unlink()
    (seq / "images" / "00001_02.png").unlink()
    (fake_copy.sequences["SEQ_TEST"] / "fg_masks" / "00000_03.png").unlink()
    (fake_copy.sequences["SEQ_TEST"] / "flame_param" / "00001.npz").unlink()
    with pytest.raises(MissingFileError) as ei:
        load_subject(fake_copy.union)
    msg = str(ei.value)
    assert "4 files" in msg and "2 images" in msg and "1 mask" in msg and "1 FLAME parameter file" in msg, msg
    assert "00001_00.png" in msg and "'file_path'" in msg and "transforms_train.json" in msg, msg
    # Just a mask missing (fg_mask_path given explicitly): named with its field.
    shutil.copy(fake_copy.sequences["SEQ_EXP-0"] / "images" / "00001_00.png", seq / "images" / "00001_00.png")
    shutil.copy(fake_copy.sequences["SEQ_EXP-0"] / "images" / "00001_02.png", seq / "images" / "00001_02.png")
    with pytest.raises(MissingFileError) as ei:
        load_subject(fake_copy.union)
    msg = str(ei.value)
    assert "2 files" in msg and "00000_03.png" in msg and "'fg_mask_path'" in msg and "transforms_test.json" in msg, msg
    shutil.copy(seq / "fg_masks" / "00000_03.png", fake_copy.sequences["SEQ_TEST"] / "fg_masks" / "00000_03.png")
    with pytest.raises(MissingFileError) as ei:
        load_subject(fake_copy.union)
    msg = str(ei.value)
    assert "1 file " in msg and "00001.npz" in msg and "'flame_param_path'" in msg, msg


NPZ_CASES = [
    # (id, key overrides, substrings)
    ("missing-expr", {"expr": None}, ["'expr'", "missing key"]),
    ("missing-jaw", {"jaw_pose": None}, ["'jaw_pose'"]),
    ("expr-50", {"expr": np.zeros((1, 50), np.float32)}, ["'expr'", "(1, 50)", "(1, 100)"]),
    ("eyes-3", {"eyes_pose": np.zeros((1, 3), np.float32)}, ["'eyes_pose'", "(1, 3)", "(1, 6)"]),
    ("translation-2d", {"translation": np.zeros((2, 3), np.float32)}, ["'translation'", "(2, 3)", "(1, 3)"]),
    ("nan-rotation", {"rotation": np.full((1, 3), np.nan, np.float32)}, ["'rotation'", "NaN"]),
    ("dynamic-partial", {"dynamic_offset": np.zeros((1, 5143, 3), np.float32)}, ["'dynamic_offset'"]),
]


@pytest.mark.parametrize("case", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_bad_flame_npz(fake_copy, case):
    _, override, needles = case
    path = fake_copy.sequences["SEQ_EXP-1"] / "flame_param" / "00001.npz"
    write_flame_npz(path, np.random.default_rng(0), **override)
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    msg = str(ei.value)
    # dynamic-partial names the first file *lacking* the key; the others name the edited file.
    assert "flame_param" in msg and ".npz" in msg, msg
    if case[0] != "dynamic-partial":
        assert str(path) in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_bad_canonical_and_corrupt_npz(fake_copy):
    canon = fake_copy.union / "canonical_flame_param.npz"
    data = dict(np.load(canon))
    np.savez(canon, **{**data, "shape": np.zeros(299, np.float32)})
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    assert str(canon) in str(ei.value) and "'shape'" in str(ei.value) and "(299,)" in str(ei.value) and "300" in str(ei.value)
    np.savez(canon, **{**data, "static_offset": np.zeros((1, 5143, 2), np.float32)})
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    assert "'static_offset'" in str(ei.value) and "(1, 5143, 2)" in str(ei.value) and "(1, V, 3)" in str(ei.value)
    np.savez(canon, **data)
    bad = fake_copy.sequences["SEQ_EXP-0"] / "flame_param" / "00000.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    assert str(bad) in str(ei.value) and "npz" in str(ei.value)


def test_conflicting_flame_file_for_one_timestep(fake_copy):
    def fn(j):
        j["frames"][1]["flame_param_path"] = j["frames"][1]["flame_param_path"].replace("00000.npz", "00001.npz")
    edit_json(fake_copy.union / "transforms_train.json", fn)
    with pytest.raises(InputFileError) as ei:
        load_subject(fake_copy.union)
    assert "'flame_param_path'" in str(ei.value) and "frames[1]" in str(ei.value) and "transforms_train.json" in str(ei.value)


def test_image_errors_at_load_time(fake_copy):
    s = load_subject(fake_copy.union)
    f = s.frames["train"][0]
    Image.fromarray(np.zeros((fake_copy.height + 1, fake_copy.width, 3), np.uint8)).save(f.image_path)
    with pytest.raises(InputFileError) as ei:
        s.load_image(f)
    assert str(f.image_path) in str(ei.value) and "'w'/'h'" in str(ei.value)
    g = s.frames["train"][1]
    g.image_path.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputFileError, match=str(g.image_path.name)):
        s.load_image(g)
    h = s.frames["train"][2]
    h.mask_path.unlink()  # deleted after loading: still a clear error
    with pytest.raises(MissingFileError, match=h.mask_path.name):
        s.load_mask(h)
    with pytest.raises(UserFacingError, match="resolution_scale"):
        load_subject(fake_copy.union, resolution_scale=0)


def test_mask_modes(tmp_path):
    # Grey, 16-bit grey, RGB (max channel) and RGBA cut-out (alpha) mattes all read the same.
    a = np.linspace(0, 255, 12 * 8).reshape(8, 12).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "l.png")
    Image.fromarray((a.astype(np.uint16) * 257)).save(tmp_path / "i16.png")
    Image.fromarray(np.dstack([a, a, a])).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([np.zeros_like(a)] * 3 + [a])).save(tmp_path / "rgba.png")
    for name in ("l", "i16", "rgb", "rgba"):
        m = load_mask_uint8(tmp_path / f"{name}.png")
        assert m.shape == (8, 12, 1)
        np.testing.assert_array_equal(m[..., 0], a, err_msg=name)
    g = load_rgb_uint8(tmp_path / "l.png")
    assert g.shape == (8, 12, 3) and (g[..., 0] == a).all()


# ============================================================================================
# The synthetic generator's union subject (tests/conftest.py: synthetic_dataset)
# ============================================================================================
@pytest.fixture(scope="module")
def synth(synthetic_dataset):
    """(the identity's entry {"union", "sequences"}, loaded union Subject) for s000."""
    entry = synthetic_dataset["subjects"]["s000"]
    return entry, load_subject(entry["union"])


@pytest.fixture(scope="module")
def synth_flame(synthetic_dataset):
    from flame_model import FLAME

    return FLAME(synthetic_dataset["flame_model"], masks_path=synthetic_dataset["flame_masks"])


def _sequence_name(frame: CameraFrame) -> str:
    return frame.image_path.parent.parent.name


def test_synthetic_union_splits(synth):
    entry, s = synth
    train, val, test = s.frames["train"], s.frames["val"], s.frames["test"]
    assert train and val and test
    # val = camera 8 (front) on the training sequences; train = the other cameras, same timesteps.
    assert {f.camera_index for f in val} == {8}
    assert 8 not in {f.camera_index for f in train}
    assert {f.timestep for f in val} == {f.timestep for f in train}
    assert all("_EXP-" in _sequence_name(f) for f in train + val)
    n_train_steps = len({f.timestep for f in train})
    assert len(val) == n_train_steps and len(train) == 15 * n_train_steps
    # test = the held-out TEST sequence with all 16 cameras.
    assert all("_TEST_" in _sequence_name(f) for f in test)
    assert {f.image_path.parent.parent for f in test} == {Path(entry["sequences"]["TEST"])}
    assert {f.camera_index for f in test} == set(range(16))
    n_test_steps = len({f.timestep for f in test})
    assert len(test) == 16 * n_test_steps
    assert not ({f.timestep for f in test} & {f.timestep for f in train})
    assert s.camera_indices == list(range(16))
    assert all(f.mask_path is not None for f in train + val + test)
    assert s.cameras_extent > 0


def test_synthetic_driving_sequence(synth):
    entry, _ = synth
    d = load_sequence(entry["sequences"]["FREE"])
    assert d.frames["all"] and {f.camera_index for f in d.frames["all"]} == set(range(16))
    assert len(d.frames["all"]) == 16 * len(d.timesteps)
    assert d.flame["expr"].shape == (len(d.timesteps), 100)


def _check_projection(s: Subject, flame, frames) -> None:
    """Posed FLAME (frame's timestep params + subject identity) lands on the rendered head."""
    face = flame.vertex_masks["face"]
    for frame in frames:
        p = s.flame_at(frame.timestep)
        with torch.no_grad():
            verts = flame(p["shape"], p["expr"], p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"],
                          p["translation"], static_offset=p.get("static_offset"))[0]
        mask = s.load_mask(frame)[..., 0]
        H, W = mask.shape
        cam = (frame.viewmat[:3, :3] @ verts.T).T + frame.viewmat[:3, 3]
        assert (cam[:, 2] > 0.3).all(), "the head must be in front of every camera"
        uv = _project(frame, verts)
        face_uv = uv[face]
        assert ((face_uv[:, 0] >= 0) & (face_uv[:, 0] < W) & (face_uv[:, 1] >= 0) & (face_uv[:, 1] < H)).all(), frame.image_name
        # The face vertices nearest to the camera are visible and well inside the silhouette.
        near = torch.argsort(cam[face, 2])[:25]
        px = face_uv[near].floor().long()
        hit = mask[px[:, 1], px[:, 0]]
        assert float((hit > 0.9).float().mean()) >= 0.9, (frame.image_name, hit)
        # Silhouette bbox ~ projected mesh bbox (a few % of the image size).
        ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
        sil = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        mesh = torch.stack([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
        mesh = torch.minimum(torch.maximum(mesh, torch.zeros(4)), torch.tensor([W, H, W, H], dtype=torch.float32))
        tol = torch.tensor([W, H, W, H], dtype=torch.float32) * 0.02 + 1.5
        assert ((sil - mesh).abs() <= tol).all(), (frame.image_name, sil, mesh)
        # Almost every projected vertex (all regions, front and back) falls on the silhouette.
        px = uv.floor().long()
        px[:, 0].clamp_(0, W - 1)
        px[:, 1].clamp_(0, H - 1)
        assert float((mask[px[:, 1], px[:, 0]] > 0.5).float().mean()) > 0.93, frame.image_name
        # And the image agrees with the matte: background is white outside it.
        img = s.load_image(frame)
        assert float(img[mask < 0.01].mean()) > 0.98


def test_synthetic_flame_projects_onto_rendered_head(synth, synth_flame):
    _, s = synth
    # A spread of views: one side, the front (val), the other side, and a held-out test frame.
    by_cam = {f.camera_index: f for f in s.frames["train"]}
    frames = [by_cam[min(by_cam)], s.frames["val"][len(s.frames["val"]) // 2], by_cam[max(by_cam)], s.frames["test"][-1]]
    _check_projection(s, synth_flame, frames)


def test_synthetic_projection_at_half_resolution(synth, synth_flame):
    _, full = synth
    s = load_subject(full.root, resolution_scale=0.5, splits=("val",))
    f = s.frames["val"][0]
    assert (f.width, f.height) == (round(full.frames["val"][0].width * 0.5), round(full.frames["val"][0].height * 0.5))
    _check_projection(s, synth_flame, [f])
