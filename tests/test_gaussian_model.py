"""Splat storage: PLY round trip (with and without SH), optimiser rows follow the splats."""
import torch

from scene.gaussian_model import BoundGaussians
from scene.optimizer_ops import make_splat_optimizers, replace_splat_rows


def random_model(n=50, sh_degree=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = BoundGaussians(torch.randint(0, 20, (n,), generator=g), sh_degree)
    with torch.no_grad():
        for p in model.params.values():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def test_ply_round_trip_is_exact(tmp_path):
    for degree in (None, 0, 3):
        model = random_model(sh_degree=degree)
        model.save_ply(tmp_path / "s.ply")
        loaded = BoundGaussians.load_ply(tmp_path / "s.ply")
        assert loaded.sh_degree == degree
        assert torch.equal(loaded.binding, model.binding)
        assert set(loaded.params) == set(model.params)
        for k in model.params:
            assert torch.equal(loaded.params[k], model.params[k]), k


def test_replace_splat_rows_keeps_optimiser_moments_with_their_splats():
    model = random_model(n=6)
    opts = make_splat_optimizers(model, {"xyz": 0.1, "rotation": 0.1, "log_scale": 0.1, "opacity": 0.1})
    loss = sum((p ** 2).sum() for p in model.params.values())
    loss.backward()
    for o in opts.values():
        o.step()
    before = opts["xyz"].state[model.params["xyz"]]["exp_avg"].clone()
    idx = torch.tensor([5, 0, 2])
    replace_splat_rows(model, opts, lambda n, t: t[idx].clone(), lambda n, k, t: t[idx].clone(), model.binding[idx])
    after = opts["xyz"].state[model.params["xyz"]]["exp_avg"]
    assert torch.equal(after, before[idx])
    assert opts["xyz"].param_groups[0]["params"][0] is model.params["xyz"]
    assert len(model) == 3


def test_splat_learning_rates_are_gaussian_avatars_rates():
    from scene.optimizer_ops import splat_learning_rates
    from scene.config import OptimConfig

    o = OptimConfig()
    lrs = splat_learning_rates(o, position_lr=0.123)
    assert lrs == {"xyz": 0.123, "rotation": o.rotation_lr, "log_scale": o.scaling_lr, "opacity": o.opacity_lr,
                   "sh0": o.sh_lr, "shN": o.sh_lr / 20.0}  # 3DGS's f_rest rate
    model = BoundGaussians.one_per_triangle(3, sh_degree=1)
    opts = make_splat_optimizers(model, lrs)
    assert opts["shN"].param_groups[0]["lr"] == o.sh_lr / 20.0 and set(opts) == set(model.params)
