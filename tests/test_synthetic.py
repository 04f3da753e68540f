"""Synthetic subject generator: rasterizer, FLAME-format model, dataset layout, appearance."""
from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from PIL import Image

from utils.errors import UserFacingError
from synthetic import generate_dataset
from synthetic.appearance import Appearance, ExpressionState, sample_identity_look
from synthetic.blendshapes import BROW_RAISE, SMILE
from synthetic.cameras import FRONT_CAMERA, gl_to_cv_viewmat, look_at_c2w_gl, make_rig
from synthetic.dataset import load_flame, make_identity
from synthetic.gt_renderer import GroundTruthRenderer
from synthetic.head_model import KINTREE_TABLE, build_head_model
from synthetic.head_surface import build_head_template
from synthetic.mesh_rasterizer import interpolate, rasterize
from synthetic.motion import add_tracking_noise, make_sequence
from synthetic.torso import build_torso

REQUIRED_MASKS = ("face", "eye_region", "lips", "neck", "scalp", "left_eyeball", "right_eyeball")


# ----------------------------------------------------------------------------- rasterizer
def _K(f: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def _inside(px, py, tri2d):
    """Reference point-in-triangle test (float64, either winding)."""
    (x0, y0), (x1, y1), (x2, y2) = tri2d
    d0 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    d1 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    d2 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    return ((d0 >= 0) & (d1 >= 0) & (d2 >= 0)) | ((d0 <= 0) & (d1 <= 0) & (d2 <= 0))


def test_rasterizer_single_tilted_triangle_coverage_and_depth():
    # A triangle on the plane z = 2 + 0.5 x, facing the camera (normal towards -z).
    verts = torch.tensor([[[-0.4, -0.3, 1.8], [0.5, -0.2, 2.25], [0.0, 0.45, 2.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1]])
    K = _K(60.0, 32.0, 30.0)
    frags = rasterize(verts, faces, K, 60, 64)
    # Analytic coverage: pixel centres inside the projected triangle.
    proj = (verts[0, :, :2] / verts[0, :, 2:]) * 60.0 + torch.tensor([32.0, 30.0], dtype=torch.float64)
    jj, ii = np.meshgrid(np.arange(64) + 0.5, np.arange(60) + 0.5)
    expected = _inside(jj, ii, proj.numpy())
    assert np.array_equal(frags.mask[0].numpy(), expected)
    assert expected.sum() > 200
    # Analytic depth: the ray through each pixel centre meets the plane z = 2 + 0.5 x.
    rx = (jj - 32.0) / 60.0
    z_true = 2.0 / (1.0 - 0.5 * rx)
    depth = frags.depth[0].numpy()
    assert np.allclose(depth[expected], z_true[expected], atol=1e-9)
    # Perspective-correct barycentrics reproduce the 3D position.
    pos = interpolate(frags, faces, verts[0])
    assert np.allclose(pos[:, 2].numpy(), z_true[expected], atol=1e-9)
    assert np.allclose(pos[:, 2].numpy(), 2.0 + 0.5 * pos[:, 0].numpy(), atol=1e-9)


def _cube(size: float, centre) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.tensor(centre, dtype=torch.float64)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64)
    verts = c + 0.5 * size * corners
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, cc, d in quads:
        faces += [[a, b, cc], [a, cc, d]]
    faces = torch.tensor(faces)
    # Orient outward.
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    flip = ((tri.mean(1) - c) * n).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts, faces


def test_rasterizer_cube_front_face_and_occlusion():
    verts, faces = _cube(0.5, (0.0, 0.0, 3.0))
    K = _K(100.0, 40.0, 40.0)
    frags = rasterize(verts[None], faces, K, 80, 80)
    # Seen head-on only the front face (z = 2.75) is visible: a square of side 100 * 0.5 / 2.75 px.
    side = 100.0 * 0.5 / 2.75
    lo, hi = 40.0 - side / 2, 40.0 + side / 2
    centres = np.arange(80) + 0.5
    inside_1d = (centres >= lo) & (centres <= hi)
    expected = inside_1d[:, None] & inside_1d[None, :]
    assert np.array_equal(frags.mask[0].numpy(), expected)
    assert np.allclose(frags.depth[0].numpy()[expected], 2.75, atol=1e-9)
    # The nearest surface wins whatever the face order.
    frags_rev = rasterize(verts[None], faces.flip(0), K, 80, 80)
    assert np.allclose(frags_rev.depth[0].numpy()[expected], 2.75, atol=1e-9)
    # Back-face culling: from inside the cube nothing is drawn, unless faces are two-sided.
    inside_view = verts - torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    assert rasterize(inside_view[None], faces, K, 80, 80).mask.sum() == 0
    two_sided = torch.ones(faces.shape[0], dtype=torch.bool)
    assert rasterize(inside_view[None], faces, K, 80, 80, two_sided=two_sided).mask.all()


def test_rasterizer_watertight_on_shared_edges():
    # A finely tessellated screen-filling quad: every pixel is covered exactly (no pinholes).
    n = 23
    xs = torch.linspace(-1.0, 1.0, n, dtype=torch.float32)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    verts = torch.stack([gx.reshape(-1) * 1.3, gy.reshape(-1) * 1.3, torch.full((n * n,), 2.0)], -1)
    verts[:, :2] += 0.01 * torch.sin(verts[:, :2] * 37.0)  # irregular edges
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1), idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)])
    frags = rasterize(verts[None], faces, _K(80.0, 48.0, 48.0).float(), 96, 96, two_sided=torch.ones(len(faces), dtype=torch.bool))
    assert frags.mask.all()


