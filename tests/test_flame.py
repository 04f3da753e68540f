"""FLAME layer: loading (restricted unpickler, chumpy, old scipy/numpy paths), LBS, teeth, errors.

Everything runs on fake pickles built by ``tests/flame_fixtures.py``; reference results come from
an independent numpy/scipy implementation written here.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from flame_fixtures import (FLAME_RING_LOWER, FLAME_RING_UPPER, dense, make_flame_sized_model, make_small_model,
                            write_pickle)
from flame_model import FLAME, FLAME_DOWNLOAD_URL
from flame_model.lbs import axis_angle_to_matrix
from flame_model.paths import DEFAULT_FLAME_MODEL_PATH
from utils.errors import InputFileError, MissingFileError, UserFacingError


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Small model (posedirs nonzero) + masks with lip rings, written as plain pickles."""
    d = tmp_path_factory.mktemp("small")
    model, masks = make_small_model()
    write_pickle(d / "flame2023.pkl", model)
    write_pickle(d / "FLAME_masks.pkl", masks)
    return d / "flame2023.pkl", model, masks


@pytest.fixture(scope="module")
def rigid(tmp_path_factory):
    """Small model without pose correctives: pure skinning, for motion-locality tests."""
    d = tmp_path_factory.mktemp("rigid")
    model, masks = make_small_model(seed=3, posedirs_scale=0.0)
    write_pickle(d / "flame2023.pkl", model)
    write_pickle(d / "FLAME_masks.pkl", masks)
    return FLAME(d / "flame2023.pkl").double(), model, masks


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """FLAME-sized model (5023 / 9976) with masks lacking ring keys: teeth from the built-in lip rings."""
    d = tmp_path_factory.mktemp("big")
    model, masks = make_flame_sized_model()
    write_pickle(d / "flame2023.pkl", model)
    write_pickle(d / "FLAME_masks.pkl", masks)
    return FLAME(d / "flame2023.pkl", n_shape=300, n_expr=10).double(), model, masks


def zeros_params(batch, dtype=torch.float64):
    z = lambda n: torch.zeros(batch, n, dtype=dtype)  # noqa: E731
    return dict(expr=z(100), rotation=z(3), neck_pose=z(3), jaw_pose=z(3), eyes_pose=z(6), translation=z(3))


def run(flame, shape, p, static_offset=None):
    return flame(shape, p["expr"], p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"], p["translation"],
                 static_offset=static_offset)


# ------------------------------------------------------------------------------ independent reference
def reference_lbs(m, shape, expr, pose, trans, static_offset=None, n_shape=300, n_expr=100):
    """FLAME LBS in numpy from the raw pickle arrays (one sample). pose: (15,) axis-angle."""
    d = dense(m)
    dirs = np.concatenate([d["shapedirs"][:, :, :n_shape], d["shapedirs"][:, :, 300:300 + n_expr]], 2)
    v = d["v_template"] + np.tensordot(dirs, np.concatenate([shape, expr]), axes=([2], [0]))
    if static_offset is not None:
        v = v + static_offset
    joints = d["J_regressor"] @ v
    rots = [Rotation.from_rotvec(pose[3 * k:3 * k + 3]).as_matrix() for k in range(5)]
    feat = np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    v = v + np.tensordot(d["posedirs"], feat, axes=([2], [0]))
    parents = [-1, 0, 1, 1, 1]
    world = []
    for k, p in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = rots[k]
        local[:3, 3] = joints[k] - (joints[p] if p >= 0 else 0)
        world.append(local if p < 0 else world[p] @ local)
    homog = np.concatenate([v, np.ones((len(v), 1))], 1)
    out = np.zeros_like(v)
    for k in range(5):
        unpose = np.eye(4)
        unpose[:3, 3] = -joints[k]
        out += d["weights"][:, [k]] * (homog @ (world[k] @ unpose).T)[:, :3]
    return out + trans


