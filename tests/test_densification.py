"""Binding-aware densification: clone/split keep the triangle, pruning never empties one; NPGA's
power-mean statistic and soft opacity decay."""
import sys
from pathlib import Path

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


# -- NPGA options: power-mean statistic, soft opacity decay ------------------------------------

def test_power_mean_at_one_is_todays_mean_bit_for_bit():
    """e = 1 keeps the 3DGS/GA statistic: the same sums in the same order, the same division."""
    g = torch.Generator().manual_seed(3)
    n, c = 50, 2
    strategy = BindingAwareDensification(DensifyConfig(grad_power=1.0), 1.0, n)
    accum, count = torch.zeros(n), torch.zeros(n)
    for _ in range(7):
        means2d = torch.zeros(c, n, 2, requires_grad=True)
        means2d.grad = torch.randn(c, n, 2, generator=g) * 1e-3
        radii = (torch.rand(c, n, generator=g) > 0.3).int() * 4
        strategy.update_statistics({"means2d": means2d, "radii": radii}, 64, 48)
        # Today's accumulation, written out: norms in device units, summed over visible views.
        grad = means2d.grad.clone()
        grad[..., 0] *= 32.0
        grad[..., 1] *= 24.0
        accum += (grad.norm(dim=-1) * (radii > 0)).sum(0)
        count += (radii > 0).sum(0).float()
    assert torch.equal(strategy.densify_statistic(), accum / count.clamp_min(1))


def test_power_mean_at_two_matches_hand_value_and_densifies_more():
    # One splat seen in two views with |g| = 3e-4 and 4e-4 (a (0.6, 0.8) direction); a third view
    # does not see it, so its gradient does not count. Width = height = 2: device units = pixels.
    norms, visible = [3e-4, 4e-4, 9e-4], [1, 1, 0]

    def statistic(power, threshold=1.0):
        model, opts = setup(n_faces=1, per_face=1)
        strategy = BindingAwareDensification(DensifyConfig(grad_power=power, grad_threshold=threshold,
                                                           min_opacity=0.0), 1.0, 1)
        for norm, vis in zip(norms, visible):
            meta = fake_meta(1, torch.tensor([norm]), radii=torch.tensor([[5 * vis]]))
            meta["means2d"].grad = torch.tensor([[[0.6 * norm, 0.8 * norm]]])
            strategy.update_statistics(meta, 2, 2)
        value = float(strategy.densify_statistic()[0])
        events = strategy.densify_and_prune(model, opts, torch.full((1, 3), 1e-4))
        return value, events["cloned"]

    mean1, _ = statistic(1.0)
    mean2, _ = statistic(2.0)
    assert abs(mean1 - 3.5e-4) < 1e-10
    assert abs(mean2 - (((3e-4) ** 2 + (4e-4) ** 2) / 2) ** 0.5) < 1e-10  # 3.5355e-4
    # A threshold between the two: only the power mean densifies.
    assert statistic(1.0, threshold=3.52e-4)[1] == 0
    assert statistic(2.0, threshold=3.52e-4)[1] == 1


def test_soft_opacity_decay_step_and_schedule():
    model, opts = setup(n_faces=4, per_face=1)
    before = torch.tensor([0.5, 0.015, 0.005, 5e-5])
    with torch.no_grad():
        model.params["opacity"].copy_(inverse_sigmoid(before))
    # Adam moments as after a few steps: the decay must leave them (and the parameter object) alone.
    model.params["opacity"].grad = torch.ones(4)
    opts["opacity"].step()
    before = model.opacity.detach().clone()
    moments = {k: v.clone() for k, v in opts["opacity"].state[model.params["opacity"]].items()}
    param = model.params["opacity"]
    cfg = DensifyConfig(densify_from_iter=10, densify_until_iter=40, densification_interval=1000,
                        opacity_reset_interval=0, opacity_decay=0.01, opacity_decay_interval=5)
    strategy = BindingAwareDensification(cfg, 1.0, 4)
    scales = torch.full((4, 3), 1e-4)
    # Only while densifying (10 < step < 40) and at multiples of the interval.
    assert [s for s in range(1, 50) if "opacity_decay" in strategy.step(s, model, opts, scales)] == [15, 20, 25, 30, 35]
    # Five decays of 0.01 in opacity space, floored at DECAY_FLOOR; one already below it stays.
    expected = torch.maximum(before - 0.05, torch.tensor(1e-4))
    expected[3] = before[3]
    assert torch.allclose(model.opacity, expected, rtol=1e-5, atol=1e-7)
    assert model.params["opacity"] is param
    for k, v in opts["opacity"].state[param].items():
        assert torch.equal(v, moments[k]), k