# ----------------------------------------------------------------------------- head model
def test_template_mesh_is_closed_and_consistently_oriented():
    t = build_head_template()
    edges = Counter((int(f[i]), int(f[(i + 1) % 3])) for f in t.faces for i in range(3))
    assert max(edges.values()) == 1, "a directed edge is used twice: inconsistent winding"
    assert all((b, a) in edges for a, b in edges), "open boundary"
    # Skin + pocket form one closed surface, the eyeballs two more: Euler characteristic 2 each.
    v, e, f = len(np.unique(t.faces)), len(edges) // 2, len(t.faces)
    assert v - e + f == 6
    # Head size/placement: ~0.2 m tall head, face towards +z, origin near the head centre.
    lo, hi = t.vertices.min(0), t.vertices.max(0)
    assert 0.1 < hi[1] < 0.15 and hi[2] > 0.1 and -0.12 < lo[2] < -0.08 and abs(lo[0] + hi[0]) < 1e-9


def test_torso_mesh_is_closed_outward_and_below_the_neck():
    t = build_torso()
    edges = Counter((int(f[i]), int(f[(i + 1) % 3])) for f in t.faces for i in range(3))
    assert max(edges.values()) == 1 and all((b, a) in edges for a, b in edges), "closed, consistent winding"
    v, e, f = len(np.unique(t.faces)), len(edges) // 2, len(t.faces)
    assert v - e + f == 2
    tri = t.vertices[t.faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume > 0, "faces point outwards"
    assert t.vertices[:, 1].max() < -0.17 and np.ptp(t.vertices[:, 0]) > 0.3  # under the neck, shoulder-wide


def test_torso_fills_the_bottom_of_the_frame_in_image_and_matte(tmp_path):
    """With the torso the frontal camera's bottom rows are clothed foreground across the shoulders
    (no FLAME vertex there); without it only the neck reaches them."""
    kwargs = dict(seed=0, downscale=10, timesteps_per_sequence=1, n_train_sequences=1, test_timesteps=1,
                  free_timesteps=1, progress=False, workers=1)
    plain = generate_dataset(tmp_path / "plain", **kwargs)
    torso = generate_dataset(tmp_path / "torso", torso=True, **kwargs)
    name = f"00000_{FRONT_CAMERA:02d}.png"
    seq = lambda paths: Path(paths["subjects"]["s000"]["sequences"]["EXP-1"])  # noqa: E731
    mask_plain = np.asarray(Image.open(seq(plain) / "fg_masks" / name), dtype=np.float64) / 255
    mask_torso = np.asarray(Image.open(seq(torso) / "fg_masks" / name), dtype=np.float64) / 255
    h, w = mask_torso.shape
    bottom = slice(int(0.9 * h), h)
    shoulders = np.r_[int(0.1 * w):int(0.25 * w), int(0.75 * w):int(0.9 * w)]
    assert mask_torso[bottom][:, shoulders].mean() > 0.99
    assert mask_plain[bottom][:, shoulders].mean() < 0.01
    # FLAME stops at the neck: the torso rows hold no projected FLAME vertex.
    frame = next(f for f in _load(seq(torso) / "transforms.json")["frames"] if f["camera_index"] == FRONT_CAMERA)
    flame = load_flame(torso["flame_model"], torso["flame_masks"])
    p = np.load(seq(torso) / "flame_param" / "00000.npz")
    t = lambda k: torch.as_tensor(p[k], dtype=torch.float32)  # noqa: E731
    verts = flame(t("shape")[None], t("expr"), t("rotation"), t("neck_pose"), t("jaw_pose"), t("eyes_pose"),
                  t("translation"), static_offset=t("static_offset"))[0].numpy()
    w2c = gl_to_cv_viewmat(np.array(frame["transform_matrix"]))
    cam = verts @ w2c[:3, :3].T + w2c[:3, 3]
    rows = frame["fl_y"] * cam[:, 1] / cam[:, 2] + frame["cy"]
    assert rows.max() < 0.9 * h


def test_flame_pickle_has_official_layout(synthetic_dataset):
    with open(synthetic_dataset["flame_model"], "rb") as fh:
        model = pickle.load(fh)
    V, F = model["v_template"].shape[0], model["f"].shape[0]
    assert 3000 < V < 6000 and 6000 < F < 12000
    assert model["v_template"].shape == (V, 3) and model["v_template"].dtype == np.float64
    assert model["shapedirs"].shape == (V, 3, 400)
    assert model["posedirs"].shape == (V, 3, 36)
    assert isinstance(model["J_regressor"], scipy.sparse.csc_matrix) and model["J_regressor"].shape == (5, V)
    assert model["weights"].shape == (V, 5) and np.allclose(model["weights"].sum(1), 1.0)
    assert np.array_equal(model["kintree_table"], KINTREE_TABLE)
    assert model["kintree_table"][0, 0] == 4294967295
    assert model["f"].shape == (F, 3) and model["f"].max() == V - 1
    assert np.allclose(np.asarray(model["J_regressor"].sum(1)).ravel(), 1.0)
    # Expression blendshapes are smooth and non-trivial; eyeballs do not take expressions.
    expr = model["shapedirs"][:, :, 300:]
    assert np.abs(expr[:, :, :8]).max(axis=(0, 1)).min() > 0.002
    with open(synthetic_dataset["flame_masks"], "rb") as fh:
        masks = pickle.load(fh)
    for name in REQUIRED_MASKS:
        assert name in masks and masks[name].dtype.kind == "i" and len(masks[name]) > 0, name
    assert np.abs(expr[masks["left_eyeball"]]).max() == 0.0
    for key in ("lip_outside_ring_upper", "lip_outside_ring_lower"):
        ring = masks[key]
        assert ring.shape == (15,)
        assert np.all(np.diff(model["v_template"][ring, 0]) > 0), "rings run left to right (increasing x)"
    upper = model["v_template"][masks["lip_outside_ring_upper"]]
    lower = model["v_template"][masks["lip_outside_ring_lower"]]
    assert np.all(upper[:, 1] > lower[:, 1])


def test_flame_class_loads_synthetic_model(synthetic_dataset):
    flame = load_flame(synthetic_dataset["flame_model"], synthetic_dataset["flame_masks"])
    model = build_head_model()
    V, F = model.v_template.shape[0], model.faces.shape[0]
    assert flame.num_vertices == V + 120 and flame.num_faces == F + 168
    for name in REQUIRED_MASKS + ("teeth",):
        assert flame.vertex_masks[name].any(), name
    zeros = torch.zeros(1, 3)
    verts = flame(torch.zeros(1, 300), torch.zeros(1, 100), zeros, zeros, zeros, torch.zeros(1, 6), zeros)
    assert torch.allclose(verts[0, :V].double(), torch.from_numpy(model.v_template), atol=1e-6)
    joints = flame.joints(torch.zeros(1, 300))[0]
    assert joints[3, 0] > 0 > joints[4, 0], "joint 3 is the left (+x) eye"
    # Opening the jaw moves the chin down, not the forehead; rotating the eyes moves only eyeballs.
    jaw = flame(torch.zeros(1, 300), None, None, None, torch.tensor([[0.3, 0.0, 0.0]]), None, None)[0]
    chin = int(torch.argmin(verts[0, :V, 1] - 10 * verts[0, :V, 2] * (verts[0, :V, 1] < -0.05)))
    assert jaw[chin, 1] < verts[0, chin, 1] - 0.01
    top = int(torch.argmax(verts[0, :, 1]))
    assert torch.allclose(jaw[top], verts[0, top], atol=1e-6)


# ----------------------------------------------------------------------------- dataset files
def _load(path):
    return json.loads(Path(path).read_text())


def test_dataset_layout_and_json_fields(synthetic_dataset):
    ds = synthetic_dataset
    subj = ds["subjects"]["s000"]
    assert set(subj["sequences"]) == {"EXP-1", "EXP-2", "TEST", "FREE"}
    assert Path(subj["union"]).name == "UNION_s000_v16_DS10_whiteBg_staticOffset"
    assert Path(subj["sequences"]["EXP-1"]).name == "s000_EXP-1_v16_DS10_whiteBg_staticOffset"
    union = Path(subj["union"])
    assert sorted(p.name for p in union.iterdir()) == ["canonical_flame_param.npz", "transforms_test.json",
                                                        "transforms_train.json", "transforms_val.json"]
    train, val, test = (_load(union / f"transforms_{s}.json") for s in ("train", "val", "test"))
    for doc in (train, val, test):
        for key in ("cx", "cy", "fl_x", "fl_y", "w", "h", "camera_angle_x", "camera_angle_y", "timestep_indices",
                    "camera_indices", "frames"):
            assert key in doc, key
        assert doc["w"] == 55 and doc["h"] == 80
        assert 195 < doc["fl_x"] < 215  # ~2048 / 10
    assert len(train["frames"]) == 2 * 4 * 15 and FRONT_CAMERA not in train["camera_indices"]
    assert len(val["frames"]) == 2 * 4 and val["camera_indices"] == [FRONT_CAMERA]
    assert len(test["frames"]) == 3 * 16 and test["timestep_indices"] == [8, 9, 10]
    assert train["timestep_indices"] == list(range(8))
    frame = train["frames"][0]
    for key in ("timestep_index", "camera_index", "camera_id", "fl_x", "fl_y", "cx", "cy", "w", "h",
                "transform_matrix", "file_path", "fg_mask_path", "flame_param_path"):
        assert key in frame, key
    assert frame["file_path"].startswith("../s000_EXP-1_v16_DS10_whiteBg_staticOffset/images/")
    for f in train["frames"] + val["frames"] + test["frames"]:
        for key in ("file_path", "fg_mask_path", "flame_param_path"):
            assert (union / f[key]).is_file(), f[key]
        m = np.array(f["transform_matrix"])
        assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9) and np.allclose(m[3], [0, 0, 0, 1])
        assert 0.9 < np.linalg.norm(m[:3, 3]) < 1.1  # ~1 m from the head
    assert {f["timestep_index"] for f in test["frames"] if "TEST" in f["file_path"]} == {8, 9, 10}
    # Each sequence folder is a valid single-sequence subject.
    seq = Path(subj["sequences"]["FREE"])
    assert (seq / "canonical_flame_param.npz").is_file()
    assert len(_load(seq / "transforms.json")["frames"]) == 3 * 16
    assert len(_load(seq / "transforms_train.json")["frames"]) == 3 * 15
    assert len(_load(seq / "transforms_val.json")["frames"]) == 3
    assert _load(seq / "transforms_test.json")["frames"] == []
    assert sorted(p.name for p in (seq / "images").iterdir())[:2] == ["00000_00.png", "00000_01.png"]


