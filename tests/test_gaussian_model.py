"""Splat storage: PLY round trip (with and without SH, with any component's per-splat tensors),
optimiser rows follow the splats."""
import pytest
import torch

from scene.model.components import SplatAttribute
from scene.model.gaussian_model import BoundGaussians
from scene.model.sh_color import SHColor
from scene.training.optimizer_ops import make_splat_optimizers, replace_splat_rows
from utils.errors import InputFileError


def sh_attributes(degree):
    """The per-splat tensors of the ``sh`` colour of ``degree`` (None: no SH)."""
    return {} if degree is None else SHColor(SHColor.Config(degree=degree), None).splat_attributes()


def random_model(n=50, sh_degree=None, seed=0, attributes=None):
    g = torch.Generator().manual_seed(seed)
    model = BoundGaussians(torch.randint(0, 20, (n,), generator=g), attributes or sh_attributes(sh_degree))
    with torch.no_grad():
        for p in model.params.values():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def test_ply_round_trip_is_exact(tmp_path):
    for degree in (None, 0, 3):
        model = random_model(sh_degree=degree)
        model.save_ply(tmp_path / "s.ply")
        loaded = BoundGaussians.load_ply(tmp_path / "s.ply", sh_attributes(degree))
        assert torch.equal(loaded.binding, model.binding)
        assert set(loaded.params) == set(model.params)
        for k in model.params:
            assert torch.equal(loaded.params[k], model.params[k]), k


def test_sh_columns_keep_the_3dgs_layout(tmp_path):
    """SH coefficients are stored as 3DGS's f_dc_* and channel-major f_rest_* (GA's files read them)."""
    from utils.ply_io import read_vertex_table
    model = random_model(sh_degree=2)
    model.save_ply(tmp_path / "s.ply")
    table = read_vertex_table(tmp_path / "s.ply", [], "splats")
    assert table.sh_degree() == 2
    assert torch.equal(table.sh_rest(), model.params["shN"].detach())
    assert torch.equal(table.columns("f_dc_0", "f_dc_1", "f_dc_2"), model.params["sh0"].detach()[:, 0])


def test_any_component_attribute_round_trips_and_missing_columns_are_named(tmp_path):
    attributes = {"albedo": SplatAttribute((2, 3), lr=1e-2, init=0.5), "gain": SplatAttribute((), lr=1e-3)}
    model = random_model(attributes=attributes)
    assert model.params["albedo"].shape == (50, 2, 3) and model.params["gain"].shape == (50,)
    model.save_ply(tmp_path / "s.ply")
    loaded = BoundGaussians.load_ply(tmp_path / "s.ply", attributes)
    for k in model.params:
        assert torch.equal(loaded.params[k], model.params[k]), k
    with pytest.raises(InputFileError, match=r"s\.ply.*columns \['f_dc_0'.*'sh0'"):
        BoundGaussians.load_ply(tmp_path / "s.ply", sh_attributes(3))


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
    from scene.config import OptimConfig
    from scene.training.trainer import splat_learning_rates

    o, sh = OptimConfig(), SHColor.Config()
    lrs = splat_learning_rates(o, position_lr=0.123)
    assert lrs == {"xyz": 0.123, "rotation": o.rotation_lr, "log_scale": o.scaling_lr, "opacity": o.opacity_lr}
    attributes = sh_attributes(1)
    assert attributes["sh0"].lr == sh.lr == 2.5e-3 and attributes["shN"].lr == sh.lr / 20.0  # 3DGS's f_rest rate
    model = BoundGaussians(torch.arange(3), attributes)
    opts = make_splat_optimizers(model, {**lrs, **{k: a.lr for k, a in attributes.items()}})
    assert opts["shN"].param_groups[0]["lr"] == sh.lr / 20.0 and set(opts) == set(model.params)
