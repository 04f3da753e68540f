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
    assert cfg.model.triplane_resolution == 128 and cfg.model.triplane_channels == [32, 16, 16]
    assert cfg.model.n_expr_bases == 80 and cfg.model.n_jaw_bases == 16
    assert cfg.model.line_resolution == 64 and cfg.model.line_channels == 32
    assert cfg.optim.iterations == 600_000 and cfg.optim.grid_lr == 2e-3 and cfg.optim.mlp_lr == 1e-4
    assert cfg.optim.lambda_dssim == 0.2 and cfg.optim.lambda_position == 0.01 and cfg.optim.lambda_scale == 1.0


def test_configs_compose_in_order_then_overrides(tmp_path):
    a = write(tmp_path, "a.yaml", "optim:\n  iterations: 100\n  grid_lr: 1.0e-2\nmodel:\n  use_triplane: false\n")
    b = write(tmp_path, "b.yaml", "optim:\n  iterations: 200\n")
    cfg = resolve_config([a, b], [parse_assignment("optim.mlp_lr=5e-4"), {"run": {"seed": 7}}])
    assert cfg.optim.iterations == 200  # later file wins
    assert cfg.optim.grid_lr == 1e-2  # earlier file kept where later is silent
    assert cfg.model.use_triplane is False
    assert cfg.optim.mlp_lr == 5e-4 and cfg.run.seed == 7


def test_shipped_configs_resolve():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.yaml")):
        resolve_config([root / "tensorial.yaml", path])
    ga = resolve_config([root / "gaussian_avatars.yaml"])
    assert not ga.model.use_triplane and not ga.model.use_feature_lines and ga.model.sh_degree == 3
    assert not ga.sampling.class_balanced and not ga.penalty.enabled


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
    cfg = resolve_config([], [{"optim": {"iterations": 123}, "model": {"use_feature_lines": False}}])
    save_config(cfg, tmp_path / "config.yaml", extra={"source_path": "/data/x"})
    loaded, extra = load_saved_config(tmp_path)
    assert loaded.to_dict() == cfg.to_dict() and extra["source_path"] == "/data/x"
    assert config_differences(cfg, loaded) == []
    other = resolve_config([], [{"optim": {"iterations": 5}}])
    assert any(d.startswith("optim.iterations") for d in config_differences(cfg, other))
    assert not any(d.startswith("optim.iterations") for d in config_differences(cfg, other, ignore=["optim.iterations"]))
    with pytest.raises(MissingFileError, match="not a trained model folder"):
        load_saved_config(tmp_path / "empty")