def test_flame_npz_keys_and_shapes(synthetic_dataset):
    union = Path(synthetic_dataset["subjects"]["s000"]["union"])
    V = build_head_model().v_template.shape[0] + 120
    shapes = {"translation": (1, 3), "rotation": (1, 3), "neck_pose": (1, 3), "jaw_pose": (1, 3), "eyes_pose": (1, 6),
              "shape": (300,), "expr": (1, 100), "static_offset": (1, V, 3)}
    frame = _load(union / "transforms_train.json")["frames"][-1]
    for path in (union / frame["flame_param_path"], union / "canonical_flame_param.npz"):
        with np.load(path) as npz:
            assert {k: npz[k].shape for k in npz.files} == shapes
            assert 0 < np.abs(npz["static_offset"]).max() < 0.01
    with np.load(union / "canonical_flame_param.npz") as npz:
        assert not npz["expr"].any() and not npz["jaw_pose"].any()


def test_images_white_background_and_head_coverage(synthetic_dataset):
    seq = Path(synthetic_dataset["subjects"]["s000"]["sequences"]["EXP-1"])
    for cam in (0, 8, 15):
        img = np.asarray(Image.open(seq / "images" / f"00002_{cam:02d}.png"))
        mask = np.asarray(Image.open(seq / "fg_masks" / f"00002_{cam:02d}.png"))
        assert img.shape == (80, 55, 3) and mask.shape == (80, 55)
        assert np.all(img[mask == 0] == 255)
        coverage = (mask > 127).mean()
        assert 0.15 < coverage < 0.6, coverage
        assert len(np.unique(mask)) > 2, "the matte is soft (anti-aliased edges)"
        assert img[mask == 255].mean() < 200, "the head is not white"