# ------------------------------------------------------------------------------------- basic LBS
def test_zero_pose_gives_shaped_template_plus_offsets(small):
    path, model, masks = small
    flame = FLAME(path, add_teeth=False).double()
    d = dense(model)
    rng = np.random.default_rng(0)
    shape = rng.normal(size=300)
    offset = rng.normal(0, 1e-3, (1, flame.num_vertices, 3))
    p = zeros_params(2)
    p["translation"] = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    verts = run(flame, torch.from_numpy(shape), p, torch.from_numpy(offset)).numpy()
    expected = d["v_template"] + d["shapedirs"][:, :, :300] @ shape + offset[0]
    np.testing.assert_allclose(verts[1], expected, atol=1e-12)
    np.testing.assert_allclose(verts[0], expected + [0.1, -0.2, 0.3], atol=1e-12)
    canon = flame.canonical_vertices(torch.from_numpy(shape), torch.from_numpy(offset)).numpy()
    np.testing.assert_allclose(canon[0], expected, atol=1e-12)


def test_lbs_matches_independent_numpy(small):
    path, model, _ = small
    flame = FLAME(path, add_teeth=False).double()
    rng = np.random.default_rng(1)
    batch = 3
    shape = rng.normal(size=(batch, 300))
    expr = rng.normal(size=(batch, 100))
    pose = rng.normal(0, 0.4, (batch, 15))
    trans = rng.normal(0, 0.1, (batch, 3))
    offset = rng.normal(0, 1e-3, (batch, flame.num_vertices, 3))
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    verts, joints = flame(t(shape), t(expr), t(pose[:, :3]), t(pose[:, 3:6]), t(pose[:, 6:9]), t(pose[:, 9:]),
                          t(trans), static_offset=t(offset), return_joints=True)
    assert verts.dtype == torch.float64 and joints.shape == (batch, 5, 3)
    for b in range(batch):
        ref = reference_lbs(model, shape[b], expr[b], pose[b], trans[b], offset[b])
        np.testing.assert_allclose(verts[b].numpy(), ref, rtol=0, atol=1e-10)


def test_translation_is_added_after_skinning(small):
    flame = FLAME(small[0]).double()
    rng = np.random.default_rng(2)
    p = {k: torch.from_numpy(rng.normal(0, 0.3, v.shape)) for k, v in zeros_params(2).items()}
    shape = torch.from_numpy(rng.normal(size=300))
    base = run(flame, shape, {**p, "translation": torch.zeros(2, 3, dtype=torch.float64)})
    moved = run(flame, shape, p)
    torch.testing.assert_close(moved - base, p["translation"][:, None].expand_as(base), rtol=0, atol=1e-12)


