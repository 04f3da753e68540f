"""Config composition: defaults <- YAML files in order <- command line; unknown keys are errors."""
import pytest

from scene.config import TrainConfig, config_differences, load_saved_config, resolve_config, save_config
from utils.config import parse_assignment
from utils.errors import InputFileError, MissingFileError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_paper_settings():
    cfg = TrainConfig()
    color, opacity, geometry = cfg.model.color, cfg.model.opacity, cfg.model.geometry
    assert (geometry.type, color.type, opacity.type) == ("flame_bound", "triplane", "feature_lines")
    assert color.resolution == 128 and color.channels == [32, 16, 16]
    assert opacity.n_expr_bases == 80 and opacity.n_jaw_bases == 16
    assert opacity.line_resolution == 64 and opacity.line_channels == 32
    assert cfg.optim.iterations == 600_000 and color.grid_lr == 2e-3 and color.mlp_lr == 1e-4
    assert opacity.grid_lr == 2e-3 and opacity.mlp_lr == 1e-4 and opacity.warmup == 0.1
    assert cfg.optim.lambda_dssim == 0.2 and geometry.lambda_position == 0.01 and geometry.lambda_scale == 1.0


def test_configs_compose_in_order_then_overrides(tmp_path):
    a = write(tmp_path, "a.yaml", "optim:\n  iterations: 100\nmodel:\n  color:\n    grid_lr: 1.0e-2\n")
    b = write(tmp_path, "b.yaml", "optim:\n  iterations: 200\n")
    cfg = resolve_config([a, b], [parse_assignment("model.color.mlp_lr=5e-4"), {"run": {"seed": 7}}])
    assert cfg.optim.iterations == 200  # later file wins
    assert cfg.model.color.grid_lr == 1e-2  # earlier file kept where later is silent
    assert cfg.model.color.mlp_lr == 5e-4 and cfg.run.seed == 7


def test_component_slots_choose_a_type_by_name(tmp_path):
    cfg = resolve_config([], [parse_assignment("model.color.type=sh"), parse_assignment("model.color.degree=1")])
    assert cfg.model.color.type == "sh" and cfg.model.color.degree == 1
    cfg = resolve_config([], [{"model": {"opacity": "static"}}])  # a bare type name
    assert cfg.model.opacity.type == "static"
    # A new type starts from its own defaults; keys are checked against the chosen type.
    with pytest.raises(InputFileError, match=r"b\.yaml.*model\.color\.resolution.*Valid keys here: degree, lr, type"):
        resolve_config([write(tmp_path, "b.yaml", "model:\n  color:\n    type: sh\n    resolution: 64\n")])
    # An unknown type is one line listing the registered ones.
    with pytest.raises(InputFileError, match=r"unknown model\.color type 'mlp'; registered types: (.*, )?sh, (.*, )?triplane"):
        resolve_config([write(tmp_path, "u.yaml", "model:\n  color:\n    type: mlp\n")])
    # Values a component cannot work with are refused by its own config.
    with pytest.raises(InputFileError, match=r"model\.color\.degree.*between 0 and 3"):
        resolve_config([], [{"model": {"color": {"type": "sh", "degree": 4}}}])


def test_type_keyed_settings_apply_only_to_that_type(tmp_path):
    schedule = write(tmp_path, "s.yaml", "model:\n  opacity:\n    feature_lines:\n      box: face\n")
    assert resolve_config([schedule]).model.opacity.box == "face"
    ga = write(tmp_path, "ga.yaml", "model:\n  opacity:\n    type: static\n")
    assert resolve_config([ga, schedule]).model.opacity.type == "static"  # not switched, no error
    typo = write(tmp_path, "t.yaml", "model:\n  opacity:\n    feature_lines:\n      boks: face\n")
    with pytest.raises(InputFileError, match=r"t\.yaml.*model\.opacity\.feature_lines\.boks"):
        resolve_config([ga, typo])  # checked against feature_lines even where it does not apply


def test_legacy_keys_are_mapped_once_with_one_line(tmp_path, capsys):
    old = write(tmp_path, "old.yaml", "model:\n  use_triplane: false\n  sh_degree: 2\n  triplane_resolution: 64\n"
                                      "  feature_line_box: face\noptim:\n  grid_lr: 1.0e-2\n  feature_lines_warmup: 0.3\n"
                                      "  iterations: 50\npenalty:\n  lambda_opacity: 0.5\n")
    cfg = resolve_config([old])
    assert cfg.model.color.type == "sh" and cfg.model.color.degree == 2  # the triplane's resolution was unused
    o = cfg.model.opacity
    assert (o.type, o.box, o.grid_lr, o.warmup, o.penalty.lambda_opacity) == ("feature_lines", "face", 1e-2, 0.3, 0.5)
    assert cfg.optim.iterations == 50
    err = capsys.readouterr().err
    assert err.count("old.yaml: old-style keys") == 1 and "model.use_triplane" in err