def test_posed_flame_vertices_project_into_the_matte(synthetic_dataset):
    """Camera conventions: the npz parameters posed through FLAME land on the rendered head."""
    ds = synthetic_dataset
    union = Path(ds["subjects"]["s000"]["union"])
    flame = load_flame(ds["flame_model"], ds["flame_masks"])
    for frame in _load(union / "transforms_test.json")["frames"][::7]:
        p = {k: torch.from_numpy(v) for k, v in np.load(union / frame["flame_param_path"]).items()}
        verts = flame(p["shape"][None], p["expr"], p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"],
                      p["translation"], static_offset=p["static_offset"])[0].double().numpy()
        w2c = gl_to_cv_viewmat(np.array(frame["transform_matrix"]))
        cam = verts @ w2c[:3, :3].T + w2c[:3, 3]
        u = frame["fl_x"] * cam[:, 0] / cam[:, 2] + frame["cx"]
        v = frame["fl_y"] * cam[:, 1] / cam[:, 2] + frame["cy"]
        mask = np.asarray(Image.open(union / frame["fg_mask_path"])) / 255.0
        ui = np.clip(u.astype(int), 0, frame["w"] - 1)
        vi = np.clip(v.astype(int), 0, frame["h"] - 1)
        assert (mask[vi, ui] > 0).mean() > 0.97


