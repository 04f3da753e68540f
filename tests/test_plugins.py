"""A method is one file: components registered from this test file alone (no edit of the package)
train with densification, save, load, render, export and resume bit-exactly; a component that breaks
the plug-in contract is one clear error.

This file is its own plugin: the model config lists it under ``plugins:``, so the CLIs (render.py,
export.py, a resumed train.py) import it and find the components it registers.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import assert_resume_reproduces, checkpoint_tensors  # noqa: E402

import export  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
from scene.interop.export_3dgs import read_3dgs_ply  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.model.components import (ColorComponent, LossContext, OpacityComponent, PluginContractError,  # noqa: E402
                                    ScreenComponent, SplatAttribute, SplatGeometry)
from scene.model.registry import COLOR, OPACITY, SCREEN, ComponentConfig  # noqa: E402
from utils.config import check_positive  # noqa: E402

THIS_FILE = str(Path(__file__).resolve())


@pytest.fixture(autouse=True, scope="module")
def registered_only_here():
    """The components this file registers leave the registries with it (other tests list them)."""
    yield
    for registry, name in ((COLOR, "test_rgb"), (COLOR, "test_forgetful"), (OPACITY, "test_gate"),
                           (COLOR, "test_features"), (SCREEN, "test_upsample")):
        registry.unregister(name)


@COLOR.register("test_rgb")
class PerSplatRGB(ColorComponent):
    """One learnable RGB per splat: a per-splat tensor that densification must carry."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "test_rgb"
        init: float = 0.5
        lr: float = 1e-2

        def validate(self, model, where: str) -> None:
            check_positive(f"{where}.lr", self.lr)

    def splat_attributes(self) -> dict:
        return {"rgb": SplatAttribute((3,), lr=self.cfg.lr, init=self.cfg.init)}

    def forward(self, geometry: SplatGeometry) -> dict:
        return {"colors": geometry.params["rgb"].clamp_min(0.0)}


#: (step, splat count) of every ``splats_changed`` call the test gate received.
SPLATS_CHANGED: list[tuple[int, int]] = []


@OPACITY.register("test_gate")
class GlobalGate(OpacityComponent):
    """One learnable logit offset for every splat, switched on after the first third of the
    schedule, with a loss that keeps it small: a network parameter with a checkpoint entry, a
    schedule hook and a loss term."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "test_gate"
        weight: float = 0.01

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.offset = torch.nn.Parameter(torch.zeros(()))
        self.active = True

    def set_step(self, step, schedule_iterations):
        self.active = step is None or step > schedule_iterations // 3
        self.step = step

    def splats_changed(self, gaussians):
        SPLATS_CHANGED.append((self.step, len(gaussians)))

    def forward(self, geometry, expr, jaw_pose):
        return self.offset.expand(geometry.params["opacity"].shape[0]) if self.active else None

    def losses(self, ctx: LossContext) -> dict:
        return {"gate": self.cfg.weight * self.offset ** 2} if self.active else {}

    def param_groups(self):
        return [{"params": [self.offset], "lr": 1e-2, "name": "test_gate"}]

    def checkpoint_entries(self):
        return {"test_gate": {"offset": self.offset}}

    def load_checkpoint_entries(self, entries, where=""):
        self.offset.data.copy_(entries["test_gate"]["offset"])


@COLOR.register("test_forgetful")
class ForgetfulColor(PerSplatRGB):
    """Breaks the contract: a network parameter that no checkpoint entry saves."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "test_forgetful"
        init: float = 0.5
        lr: float = 1e-2

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.tint = torch.nn.Linear(3, 3)


