"""Jaw-rotation bases by farthest point sampling and their blend weights (scene/methods/tensorial/jaw_bases.py)."""
import math

import pytest
import torch

from scene.methods.tensorial.jaw_bases import axis_angle_to_quat, farthest_point_jaw_bases, jaw_weights, quat_distance


def _q(aa):
    return axis_angle_to_quat(torch.tensor(aa, dtype=torch.float64))


def test_identity_first_then_farthest():
    poses = torch.tensor([[0.1, 0, 0], [0.4, 0, 0], [0.2, 0, 0], [0.05, 0, 0]], dtype=torch.float64)
    bases = farthest_point_jaw_bases(poses, n_bases=3)
    assert torch.allclose(bases[0], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    # no training frame is the identity, the identity is still basis 0
    assert torch.allclose(bases[1], _q([0.4, 0, 0]))  # farthest from the identity
    # next: the rotation maximising the distance to its nearest basis: 0.2 (0.2 from both)
    assert torch.allclose(bases[2], _q([0.2, 0, 0]))


def test_each_cluster_gets_a_basis():
    torch.manual_seed(0)
    centres = torch.tensor([[0.3, 0, 0], [0, 0.3, 0], [0, 0, 0.3], [0.25, 0.1, -0.1]], dtype=torch.float64)
    poses = (centres[:, None] + 0.005 * torch.randn(4, 25, 3, dtype=torch.float64)).reshape(-1, 3)
    bases = farthest_point_jaw_bases(poses, n_bases=5)
    assert bases.shape == (5, 4)
    qc = axis_angle_to_quat(centres)
    nearest = quat_distance(bases[1:], qc).argmin(dim=1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]


def test_duplicates_stop_early_and_pad_weights():
    poses = torch.tensor([[0.2, 0, 0]] * 5 + [[0, 0, 0]] * 3)
    bases = farthest_point_jaw_bases(poses, n_bases=16)
    assert bases.shape == (2, 4)
    w = jaw_weights(poses[:1], bases, pad_to=16)
    assert w.shape == (1, 16) and (w[0, 2:] == 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(1))
    with pytest.raises(ValueError):
        jaw_weights(poses[:1], bases, pad_to=1)


def test_weights_formula_exact_values():
    bases = torch.stack([_q([0, 0, 0]), _q([0.3, 0, 0]), _q([0, 0.5, 0])])
    pose = torch.tensor([[0.3, 0, 0]], dtype=torch.float64)  # exact match with basis 1
    w = jaw_weights(pose, bases)
    # 1 - d_k = |q . q_k| = |cos(angle between rotations / 2)|
    sims = torch.tensor(
        [math.cos(0.15), 1.0, abs(float(_q([0.3, 0, 0]) @ _q([0, 0.5, 0])))], dtype=torch.float64
    )
    assert torch.allclose(w[0], sims / sims.sum())
    assert torch.allclose(w.sum(-1), torch.ones(1, dtype=torch.float64))
    assert int(w.argmax()) == 1  # the matching basis has the largest weight (not one-hot)
    # quaternions accepted directly; q and -q give the same weights
    q = _q([0.3, 0, 0])[None]
    assert torch.allclose(jaw_weights(q, bases), w) and torch.allclose(jaw_weights(-q, bases), w)


def test_batch_of_poses():
    torch.manual_seed(1)
    poses = torch.randn(40, 3) * 0.2
    bases = farthest_point_jaw_bases(poses, n_bases=16)
    assert bases.shape == (16, 4)
    assert torch.allclose(bases.norm(dim=-1), torch.ones(16))
    assert (bases[:, 0] >= 0).all()
    w = jaw_weights(poses, bases)
    assert w.shape == (40, 16) and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(40))


def test_idw_weights_interpolate_the_bases_and_are_sharper_than_the_papers():
    bases = farthest_point_jaw_bases(torch.tensor([[0.0, 0, 0], [0.3, 0, 0], [0.15, 0.05, 0], [0.05, 0, 0.02]]), 4)
    at_basis = jaw_weights(bases[2:3], bases, kind="idw")
    assert torch.allclose(at_basis, torch.nn.functional.one_hot(torch.tensor([2]), 4).double().to(at_basis.dtype),
                          atol=1e-6)
    pose = torch.tensor([[0.12, 0.02, 0.0]])
    paper, idw = jaw_weights(pose, bases), jaw_weights(pose, bases, kind="idw")
    assert torch.allclose(idw.sum(-1), torch.ones(1)) and (idw >= 0).all()
    assert paper.max() - paper.min() < 0.01  # the paper's weights: nearly uniform for real jaw angles
    assert idw.max() > 0.5  # IDW puts most weight on the nearest basis
    d = quat_distance(axis_angle_to_quat(pose), bases)[0]
    expected = d ** -2 / (d ** -2).sum()
    assert torch.allclose(idw[0], expected.to(idw.dtype), rtol=1e-3, atol=1e-5)  # float32 distances near 0
    with pytest.raises(ValueError, match="paper, idw"):
        jaw_weights(pose, bases, kind="gauss")