def test_global_rotation_is_rigid_about_root(rigid):
    flame, model, _ = rigid
    rng = np.random.default_rng(4)
    shape = rng.normal(size=300)
    rotvec = np.array([0.3, -0.5, 0.2])
    trans = np.array([0.01, 0.02, -0.03])
    p = zeros_params(1)
    rest = run(flame, torch.from_numpy(shape), p)[0].numpy()
    p["rotation"] = torch.from_numpy(rotvec[None])
    p["translation"] = torch.from_numpy(trans[None])
    posed = run(flame, torch.from_numpy(shape), p)[0].numpy()
    root = (dense(model)["J_regressor"] @ rest[:flame.num_base_vertices])[0]
    r = Rotation.from_rotvec(rotvec).as_matrix()
    np.testing.assert_allclose(posed, (rest - root) @ r.T + root + trans, atol=1e-12)
    dist = lambda v: np.linalg.norm(v[:, None] - v[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(posed), dist(rest), atol=1e-12)


def test_global_rotation_with_pose_correctives_is_still_rigid(small):
    # Pose correctives exclude the root joint, so a pure global rotation stays rigid even with posedirs.
    flame = FLAME(small[0]).double()
    p = zeros_params(1)
    rest = run(flame, torch.zeros(300), p)[0].numpy()
    p["rotation"] = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64)
    posed = run(flame, torch.zeros(300), p)[0].numpy()
    dist = lambda v: np.linalg.norm(v[:, None] - v[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(posed), dist(rest), atol=1e-12)


def test_jaw_and_eyes_move_only_their_vertices(rigid):
    flame, model, _ = rigid
    w = torch.cat([torch.from_numpy(model["weights"]), flame.lbs_weights[flame.num_base_vertices:]])
    p = zeros_params(1)
    rest = run(flame, torch.zeros(300), p)[0]
    for key, value, joints in (("jaw_pose", [0.3, 0.0, 0.0], [2]), ("eyes_pose", [0.2, 0.1, 0, -0.1, 0.3, 0], [3, 4])):
        q = dict(p)
        q[key] = torch.tensor([value], dtype=torch.float64)
        moved = (run(flame, torch.zeros(300), q)[0] - rest).norm(dim=-1) > 1e-12
        influenced = w[:, joints].sum(-1) > 0
        assert torch.equal(moved, influenced), key
        assert moved.any()
    # only the eyeball vertices carry eye weights
    eye_moved = set(torch.nonzero(w[:, [3, 4]].sum(-1) > 0).flatten().tolist())
    assert eye_moved == set(flame.vertex_masks["left_eyeball"].nonzero().flatten().tolist()) | \
        set(flame.vertex_masks["right_eyeball"].nonzero().flatten().tolist())


def test_teeth_follow_neck_and_jaw(rigid):
    flame, _, _ = rigid
    teeth = flame.teeth
    p = zeros_params(1)
    rest, joints = flame(torch.zeros(300), *[p[k] for k in ("expr", "rotation", "neck_pose", "jaw_pose",
                                                            "eyes_pose", "translation")], return_joints=True)
    rest, neck = rest[0].numpy(), joints[0, 1].numpy()
    rotvec = np.array([0.2, 0.4, -0.1])
    q = dict(p, neck_pose=torch.from_numpy(rotvec[None]))
    posed = run(flame, torch.zeros(300), q)[0].numpy()
    r = Rotation.from_rotvec(rotvec).as_matrix()
    for ids in (teeth.upper, teeth.lower):  # both jaws ride on the neck
        np.testing.assert_allclose(posed[ids], (rest[ids] - neck) @ r.T + neck, atol=1e-12)
    # upper lip ring (neck-weighted) moves exactly like the upper teeth
    np.testing.assert_allclose(posed[teeth.ring_upper], (rest[teeth.ring_upper] - neck) @ r.T + neck, atol=1e-12)
    q = dict(p, jaw_pose=torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64))
    posed = run(flame, torch.zeros(300), q)[0].numpy()
    np.testing.assert_allclose(posed[teeth.upper], rest[teeth.upper], atol=1e-14)
    assert np.abs(posed[teeth.lower] - rest[teeth.lower]).max() > 1e-3


def test_broadcasting_padding_and_none(small):
    flame = FLAME(small[0]).double()
    rng = np.random.default_rng(5)
    shape = torch.from_numpy(rng.normal(size=300))
    expr = torch.from_numpy(rng.normal(size=(2, 50)))
    p = zeros_params(2)
    p["jaw_pose"] = torch.from_numpy(rng.normal(0, 0.2, (2, 3)))
    full = dict(p, expr=torch.cat([expr, torch.zeros(2, 50, dtype=torch.float64)], 1))
    a = run(flame, shape, dict(p, expr=expr))
    b = run(flame, shape[None].expand(2, -1), full)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    c = flame(shape, expr, None, None, p["jaw_pose"], None, None)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="expr"):
        flame(shape, torch.zeros(2, 101), None, None, None, None, None)


def test_float32_default_float64_and_grad(small):
    flame = FLAME(small[0])
    assert flame.v_template.dtype == torch.float32 and flame.faces.dtype == torch.int64
    p = {k: v.float() for k, v in zeros_params(1).items()}
    p["rotation"].requires_grad_(True)
    verts = run(flame, torch.zeros(300), p)
    assert verts.dtype == torch.float32
    verts.sum().backward()  # gradient through Rodrigues at exactly zero rotation is finite
    assert torch.isfinite(p["rotation"].grad).all()
    flame64 = flame.double()
    assert flame64.v_template.dtype == torch.float64 and flame64.faces.dtype == torch.int64
    assert run(flame64, torch.zeros(300), zeros_params(1)).dtype == torch.float64
    assert flame.vertex_masks["face"].dtype == torch.bool
    assert flame.state_dict() == {}  # licensed FLAME data never ends up in a saved state_dict


def test_rodrigues_small_and_large_angles():
    r = torch.tensor([[0.0, 0.0, 0.0], [1e-8, -2e-8, 0.0], [1e-3, 0.0, 2e-3], [2.0, -1.0, 0.5]], dtype=torch.float64)
    ref = Rotation.from_rotvec(r.numpy()).as_matrix()
    np.testing.assert_allclose(axis_angle_to_matrix(r).numpy(), ref, atol=1e-14)


