"""Triplane lookup, colour decoder and view-direction rotation (scene/methods/tensorial/triplane.py; view directions: scene/model/binding.py)."""
import math

import pytest
import torch

from scene.methods.tensorial.triplane import (
    SH_C0,
    ColorDecoder,
    Triplane,
    rgb_to_sh_dc,
    sh_dc_to_rgb,
)
from scene.model.binding import canonical_view_dirs, view_directions
from utils.encoding import encoding_dim, positional_encoding
from flame_model.lbs import axis_angle_to_matrix

LO = torch.tensor([-1.0, 0.0, 2.0])
HI = torch.tensor([1.0, 3.0, 4.0])
RES = 4


def _triplane():
    torch.manual_seed(0)
    return Triplane(resolution=RES, channels=(3, 2, 2), bbox_min=LO, bbox_max=HI)


def _bilinear(plane, a, b):
    """Hand-rolled bilinear lookup: plane (C, R, R) indexed [c, j along b, i along a];
    a, b are continuous grid coordinates in [0, R-1]."""
    R = plane.shape[-1]
    i0, j0 = min(int(math.floor(a)), R - 2), min(int(math.floor(b)), R - 2)
    fa, fb = a - i0, b - j0
    return (
        plane[:, j0, i0] * (1 - fa) * (1 - fb)
        + plane[:, j0, i0 + 1] * fa * (1 - fb)
        + plane[:, j0 + 1, i0] * (1 - fa) * fb
        + plane[:, j0 + 1, i0 + 1] * fa * fb
    )


def _expected(tp, p):
    g = ((p - LO) / (HI - LO)).clamp(0, 1) * (RES - 1)  # grid coordinates per axis
    x, y, z = g.tolist()
    return torch.cat(
        [
            _bilinear(tp.plane_xy[0].detach(), x, y),
            _bilinear(tp.plane_xz[0].detach(), x, z),
            _bilinear(tp.plane_yz[0].detach(), y, z),
        ]
    )


def test_bilinear_lookup_matches_hand_computation():
    tp = _triplane()
    pts = torch.tensor(
        [
            [0.1, 1.3, 2.7],
            [-0.77, 2.9, 3.95],
            [0.5, 0.0, 3.0],
        ]
    )
    out = tp(pts)
    assert out.shape == (3, 7)
    for n in range(3):
        assert torch.allclose(out[n], _expected(tp, pts[n]), atol=1e-6)


def test_grid_nodes_and_box_corners_return_stored_features():
    tp = _triplane()
    # grid node (i=1, j=2, l=3): x = -1 + 1 * 2/3, y = 0 + 2 * 1, z = 2 + 3 * 2/3
    node = torch.tensor([[-1 + 2 / 3, 2.0, 4.0]])
    out = tp(node)[0]
    assert torch.allclose(out[:3], tp.plane_xy[0, :, 2, 1], atol=1e-6)
    assert torch.allclose(out[3:5], tp.plane_xz[0, :, 3, 1], atol=1e-6)
    assert torch.allclose(out[5:], tp.plane_yz[0, :, 3, 2], atol=1e-6)
    corners = tp(torch.stack([LO, HI]))
    assert torch.allclose(corners[0, :3], tp.plane_xy[0, :, 0, 0])
    assert torch.allclose(corners[1, :3], tp.plane_xy[0, :, -1, -1])
    assert torch.allclose(corners[1, 5:], tp.plane_yz[0, :, -1, -1])


def test_points_outside_clamp_to_border():
    tp = _triplane()
    outside = torch.tensor([[5.0, 1.3, -7.0]])
    clamped = torch.tensor([[1.0, 1.3, 2.0]])
    assert torch.allclose(tp(outside), tp(clamped))
    assert torch.allclose(tp(outside)[0], _expected(tp, outside[0]), atol=1e-6)


def test_gradients_reach_planes_and_init_is_small_random():
    tp = Triplane(resolution=16, bbox_min=LO, bbox_max=HI)
    assert tp.out_features == 64
    std = tp.plane_xy.detach().std().item()
    assert 0.05 < std < 0.2
    out = tp(torch.rand(10, 3) * (HI - LO) + LO)
    out.sum().backward()
    for p in tp.planes():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # bbox is part of the state dict
    assert "bbox_min" in tp.state_dict()


def test_invalid_box_rejected():
    with pytest.raises(ValueError):
        Triplane(resolution=4, bbox_min=(0, 0, 0), bbox_max=(1, 0, 1))


def test_positional_encoding_layout():
    x = torch.tensor([[0.25, -0.5, 1.0]])
    pe = positional_encoding(x, 2)
    assert pe.shape == (1, encoding_dim(3, 2)) == (1, 15)
    assert torch.allclose(pe[0, :3], x[0])
    assert torch.allclose(pe[0, 3:6], torch.sin(math.pi * x[0]))
    assert torch.allclose(pe[0, 6:9], torch.cos(math.pi * x[0]))
    assert torch.allclose(pe[0, 9:12], torch.sin(2 * math.pi * x[0]))
    assert torch.allclose(pe[0, 12:15], torch.cos(2 * math.pi * x[0]))


def test_color_decoder_shapes_and_sh_convention():
    torch.manual_seed(0)
    dec = ColorDecoder(in_features=64, view_pe_freqs=4, hidden=128)
    assert dec.net[0].in_features == 64 + 27
    feats = torch.randn(5, 64)
    dirs = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    f_dc = dec(feats, dirs)
    assert f_dc.shape == (5, 3)
    assert torch.allclose(dec.rgb(feats, dirs), (SH_C0 * f_dc + 0.5).clamp_min(0))
    rgb = torch.tensor([[0.0, 0.5, 1.0]])
    assert torch.allclose(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb)


def test_canonical_view_dirs_rotation():
    torch.manual_seed(1)
    Rc = axis_angle_to_matrix(torch.randn(4, 3))
    Rd = axis_angle_to_matrix(torch.randn(4, 3))
    v = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    out = canonical_view_dirs(v, Rc, Rd)
    for n in range(4):
        assert torch.allclose(out[n], Rc[n] @ torch.linalg.inv(Rd[n]) @ v[n], atol=1e-5)
    # identical frames: unchanged; per-triangle rotations gathered by binding
    assert torch.allclose(canonical_view_dirs(v, Rc, Rc), v, atol=1e-6)
    binding = torch.tensor([2, 0, 0, 3])
    assert torch.allclose(
        canonical_view_dirs(v, Rc, Rd, binding=binding), canonical_view_dirs(v, Rc[binding], Rd[binding])
    )


def test_view_directions():
    means = torch.tensor([[0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    d = view_directions(means, torch.zeros(3))
    assert torch.allclose(d, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
