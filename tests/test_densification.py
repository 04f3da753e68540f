"""Binding-aware densification: clone/split keep the triangle, pruning never empties one."""
import torch

from scene.training.densification import BindingAwareDensification
from scene.model.gaussian_model import BoundGaussians, inverse_sigmoid
from scene.training.optimizer_ops import make_splat_optimizers
from scene.training.densification import DensifyConfig


def setup(n_faces=10, per_face=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    binding = torch.arange(n_faces).repeat_interleave(per_face)
    model = BoundGaussians(binding)
    with torch.no_grad():
        model.params["xyz"].copy_(torch.randn(len(model), 3, generator=g) * 0.1)
        model.params["log_scale"].copy_(torch.randn(len(model), 3, generator=g) * 0.1)
    opts = make_splat_optimizers(model, {"xyz": 1e-3, "rotation": 1e-3, "log_scale": 1e-3, "opacity": 1e-3})
    return model, opts


def fake_meta(n, grads, radii=None):
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = torch.stack([grads, torch.zeros_like(grads)], -1)[None]
    return {"means2d": means2d, "radii": torch.full((1, n), 5) if radii is None else radii}


def test_prune_never_empties_a_triangle():
    model, opts = setup()
    with torch.no_grad():  # triangle 0..4: every splat transparent; 5..9: one transparent splat
        op = torch.full((len(model),), 0.5)
        op[:15] = 1e-4
        op[15::3] = 1e-4
        op[1] = 2e-3  # the most opaque of triangle 0 must survive
        model.params["opacity"].copy_(inverse_sigmoid(op))
    cfg = DensifyConfig(grad_threshold=1.0)
    strategy = BindingAwareDensification(cfg, scene_extent=1.0, num_faces=10)
    strategy.update_statistics(fake_meta(len(model), torch.zeros(len(model))), 100, 100)
    events = strategy.densify_and_prune(model, opts, torch.full((len(model), 3), 1e-4))
    counts = torch.bincount(model.binding, minlength=10)
    assert (counts >= 1).all()
    assert counts[:5].tolist() == [1] * 5 and counts[5:].tolist() == [2] * 5
    assert events["pruned"] == 30 - 15
    # Triangle 0 kept its most opaque splat.
    assert torch.isclose(model.opacity[model.binding == 0], torch.tensor(2e-3), rtol=1e-4).all()


def test_unbound_splats_are_pruned_like_3dgs():
    """A geometry whose splats move freely (``binds_splats`` False): every transparent splat goes,
    even the last of its nearest triangle."""
    model, opts = setup()
    with torch.no_grad():
        op = torch.full((len(model),), 0.5)
        op[:15] = 1e-4  # triangles 0..4 wholly transparent
        model.params["opacity"].copy_(inverse_sigmoid(op))
    strategy = BindingAwareDensification(DensifyConfig(grad_threshold=1.0), scene_extent=1.0, num_faces=10,
                                         bound=False)
    strategy.update_statistics(fake_meta(len(model), torch.zeros(len(model))), 100, 100)
    events = strategy.densify_and_prune(model, opts, torch.full((len(model), 3), 1e-4))
    assert events["pruned"] == 15
    assert torch.bincount(model.binding, minlength=10).tolist() == [0] * 5 + [3] * 5


def test_clone_and_split_keep_parent_triangle():
    model, opts = setup(n_faces=4, per_face=2)
    n = len(model)
    grads = torch.zeros(n)
    grads[[0, 3, 6]] = 1.0  # splats on triangles 0, 1, 3
    scales = torch.full((n, 3), 1e-4)
    scales[3] = 1.0  # large -> split
    strategy = BindingAwareDensification(DensifyConfig(grad_threshold=1e-3, min_opacity=0.0), 1.0, 4)
    strategy.update_statistics(fake_meta(n, grads * 2 / 100), 100, 100)
    parent_xyz = model.params["xyz"][3].detach().clone()
    parent_scale = model.params["log_scale"][3].detach().clone()
    events = strategy.densify_and_prune(model, opts, scales)
    assert events["cloned"] == 2 and events["split"] == 1
    assert len(model) == n + 2 + 1  # clones add one each, a split replaces 1 by 2
    counts = torch.bincount(model.binding, minlength=4)
    assert counts.tolist() == [3, 3, 2, 3]
    # Split children are smaller by 1.6 and were sampled around the parent.
    children = model.binding == 1
    kids_scale = model.params["log_scale"][children][-2:]
    assert torch.allclose(kids_scale, (parent_scale - torch.log(torch.tensor(1.6))).expand(2, 3))
    assert not torch.equal(model.params["xyz"][children][-1], parent_xyz)
    # Optimisers follow: every parameter tensor is the optimiser's.
    for name, opt in opts.items():
        assert opt.param_groups[0]["params"][0] is model.params[name]


def test_opacity_reset_clamps_and_schedule():
    model, opts = setup()
    cfg = DensifyConfig(densify_from_iter=0, densification_interval=10, opacity_reset_interval=30, densify_until_iter=100)
    strategy = BindingAwareDensification(cfg, 1.0, 10)
    strategy.update_statistics(fake_meta(len(model), torch.zeros(len(model))), 10, 10)
    assert strategy.step(5, model, opts, torch.full((len(model), 3), 1e-4)) == {}
    assert "pruned" in strategy.step(10, model, opts, torch.full((len(model), 3), 1e-4))
    events = strategy.step(30, model, opts, torch.full((len(model), 3), 1e-4))
    assert events.get("opacity_reset") == 1
    assert (model.opacity <= 0.01 + 1e-6).all()


def test_max_splats_caps_growth():
    model, opts = setup(n_faces=4, per_face=2)
    cfg = DensifyConfig(grad_threshold=1e-3, min_opacity=0.0, max_splats=10)
    strategy = BindingAwareDensification(cfg, 1.0, 4)
    strategy.update_statistics(fake_meta(8, torch.ones(8)), 100, 100)
    strategy.densify_and_prune(model, opts, torch.full((8, 3), 1e-4))
    assert len(model) == 10
