"""Triangle frames and local<->world transforms of bound splats (scene/model/binding.py)."""
import math

import pytest
import torch

from scene.model.binding import (
    canonical_positions,
    initial_local_params,
    local_to_world,
    local_to_world_positions,
    triangle_frames,
    world_to_local,
    world_to_local_rotation_scale,
)
from flame_model.lbs import axis_angle_to_matrix
from utils.rotations import (
    axis_angle_to_quat,
    matrix_to_quat,
    quat_multiply,
    quat_to_matrix,
)



@pytest.fixture(autouse=True)
def _float64():
    # Exact comparisons in double precision; restore so other test modules are unaffected.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _mesh():
    verts = torch.tensor(
        [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.3, 0.2, 1.5], [1.0, -1.0, 0.4]]
    )
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [1, 4, 2], [2, 3, 4]])
    return verts, faces


def _same_quat(a, b, atol=1e-9):
    # q and -q are the same rotation
    return torch.minimum((a - b).abs().amax(-1), (a + b).abs().amax(-1)).max() < atol


def test_frame_of_hand_built_triangle():
    verts = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.5, 1.0, 0.0]])
    R, k, T = triangle_frames(verts, torch.tensor([[0, 1, 2]]))
    R = R[0]
    # a0 along the first edge (+x), a1 the normal (+z for this counter-clockwise triangle),
    # a2 = a0 x a1 = -y.
    assert torch.allclose(R[:, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(R[:, 1], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(R[:, 2], torch.tensor([0.0, -1.0, 0.0]))
    # k = (|v1 - v0| + |a2 . (v2 - v0)|) / 2 = (2 + 1) / 2
    assert math.isclose(float(k[0]), 1.5)
    assert torch.allclose(T[0], torch.tensor([2.5 / 3, 1.0 / 3, 0.0]))


def test_frames_orthonormal_and_formula_on_general_mesh():
    verts, faces = _mesh()
    R, k, T = triangle_frames(verts, faces)
    eye = torch.eye(3).expand(len(faces), 3, 3)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(faces)))
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    n = torch.linalg.cross(e1, e2)
    assert torch.allclose(R[..., 0], e1 / e1.norm(dim=-1, keepdim=True))
    assert torch.allclose(R[..., 1], n / n.norm(dim=-1, keepdim=True))
    # height of v2 over the first edge = |e1 x e2| / |e1|
    height = n.norm(dim=-1) / e1.norm(dim=-1)
    assert torch.allclose(k, 0.5 * (e1.norm(dim=-1) + height))
    assert torch.allclose(T, (v0 + v1 + v2) / 3)


def test_degenerate_triangles_give_finite_orthonormal_frames():
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 3]])  # collinear; all vertices coincide
    R, k, T = triangle_frames(verts, faces)
    assert torch.isfinite(R).all() and torch.isfinite(k).all()
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3).expand(2, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2))
    assert torch.allclose(k, torch.tensor([0.5, 0.0]))


def test_local_origin_maps_to_centroid_and_init_matches_triangle():
    verts, faces = _mesh()
    R, k, T = triangle_frames(verts, faces)
    binding, xyz, quat, log_scale = initial_local_params(len(faces), dtype=torch.float64)
    means, quats, scales = local_to_world(R, k, T, binding, xyz, quat, log_scale)
    assert torch.allclose(means, T)
    assert torch.allclose(scales, k[:, None].expand(-1, 3))
    assert torch.allclose(quat_to_matrix(quats), R, atol=1e-12)


def test_local_to_world_against_direct_computation():
    torch.manual_seed(0)
    verts, faces = _mesh()
    R, k, T = triangle_frames(verts, faces)
    binding = torch.tensor([0, 3, 1, 1, 2, 0])
    xyz = torch.randn(6, 3)
    quat = torch.randn(6, 4)
    log_scale = torch.randn(6, 3) * 0.3
    means, quats, scales = local_to_world(R, k, T, binding, xyz, quat, log_scale)
    for i, f in enumerate(binding.tolist()):
        assert torch.allclose(means[i], k[f] * R[f] @ xyz[i] + T[f])
        assert torch.allclose(quat_to_matrix(quats[i]), R[f] @ quat_to_matrix(quat[i]), atol=1e-12)
        assert torch.allclose(scales[i], k[f] * torch.exp(log_scale[i]))
    assert torch.allclose(quats.norm(dim=-1), torch.ones(6))
    assert torch.allclose(local_to_world_positions(R, k, T, binding, xyz), means)


def test_rigid_motion_of_mesh_moves_splats_rigidly():
    torch.manual_seed(1)
    verts, faces = _mesh()
    binding = torch.tensor([0, 1, 2, 3, 2])
    xyz, quat, log_scale = torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 3)
    aa = torch.tensor([0.3, -1.1, 0.7])
    Rg, t = axis_angle_to_matrix(aa), torch.tensor([0.1, 2.0, -0.5])
    m0, q0, s0 = local_to_world(*triangle_frames(verts, faces), binding, xyz, quat, log_scale)
    m1, q1, s1 = local_to_world(*triangle_frames(verts @ Rg.T + t, faces), binding, xyz, quat, log_scale)
    assert torch.allclose(m1, m0 @ Rg.T + t, atol=1e-12)
    assert _same_quat(q1, quat_multiply(axis_angle_to_quat(aa), q0))
    assert torch.allclose(s1, s0)
    # uniform scaling of the mesh scales splat sizes
    m2, _, s2 = local_to_world(*triangle_frames(verts * 3.0, faces), binding, xyz, quat, log_scale)
    assert torch.allclose(s2, 3 * s0) and torch.allclose(m2, 3 * m0)


