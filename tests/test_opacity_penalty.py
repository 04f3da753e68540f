"""Adaptive truncated opacity-offset penalty (scene/methods/tensorial/opacity_penalty.py)."""
import torch

from scene.model.binding import triangle_displacements
from scene.methods.tensorial.opacity_penalty import static_triangle_weights, truncated_opacity_penalty


def test_triangle_displacement_is_centroid_translation():
    canon = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0], [1.0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    expr = canon.clone()
    expr[3] += torch.tensor([0.0, 0.0, 0.003])  # only vertex 3 moves, 3 mm
    d = triangle_displacements(expr, canon, faces)
    assert torch.allclose(d, torch.tensor([0.0, 0.001]))
    batch = triangle_displacements(torch.stack([canon, expr]), canon, faces)
    assert batch.shape == (2, 2) and torch.allclose(batch[1], d)


def test_static_weights_per_region():
    disp = torch.tensor([0.0005, 0.0015, 0.0015, 0.0025, 0.001, 0.002])
    face = torch.tensor([True, True, False, False, True, False])
    w = static_triangle_weights(disp, face, 1e-3, 2e-3, 1.0, 2.0)
    # face: static below 1 mm (weight 1); elsewhere: static below 2 mm (weight 2); <= is static
    assert w.tolist() == [1.0, 0.0, 2.0, 0.0, 1.0, 2.0]


def test_penalty_equals_l1_formula_on_static_and_zero_on_moving():
    tri_disp = torch.tensor([0.0, 0.01, 0.0005, 0.05])  # static, moving, static, moving
    face = torch.tensor([True, True, False, False])
    binding = torch.tensor([0, 0, 1, 2, 3, 3])
    delta = torch.tensor([0.5, -0.2, 3.0, -0.4, 7.0, -1.0], requires_grad=True)
    loss = truncated_opacity_penalty(delta, binding, tri_disp, face, weight_face=1.0, weight_other=2.0)
    want = (1.0 * 0.5 + 1.0 * 0.2 + 2.0 * 0.4) / 6  # mean over all 6 splats
    assert abs(loss.item() - want) < 1e-7
    loss.backward()
    # moving triangles (1 and 3) get no gradient; static ones get sign(delta) w / N
    assert delta.grad.tolist()[2] == 0 and delta.grad.tolist()[4:] == [0.0, 0.0]
    assert torch.allclose(delta.grad[[0, 1, 3]], torch.tensor([1 / 6, -1 / 6, -2 / 6]))


def test_penalty_zero_when_all_triangles_move_or_offsets_vanish():
    face = torch.ones(3, dtype=torch.bool)
    binding = torch.tensor([0, 1, 2])
    moving = torch.full((3,), 0.01)
    assert truncated_opacity_penalty(torch.randn(3), binding, moving, face).item() == 0.0
    assert truncated_opacity_penalty(torch.zeros(3), binding, torch.zeros(3), face).item() == 0.0
    assert truncated_opacity_penalty(torch.ones(3), binding, torch.zeros(3), face).item() > 0.0
    assert truncated_opacity_penalty(torch.zeros(0), binding[:0], torch.zeros(3), face).item() == 0.0