# ------------------------------------------------------------------------------------------ teeth
def test_teeth_counts_and_rows_on_flame_sized_template(big):
    flame, model, _ = big
    assert flame.num_vertices == 5023 + 120 and flame.num_faces == 9976 + 168
    assert flame.faces.shape == (10144, 3) and int(flame.faces.max()) < 5143
    v = flame.v_template.numpy()
    up, low = v[FLAME_RING_UPPER], v[FLAME_RING_LOWER]
    d = np.linalg.norm(up - low, axis=1).mean()
    rows = v[5023:].reshape(8, 15, 3)  # upper root, lower root, upper edge, lower edge, then backs
    middle = (up + low) / 2
    upper_edge = rows[2]
    np.testing.assert_allclose(upper_edge[:, 0], middle[:, 0], atol=1e-12)
    np.testing.assert_allclose(upper_edge[:, 1], middle[:, 1].mean() + 0.1 * d, atol=1e-12)  # middle row y equal
    np.testing.assert_allclose(upper_edge[:, 2], middle[:, 2] - 1.5 * d, atol=1e-12)
    np.testing.assert_allclose(rows[0], upper_edge + [0, 2 * d, 0], atol=1e-12)  # upper root
    np.testing.assert_allclose(rows[3], upper_edge + [0, -0.2 * d, -0.4 * d], atol=1e-12)  # lower edge
    np.testing.assert_allclose(rows[1], rows[3] + [0, -2 * d, 0], atol=1e-12)  # lower root
    for back, front in ((4, 0), (5, 2), (6, 1), (7, 3)):
        np.testing.assert_allclose(rows[back], rows[front] + [0, 0, -d], atol=1e-12)


def test_teeth_faces_strips_and_orientation(big):
    flame, _, _ = big
    faces = flame.faces[9976:].numpy()
    v = flame.v_template.numpy()
    assert (faces >= 5023).all()
    row_of = lambda i: (i - 5023) // 15  # noqa: E731
    normals = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    expected = [({0, 2}, 2, 1), ({4, 5}, 2, -1), ({5, 2}, 1, -1), ({1, 3}, 2, 1), ({6, 7}, 2, -1), ({7, 3}, 1, 1)]
    for s, (rows, axis, sign) in enumerate(expected):
        strip = faces[28 * s:28 * (s + 1)]
        assert {row_of(i) for i in strip.ravel()} == rows
        n = normals[28 * s:28 * (s + 1)]
        assert (np.sign(n[:, axis]) == sign).all(), f"strip {s} faces the wrong way"
        # consistent winding inside the strip: each interior edge is used once in each direction
        directed = [(int(t[i]), int(t[(i + 1) % 3])) for t in strip for i in range(3)]
        assert len(set(directed)) == len(directed)
        undirected = {}
        for a, b in directed:
            undirected.setdefault(frozenset((a, b)), []).append((a, b))
        interior = [e for e in undirected.values() if len(e) == 2]
        assert len(interior) == 14 + 13 and all(e[0] == e[1][::-1] for e in interior)
    assert set(faces.ravel()) == set(range(5023, 5143))  # every teeth vertex is used


def test_teeth_blend_data_and_masks(big):
    flame, model, masks = big
    sd = flame.shapedirs.numpy()
    raw = np.asarray(model["shapedirs"], dtype=np.float64)
    mean = (raw[FLAME_RING_UPPER, :, :300] + raw[FLAME_RING_LOWER, :, :300]) / 2
    np.testing.assert_allclose(sd[5023:, :, :300].reshape(8, 15, 3, 300), np.broadcast_to(mean, (8, 15, 3, 300)),
                               rtol=1e-6)
    assert not sd[5023:, :, 300:].any()
    assert not flame.posedirs[5023:].any() and not flame.J_regressor[:, 5023:].any()
    w = flame.lbs_weights[5023:].numpy()
    assert np.array_equal(w[:, 1], np.repeat([1, 0, 1, 0, 1, 1, 0, 0], 15))
    assert np.array_equal(w[:, 2], np.repeat([0, 1, 0, 1, 0, 0, 1, 1], 15))
    vm = flame.vertex_masks
    assert int(vm["teeth"].sum()) == 120 and vm["teeth"][5023:].all()
    for name, m in vm.items():
        assert m.shape == (5143,)
        if name != "teeth":
            assert not m[5023:].any() and int(m.sum()) == len(masks[name])
    fm = flame.face_masks
    assert fm["teeth"].shape == (10144,) and int(fm["teeth"].sum()) == 168
    faces = flame.faces
    torch.testing.assert_close(fm["lips"], vm["lips"][faces].all(-1))
    # a 5023-row static offset is zero-padded for the teeth
    off = torch.randn(1, 5023, 3, dtype=torch.float64) * 1e-3
    canon = flame.canonical_vertices(torch.zeros(300), off)
    torch.testing.assert_close(canon[0, 5023:], flame.v_template[5023:], rtol=0, atol=0)
    torch.testing.assert_close(canon[0, :5023], flame.v_template[:5023] + off[0], rtol=0, atol=1e-15)