def test_large_splats_are_pruned_after_the_first_reset_or_where_the_config_says():
    """3DGS prunes splats too large on screen (20 px) or in the world (0.1 x extent) only after its
    first opacity reset; without resets (the soft decay) ``prune_large_after_iter`` says where."""
    def pruned(step, **keys):
        model, opts = setup(n_faces=4, per_face=2)
        cfg = DensifyConfig(densify_from_iter=0, densification_interval=10, densify_until_iter=1000,
                            grad_threshold=1.0, min_opacity=0.0, opacity_reset_at_densify_start=False, **keys)
        strategy = BindingAwareDensification(cfg, 1.0, 4)
        radii = torch.full((1, 8), 5)
        radii[0, 2] = 30  # splat 2: 30 px on screen
        strategy.update_statistics(fake_meta(8, torch.zeros(8), radii), 100, 100)
        scales = torch.full((8, 3), 1e-4)
        scales[5, 0] = 0.5  # splat 5: half the scene extent
        return strategy.step(step, model, opts, scales).get("pruned")

    assert pruned(40, opacity_reset_interval=30) == 2 and pruned(20, opacity_reset_interval=30) == 0
    assert pruned(40, opacity_reset_interval=0) == 0  # no reset: never, unless configured
    decay = {"opacity_reset_interval": 0, "opacity_decay": 0.01}
    assert pruned(40, prune_large_after_iter=30, **decay) == 2
    assert pruned(30, prune_large_after_iter=30, **decay) == 0
    assert pruned(40, prune_large_after_iter=50, opacity_reset_interval=30) == 0  # the key wins


def test_npga_keys_are_validated():
    import pytest
    from scene.config import resolve_config
    from utils.errors import InputFileError

    with pytest.raises(InputFileError, match=r"densify\.opacity_decay.*densify\.opacity_reset_interval.*set "
                                             r"densify\.opacity_reset_interval: 0"):
        resolve_config([], [{"densify": {"opacity_decay": 0.01}}])  # the default hard reset is on
    cfg = resolve_config([], [{"densify": {"opacity_decay": 0.01, "opacity_reset_interval": 0, "grad_power": 2}}])
    assert cfg.densify.grad_power == 2.0 and cfg.densify.opacity_decay_interval == 100
    for key, value, message in (("grad_power", 0.5, "at least 1.0"), ("opacity_decay", -0.1, "between 0.0 and 1.0"),
                                ("opacity_decay_interval", 0, "at least 1"), ("grad_power", "two", "must be float"),
                                ("prune_large_after_iter", -2, "at least -1")):
        with pytest.raises(InputFileError, match=rf"densify\.{key}.*{message}"):
            resolve_config([], [{"densify": {key: value, "opacity_reset_interval": 0}}])


def test_statistics_state_old_and_other_power():
    cfg2 = DensifyConfig(grad_power=2.0)
    saved = BindingAwareDensification(cfg2, 1.0, 2)
    saved.update_statistics(fake_meta(2, torch.tensor([1e-3, 2e-3])), 2, 2)
    state = saved.state_dict()
    assert state["grad_power"] == 2.0
    resumed = BindingAwareDensification(cfg2, 1.0, 2)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.densify_statistic(), saved.densify_statistic())
    # A checkpoint written before grad_power existed holds e = 1 sums: read as they are.
    old = BindingAwareDensification(DensifyConfig(), 1.0, 2).state_dict()
    assert "grad_power" not in old  # e = 1 writes the state as before the option
    old["grad_accum"], old["count"] = torch.tensor([1e-3, 2e-3]), torch.tensor([1.0, 2.0])
    e1 = BindingAwareDensification(DensifyConfig(), 1.0, 2)
    e1.load_state_dict(old)
    assert torch.equal(e1.densify_statistic(), torch.tensor([1e-3, 1e-3]))
    # Sums of another power cannot be converted: the gradient statistics restart.
    other = BindingAwareDensification(cfg2, 1.0, 2)
    other.load_state_dict(old)
    assert torch.equal(other.count, torch.zeros(2)) and torch.equal(other.grad_accum, torch.zeros(2))


