"""Feature-line blendshapes and opacity decoder (scene/methods/tensorial/feature_lines.py)."""
import pytest
import torch

from scene.methods.tensorial.feature_lines import FeatureLineBlendshapes, OpacityDecoder, lookup_lines

LO = torch.tensor([-1.0, 0.0, 2.0])
HI = torch.tensor([1.0, 3.0, 4.0])


def _model(**kw):
    args = dict(n_expr_bases=5, n_jaw_bases=3, resolution=8, channels=4, bbox_min=LO, bbox_max=HI)
    args.update(kw)
    return FeatureLineBlendshapes(**args)


def _decoder():
    return OpacityDecoder(6 * 4, 16)  # the lines' 6 C features of _model


def _linear(line, s):
    """Hand-rolled linear interpolation of line (C, R) at continuous sample coordinate s."""
    R = line.shape[-1]
    i0 = min(int(s), R - 2)
    f = s - i0
    return line[:, i0] * (1 - f) + line[:, i0 + 1] * f


def test_lookup_matches_hand_linear_interpolation():
    torch.manual_seed(0)
    lines = torch.randn(3, 4, 8)
    pts = torch.tensor([[0.3, 1.1, 2.2], [-1.0, 3.0, 4.0], [1.0, 0.0, 3.0], [-0.5, 1.5, 3.5]])
    feats, inside = lookup_lines(lines, pts, LO, HI)
    assert feats.shape == (4, 12) and inside.all()
    for n in range(4):
        s = ((pts[n] - LO) / (HI - LO) * 7).tolist()
        want = torch.cat([_linear(lines[a], s[a]) for a in range(3)])
        assert torch.allclose(feats[n], want, atol=1e-6)
    # sample points: box min hits sample 0, box max the last sample
    assert torch.allclose(feats[1, :4], lines[0, :, 0])
    assert torch.allclose(feats[1, 4:8], lines[1, :, -1])


def test_outside_points_get_zero_features_and_zero_offset():
    torch.manual_seed(1)
    m, dec = _model(), _decoder()
    with torch.no_grad():
        m.expr_lines.normal_()
        m.jaw_lines.normal_()
        dec.net[2].weight.normal_()
        dec.net[2].bias.fill_(0.7)
    pts = torch.tensor([[0.0, 1.0, 3.0], [1.01, 1.0, 3.0], [0.0, -0.1, 3.0], [0.0, 1.0, 9.0]])
    lines, _ = m.blend(torch.randn(5), torch.full((3,), 1 / 3))
    feats, inside = m.lookup(lines, pts)
    assert inside.tolist() == [True, False, False, False]
    assert (feats[1:] == 0).all()
    delta = m(pts, torch.randn(5), torch.full((3,), 1 / 3), dec)
    assert delta.shape == (4,)
    assert delta[0] != 0 and (delta[1:] == 0).all()


def test_zero_init_gives_exactly_zero_delta():
    m = _model()
    delta = m(torch.rand(50, 3) * (HI - LO) + LO, torch.randn(100), torch.rand(3), _decoder())
    assert (delta == 0).all()
    assert (m.expr_lines == 0).all() and (m.jaw_lines == 0).all()


def test_decoder_is_exactly_zero_on_zero_features_for_any_batch():
    # Not a zero output layer: the output weights are live, and zero features still map to 0.0
    # exactly whatever the batch size (BLAS blocking must not leave rounding residue).
    for seed in range(10):
        torch.manual_seed(seed)
        dec = OpacityDecoder(192, 128)
        assert dec.net[2].weight.abs().sum() > 0
        for n in (1, 2, 7, 64, 1000):
            assert (dec(torch.zeros(n, 192)) == 0).all()
        assert (dec(torch.randn(4, 192)) != 0).all()


def test_blend_equals_manual_weighted_sum_and_uses_first_components():
    torch.manual_seed(2)
    m = _model()
    with torch.no_grad():
        m.expr_lines.normal_()
        m.jaw_lines.normal_()
    expr = torch.randn(1, 100)  # full FLAME expression vector: the first 5 are used
    jw = torch.tensor([0.2, 0.5, 0.3])
    eb, jb = m.blend(expr, jw)
    want_e = sum(expr[0, i] * m.expr_lines[i] for i in range(5))
    want_j = sum(jw[k] * m.jaw_lines[k] for k in range(3))
    assert torch.allclose(eb, want_e, atol=1e-6) and torch.allclose(jb, want_j, atol=1e-6)
    with pytest.raises(ValueError):
        m.blend(torch.randn(4), jw)


def test_delta_is_decoder_of_concatenated_lookups():
    torch.manual_seed(3)
    m, dec = _model(), _decoder()
    with torch.no_grad():
        m.expr_lines.normal_()
        m.jaw_lines.normal_()
        dec.net[2].weight.normal_()
    pts = torch.rand(6, 3) * (HI - LO) + LO
    expr, jw = torch.randn(5), torch.tensor([0.1, 0.3, 0.6])
    eb, jb = m.blend(expr, jw)
    fe, _ = m.lookup(eb, pts)
    fj, _ = m.lookup(jb, pts)
    want = dec(torch.cat([fe, fj], -1))[:, 0]
    assert torch.allclose(m(pts, expr, jw, dec), want, atol=1e-6)


def test_gradients_flow_to_lines_after_first_step():
    torch.manual_seed(4)
    m, dec = _model(), _decoder()
    pts = torch.rand(64, 3) * (HI - LO) + LO
    expr, jw = torch.randn(5), torch.tensor([0.2, 0.3, 0.5])
    target = torch.randn(64)
    opt = torch.optim.Adam([*m.parameters(), *dec.parameters()], lr=1e-2)
    grads = []
    for _ in range(3):
        opt.zero_grad()
        loss = ((m(pts, expr, jw, dec) - target) ** 2).mean()
        loss.backward()
        grads.append(m.expr_lines.grad.abs().sum().item() + m.jaw_lines.grad.abs().sum().item())
        opt.step()
    # Delta starts at exactly 0, yet the lines get a gradient from the very first step (the
    # decoder's start is not the zero-output saddle; see scene/methods/tensorial/feature_lines.py).
    assert grads[0] > 0 and grads[1] > 0 and grads[2] > 0
    assert m.expr_lines.abs().sum() > 0 and m.jaw_lines.abs().sum() > 0


def test_decoder_shapes():
    dec = OpacityDecoder(192, 128)
    assert dec(torch.randn(7, 192)).shape == (7, 1)
    m = FeatureLineBlendshapes()
    assert m.expr_lines.shape == (80, 3, 32, 64) and m.jaw_lines.shape == (16, 3, 32, 64)


def test_decoder_is_the_papers_two_hidden_layers_and_starts_at_zero_with_gradient():
    dec = OpacityDecoder()
    linears = [m for m in dec.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(192, 128), (128, 128), (128, 1)]
    f = torch.zeros(500, 192, requires_grad=True)
    out = dec(f)
    assert torch.equal(out, torch.zeros(500, 1))  # exactly zero on zero features
    out.sum().backward()
    assert f.grad.abs().sum() > 0  # the lines get a gradient at the first step
    # One hidden layer is the earlier decoder (an option): same exact-zero start.
    assert [m.in_features for m in OpacityDecoder(192, 128, layers=1).net if isinstance(m, torch.nn.Linear)] == [192, 128]