def test_generation_is_deterministic_and_seed_dependent(tmp_path):
    kwargs = dict(downscale=20, timesteps_per_sequence=2, n_train_sequences=1, test_timesteps=1, free_timesteps=1,
                  progress=False)
    a = generate_dataset(tmp_path / "a", seed=3, **kwargs)
    b = generate_dataset(tmp_path / "b", seed=3, **kwargs)
    c = generate_dataset(tmp_path / "c", seed=4, **kwargs)

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in Path(root).rglob("*")
                if p.is_file() and p.suffix in (".npz", ".json", ".png", ".pkl") and p.name != "synthetic_manifest.json"}
    fa, fb, fc = files(a["root"]), files(b["root"]), files(c["root"])
    assert fa.keys() == fb.keys() and len(fa) > 20
    assert all(fa[k] == fb[k] for k in fa), [str(k) for k in fa if fa[k] != fb[k]][:5]
    differing = [k for k in fa if k.suffix in (".png", ".npz") and "flame2023" not in str(k) and fa[k] != fc.get(k)]
    assert len(differing) > 10
    assert fa[Path("flame/flame2023.pkl")] == fc[Path("flame/flame2023.pkl")], "the head model is seed-independent"
    # Tracking noise changes the written parameters, never the images.
    d = generate_dataset(tmp_path / "d", seed=3, tracking_noise=0.02, **kwargs)
    fd = files(d["root"])
    assert all(fa[k] == fd[k] for k in fa if k.suffix == ".png")
    noisy = [k for k in fa if "flame_param/" in str(k) and fa[k] != fd[k]]
    assert len(noisy) == len([k for k in fa if "flame_param/" in str(k)]) > 0