def test_teeth_rings_from_masks_and_missing_rings(small, tmp_path):
    path, model, masks = small
    flame = FLAME(path)
    assert flame.num_vertices == len(model["v_template"]) + 120
    assert np.array_equal(flame.teeth.ring_upper, masks["lip_outside_ring_upper"])
    assert "lip_outside_ring_upper" not in flame.vertex_masks  # ordered rings are not regions
    write_pickle(tmp_path / "flame2023.pkl", model)  # no masks beside it, not FLAME-sized
    with pytest.raises(InputFileError, match="lip_outside_ring_upper"):
        FLAME(tmp_path / "flame2023.pkl")
    plain = FLAME(tmp_path / "flame2023.pkl", add_teeth=False)
    assert plain.vertex_masks == {} and plain.num_vertices == len(model["v_template"])
    with pytest.raises(MissingFileError, match="FLAME_masks.pkl") as err:
        plain.require_mask("face")
    assert str(tmp_path / "FLAME_masks.pkl") in str(err.value) and FLAME_DOWNLOAD_URL in str(err.value)
    with pytest.raises(InputFileError, match="nose"):
        flame.require_mask("nose")
    assert flame.require_mask("face").dtype == torch.bool


# ---------------------------------------------------------------------------------------- loading
def _assert_same_model(flame, model, n_expr=100):
    d = dense(model)
    torch.testing.assert_close(flame.v_template, torch.from_numpy(d["v_template"]), rtol=0, atol=0)
    sd = np.concatenate([d["shapedirs"][:, :, :300], d["shapedirs"][:, :, 300:300 + n_expr]], 2)
    torch.testing.assert_close(flame.shapedirs, torch.from_numpy(sd), rtol=0, atol=0)
    torch.testing.assert_close(flame.posedirs, torch.from_numpy(d["posedirs"]), rtol=0, atol=0)
    torch.testing.assert_close(flame.J_regressor, torch.from_numpy(d["J_regressor"]), rtol=0, atol=0)
    torch.testing.assert_close(flame.lbs_weights, torch.from_numpy(d["weights"]), rtol=0, atol=0)
    assert torch.equal(flame.faces, torch.from_numpy(d["f"]))
    assert flame.parents == [-1, 0, 1, 1, 1]


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_pickle_loads_without_chumpy(tmp_path, protocol):
    import sys
    model, _ = make_small_model(seed=7, n_expr=20)
    path = write_pickle(tmp_path / "flame2023.pkl", model, chumpy=True, protocol=protocol,
                        chumpy_expression_key="unused_expression")
    assert "chumpy" not in sys.modules and b"chumpy" in path.read_bytes()
    flame = FLAME(path, n_expr=20, add_teeth=False).double()
    _assert_same_model(flame, model, n_expr=20)


@pytest.mark.parametrize("protocol", [0, 2])
def test_old_scipy_and_numpy_core_paths(tmp_path, protocol):
    # protocol 0 also exercises the Python 2 names copy_reg._reconstructor / __builtin__.object
    model, _ = make_small_model(seed=8, n_expr=10)
    path = write_pickle(tmp_path / "flame2023.pkl", model, chumpy=True, legacy_paths=True, protocol=protocol)
    blob = path.read_bytes()
    assert b"scipy.sparse.csc\ncsc_matrix" in blob and b"numpy.core.multiarray" in blob and b"numpy._core" not in blob
    assert protocol != 0 or b"copy_reg\n_reconstructor" in blob
    flame = FLAME(path, n_expr=10, add_teeth=False).double()
    _assert_same_model(flame, model, n_expr=10)