# -- the options in training ----------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import SMALL_SCHEDULE, assert_same_checkpoint  # noqa: E402


class TodaysStatistics(BindingAwareDensification):
    """The reference: the statistic as 3DGS/GA compute it (before grad_power), written out."""

    @torch.no_grad()
    def update_statistics(self, meta, width, height):
        means2d = meta["means2d"]
        if means2d.grad is None:
            return
        self._ensure(means2d.shape[1], means2d.device)
        grad = means2d.grad.clone()
        grad[..., 0] *= width / 2.0
        grad[..., 1] *= height / 2.0
        visible = meta["radii"] > 0
        self.grad_accum += (grad.norm(dim=-1) * visible).sum(0)
        self.count += visible.sum(0).to(self.count.dtype)
        self.max_radii = torch.maximum(self.max_radii, meta["radii"].max(0).values.to(self.max_radii.dtype))

    def densify_statistic(self):
        return self.grad_accum / self.count.clamp_min(1)


def train_in_process(tiny, folder, steps, extra=(), strategy_class=None, iterations=None):
    """Train the first ``steps`` of an ``iterations`` (default: ``steps``) run step by step and
    save there; returns every step's events."""
    import train
    args = train.parse_args(list(map(str, ["-m", folder, "-s", tiny["subject"], "--flame", tiny["flame"],
                                           *SMALL_SCHEDULE, *extra, "--iterations", iterations or steps])))
    trainer = train.Trainer(train.request_from_args(args))
    if strategy_class is not None:
        old = trainer.strategy
        trainer.strategy = strategy_class(old.cfg, old.scene_extent, old.num_faces, old.white_background)
    events = []
    for _ in range(steps):
        trainer.step += 1
        events.append(trainer.training_step(trainer.step))
    trainer.save(trainer.step)
    return events


def test_defaults_train_as_todays_statistic_bit_for_bit(tiny, tmp_path):
    explicit = ["--set", "densify.grad_power=1", "--set", "densify.opacity_decay=0"]
    events = train_in_process(tiny, tmp_path / "new", 30, explicit)
    train_in_process(tiny, tmp_path / "today", 30, strategy_class=TodaysStatistics)
    assert any("cloned" in e for e in events)  # densification ran, so the statistic mattered
    assert_same_checkpoint(tmp_path / "new/checkpoints/iteration_0000030",
                           tmp_path / "today/checkpoints/iteration_0000030")


def test_npga_options_train_save_and_resume_bit_exact(tiny, tmp_path):
    import train
    npga = ["--set", "densify.grad_power=2", "--set", "densify.opacity_decay=0.01",
            "--set", "densify.opacity_decay_interval=4", "--set", "run.save_interval=15"]
    common = ["-s", tiny["subject"], "--flame", tiny["flame"], *SMALL_SCHEDULE, *npga]
    assert train.main(list(map(str, ["-m", tmp_path / "straight", *common, "--iterations", "30"]))) == 0
    # The same run stopped after its checkpoint at 15 and resumed by the CLI.
    events = train_in_process(tiny, tmp_path / "resumed", 15, npga, iterations=30)
    assert any("opacity_decay" in e for e in events) and any("cloned" in e for e in events)
    state = torch.load(tmp_path / "resumed/checkpoints/iteration_0000015/training_state.pt", weights_only=False)
    assert state["strategy"]["grad_power"] == 2.0 and state["strategy"]["count"].sum() > 0
    assert train.main(list(map(str, ["-m", tmp_path / "resumed", "--resume", "--quiet"]))) == 0
    assert_same_checkpoint(tmp_path / "straight/checkpoints/iteration_0000030",
                           tmp_path / "resumed/checkpoints/iteration_0000030")