def test_skip_when_complete_and_regenerate_when_settings_change(tmp_path, capsys):
    kwargs = dict(downscale=20, timesteps_per_sequence=1, n_train_sequences=1, test_timesteps=1, free_timesteps=1)
    generate_dataset(tmp_path, **kwargs, progress=False)
    marker = Path(generate_dataset(tmp_path, **kwargs)["subjects"]["s000"]["union"]) / "transforms_train.json"
    assert "skipping" in capsys.readouterr().out
    generate_dataset(tmp_path, **{**kwargs, "n_train_sequences": 2}, progress=False)
    manifest = _load(tmp_path / "synthetic_manifest.json")
    assert manifest["settings"]["n_train_sequences"] == 2 and manifest["complete"]
    assert len(_load(marker)["timestep_indices"]) == 2


def test_invalid_settings_are_user_facing_errors(tmp_path):
    with pytest.raises(UserFacingError, match="cameras"):
        generate_dataset(tmp_path, n_cameras=8, progress=False)
    with pytest.raises(UserFacingError, match="downscale"):
        generate_dataset(tmp_path, downscale=0, progress=False)
    with pytest.raises(UserFacingError, match="train-sequences"):
        generate_dataset(tmp_path, n_cameras=1, n_train_sequences=2, progress=False)
    with pytest.raises(UserFacingError, match="jpeg-quality"):
        generate_dataset(tmp_path, jpeg_quality=100, progress=False)
    with pytest.raises(UserFacingError, match="blur"):
        generate_dataset(tmp_path, blur_sigma=-1.0, progress=False)


def test_degradation_blurs_and_compresses_images_but_not_mattes(tmp_path):
    """Blur and JPEG change the colour images only (the mattes and FLAME files stay byte-equal),
    and lose high frequencies: the Laplacian energy of every degraded image is lower."""
    kwargs = dict(seed=1, downscale=10, timesteps_per_sequence=1, n_train_sequences=1, test_timesteps=1,
                  free_timesteps=1, progress=False, workers=1)
    clean = Path(generate_dataset(tmp_path / "clean", **kwargs)["root"])
    soft = Path(generate_dataset(tmp_path / "soft", blur_sigma=1.0, jpeg_quality=60, **kwargs)["root"])
    images = sorted(p.relative_to(clean) for p in clean.rglob("images/*.png"))
    mattes = sorted(p.relative_to(clean) for p in clean.rglob("fg_masks/*.png"))
    params = sorted(p.relative_to(clean) for p in clean.rglob("flame_param/*.npz"))
    assert len(images) == len(mattes) > 30
    assert all((clean / m).read_bytes() == (soft / m).read_bytes() for m in mattes + params)

    def detail(path: Path) -> float:
        img = np.asarray(Image.open(path), dtype=np.float64) / 255.0
        lap = 4 * img[1:-1, 1:-1] - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2] - img[1:-1, 2:]
        return float((lap ** 2).mean())
    ratios = [detail(soft / i) / detail(clean / i) for i in images]
    assert max(ratios) < 0.8, ratios
    manifest = _load(soft / "synthetic_manifest.json")["settings"]
    assert manifest["blur_sigma"] == 1.0 and manifest["jpeg_quality"] == 60
    assert "blur_sigma" not in _load(clean / "synthetic_manifest.json")["settings"]