def test_batched_frames_match_per_item():
    torch.manual_seed(2)
    verts, faces = _mesh()
    batch = torch.stack([verts, verts * 1.2 + 0.3])
    binding = torch.tensor([1, 0, 3])
    xyz, quat, log_scale = torch.randn(3, 3), torch.randn(3, 4), torch.randn(3, 3)
    mb, qb, sb = local_to_world(*triangle_frames(batch, faces), binding, xyz, quat, log_scale)
    for b in range(2):
        m, q, s = local_to_world(*triangle_frames(batch[b], faces), binding, xyz, quat, log_scale)
        assert torch.allclose(mb[b], m) and torch.allclose(qb[b], q) and torch.allclose(sb[b], s)


def test_world_to_local_round_trip():
    torch.manual_seed(3)
    verts, faces = _mesh()
    R, k, T = triangle_frames(verts, faces)
    binding = torch.tensor([0, 1, 2, 3, 3, 1])
    xyz, quat, log_scale = torch.randn(6, 3), torch.randn(6, 4), torch.randn(6, 3)
    means, quats, scales = local_to_world(R, k, T, binding, xyz, quat, log_scale)
    assert torch.allclose(world_to_local(R, k, T, binding, means), xyz, atol=1e-12)
    lq, ls = world_to_local_rotation_scale(R, k, binding, quats, scales)
    assert _same_quat(lq, quat / quat.norm(dim=-1, keepdim=True))
    assert torch.allclose(ls, log_scale, atol=1e-12)


def test_canonical_positions_helper_and_gradients():
    verts, faces = _mesh()
    binding = torch.tensor([0, 2])
    xyz = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]], requires_grad=True)
    p = canonical_positions(verts, faces, binding, xyz)
    R, k, T = triangle_frames(verts, faces)
    assert torch.allclose(p[1], T[2])
    p.sum().backward()
    assert xyz.grad is not None and torch.isfinite(xyz.grad).all()


def test_rotation_helpers_round_trip():
    torch.manual_seed(4)
    aa = torch.randn(200, 3) * 1.5
    aa[0] = 0.0
    aa[1] = torch.tensor([math.pi - 1e-6, 0.0, 0.0])  # near 180 degrees
    Rm = axis_angle_to_matrix(aa)
    q = matrix_to_quat(Rm)
    assert torch.allclose(quat_to_matrix(q), Rm, atol=1e-9)
    # Rodrigues, independently
    theta = aa.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    kx = aa / theta
    K = torch.zeros(200, 3, 3)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -kx[:, 2], kx[:, 1], -kx[:, 0]
    K = K - K.transpose(1, 2)
    rod = torch.eye(3) + torch.sin(theta)[..., None] * K + (1 - torch.cos(theta))[..., None] * K @ K
    assert torch.allclose(Rm[1:], rod[1:], atol=1e-9)
    assert torch.allclose(Rm[0], torch.eye(3))
    a, b = torch.randn(10, 4), torch.randn(10, 4)
    assert torch.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)


def test_spread_over_triangles_puts_splats_inside_their_triangles():
    from scene.model.binding import local_to_world_positions
    from scene.model.gaussian_model import BoundGaussians
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(30, 3, generator=g)
    faces = torch.randint(0, 30, (20, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    splats = BoundGaussians.spread_over_triangles(verts, faces, per_triangle=7)
    n = faces.shape[0] * 7
    assert len(splats) == n and torch.equal(splats.binding, torch.arange(faces.shape[0]).repeat_interleave(7))
    assert torch.allclose(splats.params["log_scale"], torch.full((n, 3), -0.5 * math.log(7)))
    world = local_to_world_positions(*triangle_frames(verts, faces), splats.binding, splats.params["xyz"].detach())
    # Barycentric coordinates of each splat in its triangle: all in [0, 1], residual zero.
    a, b, c = (verts[faces[splats.binding, i]] for i in range(3))
    m = torch.stack([b - a, c - a], dim=-1)  # (n, 3, 2)
    uv = torch.linalg.lstsq(m, (world - a)[..., None]).solution[..., 0]
    assert torch.allclose(a + (m @ uv[..., None])[..., 0], world, atol=1e-4)
    assert (uv >= -1e-4).all() and (uv.sum(-1) <= 1 + 1e-4).all()
    # Different points, not copies of the centroid; one per triangle is GA's centroid init.
    assert world.reshape(-1, 7, 3).std(1).min() > 1e-3
    assert len(BoundGaussians.spread_over_triangles(verts, faces, per_triangle=1)) == faces.shape[0]