@COLOR.register("test_features")
class PerSplatFeatures(ColorComponent):
    """Four learnable channels per splat, for a screen-space stage to turn into RGB."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "test_features"

    def channels(self) -> int:
        return 4

    def splat_attributes(self) -> dict:
        return {"feature": SplatAttribute((4,), lr=1e-2, init=0.5)}

    def forward(self, geometry: SplatGeometry) -> dict:
        return {"colors": geometry.params["feature"]}


@SCREEN.register("test_upsample")
class UpsampleMix(ScreenComponent):
    """The feature image rasterized at half size, upsampled and mixed to RGB by a 1x1 convolution,
    with a loss on its first three channels against the half-size ground truth (as GHA's)."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "test_upsample"
        scale: int = 2

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.scale = cfg.scale
        self.mix = torch.nn.Conv2d(4, 3, 1)

    def forward(self, features, alpha, width, height):
        x = torch.nn.functional.interpolate(features.permute(2, 0, 1)[None], size=(height, width), mode="bilinear",
                                            align_corners=False)
        return self.mix(x)[0].permute(1, 2, 0)

    def losses(self, ctx: LossContext) -> dict:
        h, w = ctx.features.shape[:2]
        gt = torch.nn.functional.interpolate(ctx.gt.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
        return {"features_rgb": 0.1 * (ctx.features[..., :3] - gt).abs().mean()}

    def param_groups(self):
        return [{"params": list(self.mix.parameters()), "lr": 1e-3, "name": "test_upsample"}]

    def checkpoint_entries(self):
        return {"test_upsample": self.mix.state_dict()}

    def load_checkpoint_entries(self, entries, where=""):
        self.mix.load_state_dict(entries["test_upsample"])


def as_plugin() -> list:
    """This file as train.py imports it from a config's ``plugins:`` (a module of its own, beside
    pytest's import of it): where the components train.py builds record what they saw."""
    return [m for name, m in sys.modules.items() if name.startswith(f"avatar_plugin_{Path(THIS_FILE).stem}_")]


def plugin_config(tmp_path: Path, color: str = "test_rgb", screen: str = "none") -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(f"plugins: [{THIS_FILE}]\nmodel:\n  color:\n    type: {color}\n  opacity:\n    type: test_gate\n"
                    f"  screen:\n    type: {screen}\nsampling:\n  class_balanced: false\n")
    return path


def train_args(tiny, model: Path, config: Path, iterations: int = 20) -> list[str]:
    return list(map(str, ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"], "--config", config,
                          "--iterations", iterations, "--eval", "--quiet", "--set", "densify.densify_from_iter=4",
                          "--set", "densify.densification_interval=5", "--set", "densify.densify_until_iter=16",
                          "--set", "densify.grad_threshold=0", "--set", "run.save_interval=10",
                          "--set", "run.eval_interval=1000"]))


def test_a_method_from_one_file_trains_saves_renders_exports_and_resumes(tiny, tmp_path):
    config = plugin_config(tmp_path)
    straight = tmp_path / "straight"
    for module in as_plugin():
        module.SPLATS_CHANGED.clear()
    assert train.main(train_args(tiny, straight, config)) == 0
    ckpt = straight / "checkpoints/iteration_0000020"
    assert {p.name for p in ckpt.iterdir()} >= {"splats.ply", "test_gate.pt", "identity.pt", "training_state.pt"}
    # Each densification step (5, 10, 15: every splat a candidate) told the components, after it.
    (plugin,) = as_plugin()
    assert [step for step, _ in plugin.SPLATS_CHANGED] == [5, 10, 15]

    # The per-splat RGB followed densification: every splat has its row, the rows moved with their
    # Adam moments, and the splats learnt their colours.
    loaded = load_model(straight, flame_path=tiny["flame"])
    avatar = loaded.avatar
    n = len(avatar.gaussians)
    n_triangles = avatar.faces.shape[0]
    assert n > n_triangles, "densification never ran"
    assert plugin.SPLATS_CHANGED[-1][1] == n  # told after the rows changed: the last densification's count
    rgb = avatar.gaussians.params["rgb"]
    assert rgb.shape == (n, 3) and (rgb != 0.5).any()
    state = torch.load(ckpt / "training_state.pt", weights_only=True)["splat_optimizers"]["rgb"]["state"]
    assert state[0]["exp_avg"].shape == (n, 3)
    assert float(avatar.opacity.offset.detach()) != 0.0  # the gate learnt, and its entry was saved and loaded

    # Render (a CLI that imports the plugin from config.yaml) and export (SH fitted to the colour,
    # which has no SH of its own: a colour constant over directions is fitted exactly).
    assert render.main(["-m", str(straight), "--split", "val", "--max-frames", "2", "--quiet"]) == 0
    renders = sorted((straight / "val/ours_20/renders").glob("*.png"))
    assert len(renders) == 2
    ply = tmp_path / "frame.ply"
    assert export.main(["-m", str(straight), "-o", str(ply), "--quiet", "--device", "cpu"]) == 0
    exported = read_3dgs_ply(ply)
    assert exported["means"].shape[0] == n
    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["colour"] == "fitted SH" and report["sh_fit_rms_mean"] < 1e-5
    assert report["frames"][0]["check_psnr_db"] > 40

    # Resume: 10 steps, saved, continued by the CLI to 20 = the straight run, bit for bit (the
    # component's own entry included).
    assert "test_gate.pt:offset" in checkpoint_tensors(ckpt)
    assert_resume_reproduces(train_args(tiny, tmp_path / "resumed", config), 10, ckpt)


def test_a_screen_space_stage_renders_features_at_its_scale_and_is_not_exported(tiny, tmp_path, capsys):
    from PIL import Image

    model = tmp_path / "staged"
    assert train.main(train_args(tiny, model, plugin_config(tmp_path, "test_features", "test_upsample"),
                                 iterations=6)) == 0
    ckpt = model / "checkpoints/iteration_0000006"
    assert (ckpt / "test_upsample.pt").is_file()
    loaded = load_model(model, flame_path=tiny["flame"])
    assert loaded.avatar.gaussians.params["feature"].shape[1] == 4
    assert render.main(["-m", str(model), "--split", "val", "--max-frames", "1", "--quiet"]) == 0
    rendered = next((model / "val/ours_6/renders").glob("*.png"))
    gt = model / "val/ours_6/gt" / rendered.name
    assert Image.open(rendered).size == Image.open(gt).size  # the stage brings it to the frame's size
    capsys.readouterr()
    assert export.main(["-m", str(model), "-o", str(tmp_path / "x.ply"), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "screen-space stage" in err and "test_upsample" in err and "Traceback" not in err
    # Four channels and no stage to make RGB of them: refused when the avatar is built.
    assert train.main(train_args(tiny, tmp_path / "nostage", plugin_config(tmp_path, "test_features"), 2)) == 2
    assert "gives 4 channels" in capsys.readouterr().err


def test_a_component_that_forgets_its_checkpoint_entry_is_one_clear_error(tiny, tmp_path, capsys):
    model = tmp_path / "m"
    assert train.main(train_args(tiny, model, plugin_config(tmp_path, "test_forgetful"), iterations=2)) == 2
    err = capsys.readouterr().err
    assert "test_forgetful" in err and "tint.weight" in err and "checkpoint_entries()" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_an_unknown_or_unimportable_plugin_is_one_line(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins: [no_such_module_xyz]\n")
    assert train.main(train_args(tiny, tmp_path / "m", bad, iterations=2)) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "no_such_module_xyz" in err and "Traceback" not in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  opacity:\n    type: test_gaet\n")
    assert train.main(train_args(tiny, tmp_path / "m2", unknown, iterations=2)) == 2
    err = capsys.readouterr().err
    assert "unknown model.opacity type 'test_gaet'" in err and "blendshape_opacity, feature_lines, gaussianhead, gha, npga, static, test_gate" in err


def _opacity_plugin(name: str, **methods):
    """A GlobalGate variant registered as ``name`` with ``methods`` replaced (a contract breach each)."""
    config = dataclass(type("Config", (ComponentConfig,), {"__annotations__": {"type": str, "weight": float},
                                                             "type": name, "weight": 0.01}))
    return OPACITY.register(name)(type(f"Breach_{name}", (GlobalGate,), {"Config": config, **methods}))


BREACHES = {
    "test_b_attribute": (dict(splat_attributes=lambda self: {"rgb": SplatAttribute((3,), lr=1e-3)}),
                         "per-splat attribute 'rgb' is already model.color 'test_rgb'"),
    "test_b_column": (dict(splat_attributes=lambda self: {"scale": SplatAttribute((3,), lr=1e-3)}),
                      "PLY column 'scale_0' is already a core column"),
    "test_b_reserved": (dict(checkpoint_entries=lambda self: {"training_state": {"offset": self.offset}}),
                        "checkpoint entry 'training_state' is already the trainer's"),
    "test_b_list": (dict(checkpoint_entries=lambda self: {"gate": [self.offset]}),
                    "checkpoint entry 'gate' must be a tensor or a state dict"),
    "test_b_copy": (dict(checkpoint_entries=lambda self: {"gate": {"offset": self.offset.detach().clone()}}),
                    r"parameters \['offset'\] are in no checkpoint entry"),
    "test_b_untrained": (dict(param_groups=lambda self: []), r"parameters \['offset'\] are in no Adam group"),
}


@pytest.mark.parametrize("name", sorted(BREACHES))
def test_each_breach_of_the_contract_is_refused_when_the_avatar_is_built(name):
    from avatar_fixtures import mesh_avatar, sphere_strip

    methods, message = BREACHES[name]
    _opacity_plugin(name, **methods)
    verts, faces = sphere_strip(60)
    try:
        with pytest.raises(PluginContractError, match=message):
            mesh_avatar(faces, verts, {"color": {"type": "test_rgb"}, "opacity": {"type": name}}, configs=())
    finally:
        OPACITY.unregister(name)


def test_a_loss_term_that_is_not_a_named_scalar_is_refused():
    from avatar_fixtures import mesh_avatar, sphere_strip

    verts, faces = sphere_strip(60)
    for name, term, message in (("test_b_float", 0.0, "must be a scalar tensor"),
                                ("test_b_vector", torch.ones(3), r"must be a scalar tensor .*\(3,\)"),
                                ("test_b_named", None, "is named twice \\(or is one of the trainer's")):
        key = "loss" if term is None else "term"
        value = torch.zeros(()) if term is None else term
        _opacity_plugin(name, losses=lambda self, ctx, key=key, value=value: {key: value})
        try:
            avatar = mesh_avatar(faces, verts, {"color": {"type": "test_rgb"}, "opacity": {"type": name}}, configs=())
            ctx = LossContext(1, {}, {"radii": torch.ones(1, len(avatar.gaussians))}, avatar.gaussians.params,
                              avatar.gaussians.binding, lambda: None)
            with pytest.raises(PluginContractError, match=message):
                avatar.losses(ctx)
        finally:
            OPACITY.unregister(name)


def test_another_class_under_a_registered_name_is_refused():
    with pytest.raises(TypeError, match="model.color type 'sh' is already registered by scene.model.sh_color.SHColor"):
        @COLOR.register("sh")
        class SHColor(PerSplatRGB):  # a copy of the built-in's name in another file
            @dataclass
            class Config(ComponentConfig):
                type: str = "sh"


def test_the_documented_example_is_a_working_plugin(tiny, tmp_path):
    """docs/ADDING_A_METHOD.md's component and config, as written there, train and save."""
    import re

    from scene.model.registry import COLOR as registry

    doc = (Path(__file__).resolve().parents[1] / "docs/ADDING_A_METHOD.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    config = re.findall(r"```yaml\n(.*?)```", doc, re.S)[0]
    (tmp_path / "my_methods").mkdir()
    (tmp_path / "my_methods/shaded_albedo.py").write_text(code)
    (tmp_path / "my_method.yaml").write_text(config)
    try:
        model = tmp_path / "m"
        assert train.main(train_args(tiny, model, tmp_path / "my_method.yaml", iterations=6)) == 0
        ckpt = model / "checkpoints/iteration_0000006"
        assert (ckpt / "shading.pt").is_file()
        assert "albedo_2" in (ckpt / "splats.ply").read_bytes()[:2000].decode("latin-1")
    finally:
        registry.unregister("shaded_albedo")


def test_network_param_group_keys_adam_would_ignore_are_one_error():
    """A component's param group with a key Adam does not take (a typo, or a setting this torch
    lacks) would be kept and unused: the method would quietly train differently."""
    from scene.training.optimizer_ops import make_network_optimizer
    from utils.errors import UserFacingError
    w = torch.nn.Parameter(torch.zeros(3))
    good = make_network_optimizer([{"params": [w], "lr": 1e-3, "name": "net", "frozen_until": 5,
                                    "weight_decay": 0.1, "decoupled_weight_decay": True}])
    assert good.param_groups[0]["decoupled_weight_decay"] is True and make_network_optimizer([]) is None
    with pytest.raises(UserFacingError, match=r"parameter group 'net' sets weight_decya, which this torch"):
        make_network_optimizer([{"params": [w], "lr": 1e-3, "name": "net", "weight_decya": 0.1}])