def test_monocular_capture_is_one_take_split_into_train_and_test(tmp_path):
    """One frontal camera; no validation split; TEST continues EXP-1's take (one smooth clip)."""
    paths = generate_dataset(tmp_path, seed=2, downscale=10, n_cameras=1, timesteps_per_sequence=6,
                             n_train_sequences=1, test_timesteps=3, free_timesteps=1, progress=False, workers=1)
    union = Path(paths["subjects"]["s000"]["union"])
    train, val, test = (_load(union / f"transforms_{s}.json")["frames"] for s in ("train", "val", "test"))
    assert len(train) == 6 and val == [] and len(test) == 3
    assert {f["camera_index"] for f in train + test} == {0}
    c2w = np.array(train[0]["transform_matrix"])
    assert abs(c2w[0, 3]) < 0.02 and c2w[2, 3] > 0.9, "the one camera looks at the face from the front"
    # The take is continuous across the split: the step from the last training timestep to the
    # first test one is no larger than the steps within the take.
    seqs = paths["subjects"]["s000"]["sequences"]
    expr = [np.load(Path(seqs[name]) / "flame_param" / f"{t:05d}.npz")["expr"][0]
            for name, n in (("EXP-1", 6), ("TEST", 3)) for t in range(n)]
    steps = [np.abs(b - a).max() for a, b in zip(expr, expr[1:])]
    assert steps[5] <= 1.5 * max(steps[:5] + steps[6:]), steps


def test_cli_skips_complete_output(synthetic_dataset, capsys):
    from scripts.make_synthetic_subject import main
    s = synthetic_dataset["settings"]
    rc = main(["--out", synthetic_dataset["root"], "--downscale", str(s["downscale"]), "--timesteps",
               str(s["timesteps_per_sequence"]), "--train-sequences", str(s["n_train_sequences"]),
               "--test-timesteps", str(s["test_timesteps"]), "--free-timesteps", str(s["free_timesteps"])])
    assert rc == 0 and "skipping" in capsys.readouterr().out


# ----------------------------------------------------------------------------- appearance
@pytest.fixture(scope="module")
def front_renderer(synthetic_dataset):
    ds = synthetic_dataset
    model = build_head_model()
    flame = load_flame(ds["flame_model"], ds["flame_masks"])
    identity = make_identity(0, 0, model, flame.v_template.numpy())
    n = flame.teeth.ring_upper.shape[0]
    appearance = Appearance(model.template, float(flame.teeth.vertices[2 * n:4 * n, 1].mean()), identity.look,
                            texture_size=(256, 512))
    renderer = GroundTruthRenderer(model.template, flame.faces, flame.v_template, appearance)
    rig = make_rig(16, 0)
    K = torch.tensor(rig.intrinsics(5)[[FRONT_CAMERA]], dtype=torch.float32)
    viewmat = torch.tensor(rig.viewmats()[[FRONT_CAMERA]], dtype=torch.float32)
    w, h = rig.image_size(5)

    def render(expr=None, jaw=0.0, state=None, wrinkles=True):
        e = torch.zeros(1, 100)
        for k, v in (expr or {}).items():
            e[0, k] = v
        jaw_pose = torch.tensor([[jaw, 0.0, 0.0]])
        verts = flame(torch.from_numpy(identity.shape)[None], e, None, None, jaw_pose, None, None,
                      static_offset=torch.from_numpy(identity.static_offset))[0]
        st = state if state is not None else ExpressionState.from_params(e[0].numpy(), jaw_pose[0].numpy())
        img, alpha = renderer.render(verts, st, torch.eye(3), viewmat, K, h, w, wrinkles=wrinkles)
        return img[0].numpy(), alpha[0].numpy()
    project = lambda p: (K[0] @ (viewmat[0, :3, :3] @ torch.tensor(p, dtype=torch.float32) + viewmat[0, :3, 3]))  # noqa
    return render, project, model


def _pixel(project, point):
    q = project(point)
    return int(q[0] / q[2]), int(q[1] / q[2])


def test_jaw_opening_shows_dark_mouth_interior(front_renderer):
    render, project, model = front_renderer
    lm = model.template.landmarks
    x, y = _pixel(project, [0.0, lm["mouth_y"] - 0.008, lm["mouth_z"]])
    closed, _ = render()
    opened, _ = render(jaw=0.3)
    win = (slice(y - 4, y + 5), slice(x - 5, x + 6))
    dark_closed = (closed[win].mean(-1) < 0.2).sum()
    dark_open = (opened[win].mean(-1) < 0.2).sum()
    assert dark_open >= dark_closed + 10, (dark_closed, dark_open)