def test_flame_2020_generic_model_loads(tmp_path):
    model, masks = make_small_model(seed=9)
    model["kintree_table"] = model["kintree_table"].astype(np.uint32)
    folder = tmp_path / "FLAME2020"
    write_pickle(folder / "generic_model.pkl", model, chumpy=True, legacy_paths=True)
    write_pickle(folder / "FLAME_masks.pkl", masks)
    flame = FLAME(folder).double()  # a folder resolves to flame2023.pkl or generic_model.pkl
    assert flame.model_path.name == "generic_model.pkl" and flame.masks_path.name == "FLAME_masks.pkl"
    assert flame.num_vertices == len(model["v_template"]) + 120


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "flame2023.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(InputFileError, match="refusing") as err:
        FLAME(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_chumpy_expression_in_required_key_is_a_clear_error(tmp_path):
    model, _ = make_small_model(seed=10)
    path = write_pickle(tmp_path / "m.pkl", {k: v for k, v in model.items() if k != "weights"},
                        chumpy_expression_key="weights")
    with pytest.raises(InputFileError, match="'weights'.*chumpy"):
        FLAME(path, add_teeth=False)


def test_fewer_components_than_asked(tmp_path):
    model, _ = make_small_model(seed=11, n_expr=50)
    path = write_pickle(tmp_path / "flame2023.pkl", model)
    with pytest.raises(InputFileError) as err:
        FLAME(path, n_expr=100, add_teeth=False)
    msg = str(err.value)
    assert str(path) in msg and "300 shape" in msg and "50 expression" in msg and "n_expr" in msg
    flame = FLAME(path, n_shape=100, n_expr=50, add_teeth=False)
    assert flame.shapedirs.shape[-1] == 150
    # the expression columns are taken after all 300 identity columns of the file
    np.testing.assert_allclose(flame.shapedirs[:, :, 100:].double().numpy(), model["shapedirs"][:, :, 300:],
                               rtol=1e-6, atol=1e-9)


def test_missing_model_file_message(tmp_path):
    missing = tmp_path / "nowhere" / "flame2023.pkl"
    with pytest.raises(MissingFileError) as err:
        FLAME(missing)
    msg = str(err.value)
    assert isinstance(err.value, UserFacingError)
    assert str(missing) in msg and FLAME_DOWNLOAD_URL in msg and "FLAME 2023 (with jaw rotation)" in msg
    assert "--flame" in msg and str(DEFAULT_FLAME_MODEL_PATH) in msg
    if not DEFAULT_FLAME_MODEL_PATH.exists():
        with pytest.raises(MissingFileError, match="flame2023.pkl"):
            FLAME(None)


def test_missing_explicit_masks_file(small, tmp_path):
    with pytest.raises(MissingFileError) as err:
        FLAME(small[0], masks_path=tmp_path / "FLAME_masks.pkl")
    assert str(tmp_path / "FLAME_masks.pkl") in str(err.value) and "FLAME Vertex Masks" in str(err.value)


@pytest.mark.parametrize("change, key", [
    (lambda m: m.pop("posedirs"), "posedirs"),
    (lambda m: m.update(shapedirs=m["shapedirs"][:-1]), "shapedirs"),
    (lambda m: m.update(weights=m["weights"][:, :4]), "weights"),
    (lambda m: m.update(kintree_table=np.array([[ROOT, 0, 3, 1, 1], [0, 1, 2, 3, 4]])), "kintree_table"),
])
def test_malformed_model_names_file_and_key(tmp_path, change, key):
    model, _ = make_small_model(seed=12, n_expr=5)
    change(model)
    path = write_pickle(tmp_path / "flame2023.pkl", model)
    with pytest.raises(InputFileError) as err:
        FLAME(path, n_expr=5, add_teeth=False)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_not_a_pickle_and_bad_masks(tmp_path, small):
    bad = tmp_path / "flame2023.pkl"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(InputFileError, match="not a readable"):
        FLAME(bad)
    masks = tmp_path / "masks.pkl"
    write_pickle(masks, {"face": np.array([0, 1, 10 ** 6])})
    with pytest.raises(InputFileError, match="'face'"):
        FLAME(small[0], masks_path=masks, add_teeth=False)


ROOT = 4294967295