def test_shipped_configs_resolve():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.yaml")):
        resolve_config([root / "tensorial.yaml", path])
    ga = resolve_config([root / "gaussian_avatars.yaml"])
    assert (ga.model.geometry.type, ga.model.color.type, ga.model.opacity.type) == ("flame_bound", "sh", "static")
    assert ga.model.color.degree == 3 and not ga.sampling.class_balanced


def test_unknown_key_names_file_and_key(tmp_path):
    bad = write(tmp_path, "bad.yaml", "optim:\n  iteratons: 5\n")
    with pytest.raises(InputFileError, match=r"bad\.yaml.*optim\.iteratons"):
        resolve_config([bad])


def test_wrong_type_and_malformed_yaml(tmp_path):
    with pytest.raises(InputFileError, match="optim.iterations"):
        resolve_config([write(tmp_path, "t.yaml", "optim:\n  iterations: many\n")])
    with pytest.raises(InputFileError, match="not valid YAML"):
        resolve_config([write(tmp_path, "m.yaml", "optim: [unclosed\n")])
    with pytest.raises(MissingFileError, match="nowhere.yaml"):
        resolve_config([tmp_path / "nowhere.yaml"])
    with pytest.raises(InputFileError, match="section.key=value"):
        parse_assignment("optim.iterations")


def test_saved_config_round_trips(tmp_path):
    cfg = resolve_config([], [{"optim": {"iterations": 123}, "model": {"opacity": {"type": "static"}}}])
    save_config(cfg, tmp_path / "config.yaml", extra={"source_path": "/data/x"})
    loaded, extra = load_saved_config(tmp_path)
    assert loaded.to_dict() == cfg.to_dict() and extra["source_path"] == "/data/x"
    assert config_differences(cfg, loaded) == []
    other = resolve_config([], [{"optim": {"iterations": 5}}])
    assert any(d.startswith("optim.iterations") for d in config_differences(cfg, other))
    assert not any(d.startswith("optim.iterations") for d in config_differences(cfg, other, ignore=["optim.iterations"]))
    with pytest.raises(MissingFileError, match="not a trained model folder"):
        load_saved_config(tmp_path / "empty")


def test_plugins_of_every_config_are_kept_and_the_saved_config_loads(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.py").write_text(  # two plugins with the same file name, in two folders
            "from dataclasses import dataclass\n"
            "from scene.model.components import ColorComponent\n"
            "from scene.model.registry import COLOR, ComponentConfig\n"
            f"@COLOR.register('test_cfg_{name}')\n"
            "class Mine(ColorComponent):\n"
            "    @dataclass\n"
            "    class Config(ComponentConfig):\n"
            f"        type: str = 'test_cfg_{name}'\n")
    one = write(tmp_path, "one.yaml", "plugins: [a/mine.py]\nmodel:\n  color: test_cfg_a\n")
    two = write(tmp_path, "two.yaml", "plugins: [b/mine.py]\n")
    from scene.model.registry import COLOR
    try:
        cfg = resolve_config([one, two])
        assert cfg.plugins == [str(tmp_path / "a/mine.py"), str(tmp_path / "b/mine.py")]
        assert "test_cfg_a" in COLOR and "test_cfg_b" in COLOR
        save_config(cfg, tmp_path / "m/config.yaml")
        assert load_saved_config(tmp_path / "m")[0].model.color.type == "test_cfg_a"
    finally:
        COLOR.unregister("test_cfg_a")
        COLOR.unregister("test_cfg_b")


def test_legacy_keys_go_to_the_type_that_owned_them(tmp_path, capsys):
    old = write(tmp_path, "mixed.yaml", "model:\n  color: sh\n  sh_degree: 1\n  triplane_resolution: 64\n")
    cfg = resolve_config([old])
    assert cfg.model.color.type == "sh" and cfg.model.color.degree == 1
    assert "not used by the chosen components: model.triplane_resolution" in capsys.readouterr().err
    # A component swap is one line of a resumed run's differences, not one per key.
    a, b = resolve_config([]), resolve_config([], [{"model": {"color": "sh"}}])
    assert [d for d in config_differences(a, b) if d.startswith("model.color")] == [
        "model.color: type 'triplane' -> 'sh'"]


def test_quality_bench_methods_resolve():
    """Every method of bench/quality.py composes with the demo schedule and its overrides into a
    valid config, so that a long benchmark cannot fail on a typo hours into its run."""
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_quality", root / "bench" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    for name, (configs, sets) in quality.METHODS.items():
        cfg = resolve_config([root / c for c in configs] + [root / "configs" / "demo.yaml"],
                             [parse_assignment(s) for s in sets])
        assert cfg.optim.iterations == 2000, name
    decay = quality.METHODS["tensorial_opacity_decay"]
    cfg = resolve_config([root / c for c in decay[0]] + [root / "configs" / "demo.yaml"],
                         [parse_assignment(s) for s in decay[1]])
    assert cfg.densify.opacity_decay == 0.01 and cfg.densify.opacity_reset_interval == 0
    # Without its resets, too-large splats are pruned from where the tensorial config's first falls.
    paper = resolve_config([root / c for c in decay[0]], [])
    assert cfg.densify.prune_large_after_iter == paper.densify.opacity_reset_interval