def test_brow_raise_wrinkles_darken_forehead_beyond_geometry(front_renderer):
    render, project, model = front_renderer
    x, y = _pixel(project, [0.0, 0.070, 0.085])
    win = (slice(y - 6, y + 7), slice(x - 10, x + 11))
    # Same geometry (brow raised), with and without the wrinkle term.
    plain, _ = render({BROW_RAISE: 2.0}, wrinkles=False)
    drops = []
    for value in (0.5, 1.0, 2.0):
        wrinkled, _ = render({BROW_RAISE: 2.0}, state=ExpressionState(brow_raise=value))
        drops.append((plain[win] - wrinkled[win]).mean(-1))
    assert drops[-1].max() > 0.12, "clearly visible dark stripes"
    assert (drops[-1] > 0.05).sum() >= 20, "several pixels"
    assert drops[0].mean() < drops[1].mean() < drops[2].mean(), "grows smoothly with the coefficient"
    assert np.all(drops[-1] > -1e-6), "wrinkles only darken"


def test_smile_and_jaw_add_creases(front_renderer):
    render, _, model = front_renderer
    plain, _ = render({SMILE: 1.5}, wrinkles=False)
    creased, _ = render({SMILE: 1.5})
    assert (plain - creased).mean(-1).max() > 0.1
    jaw_plain, _ = render(jaw=0.3, wrinkles=False)
    jaw_creased, _ = render(jaw=0.3)
    assert (jaw_plain - jaw_creased).mean(-1).max() > 0.08


def test_identity_looks_differ_and_textures_are_deterministic(front_renderer):
    render, _, _ = front_renderer
    a, _ = render()
    b, _ = render()
    assert np.array_equal(a, b)
    looks = {sample_identity_look(np.random.default_rng(s)).skin for s in range(6)}
    assert len(looks) > 1


# ----------------------------------------------------------------------------- motion & rig
def test_motion_is_smooth_and_in_range():
    seq = make_sequence(np.random.default_rng(0), 40, style="train")
    assert np.all(seq.jaw_pose[:, 0] >= 0) and seq.jaw_pose[:, 0].max() <= 0.45
    assert np.abs(seq.rotation).max() < 0.3 and np.abs(seq.neck_pose).max() <= 0.15 + 1e-9
    assert np.abs(seq.expr[0]).max() < np.abs(seq.expr).max() * 0.5, "starts near neutral"
    steps = np.abs(np.diff(seq.expr[:, :8], axis=0)).max()
    assert steps < 1.2
    assert seq.expr[:, :8].max() > 0.8, "meaningful expressions reach visible magnitudes"
    noisy = add_tracking_noise(seq, 0.01, np.random.default_rng(1))
    assert not np.array_equal(noisy.expr, seq.expr)
    assert add_tracking_noise(seq, 0.0, np.random.default_rng(1)) is seq


def test_camera_rig_arc_and_conventions():
    rig = make_rig(16, 0)
    pos = rig.c2w[:, :3, 3]
    az = np.degrees(np.arctan2(pos[:, 0], pos[:, 2]))
    assert np.all(np.diff(az) > 0) and 110 < az[-1] - az[0] < 130 and abs(az[FRONT_CAMERA]) < 1e-6
    assert np.allclose(np.linalg.norm(pos, axis=1), 1.0, atol=0.05)
    # Every camera looks at the head: the origin projects near the image centre.
    for c2w, K in zip(rig.c2w, rig.intrinsics(1)):
        w2c = gl_to_cv_viewmat(c2w)
        p = w2c[:3, :3] @ np.zeros(3) + w2c[:3, 3]
        assert p[2] > 0.9
        u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
        assert abs(u - 275) < 30 and abs(v - 401) < 40
    m = look_at_c2w_gl(np.array([0.0, 0.0, 1.0]), np.zeros(3))
    assert np.allclose(m[:3, :3], np.eye(3))  # OpenGL: camera at +z looking at -z


def test_contact_sheet_renders(synthetic_dataset):
    from synthetic.preview import SHOWCASE, render_contact_sheet
    sheet = render_contact_sheet(synthetic_dataset, "s000", cameras=(0, 8), scale=1)
    assert sheet.size == (90 + 2 * 55, len(SHOWCASE) * 80)
