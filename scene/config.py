"""The run's configuration: the components' config dataclasses composed, overridden by YAML files,
then by the command line.

Each component's settings live beside it: ``ModelConfig`` (scene/avatar.py), ``DensifyConfig``
(scene/densification.py), ``SamplingConfig`` (scene/class_balance.py), ``PenaltyConfig``
(scene/opacity_penalty.py); the trainer's own (``OptimConfig``, ``RunConfig``) are here.
Resolution order (later wins): the defaults -> each ``--config`` YAML in the order given ->
``--set section.key=value`` and named flags such as ``--iterations``. Every key in a YAML file
must exist: an unknown key is an error naming the file and the key, never silently ignored, and
every value is converted to its field's type or refused (:mod:`utils.config`). The resolved config
is saved as ``MODEL/config.yaml`` and read back by render.py / evaluate.py.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from scene.avatar import ModelConfig
from scene.class_balance import SamplingConfig
from scene.densification import DensifyConfig
from scene.opacity_penalty import PenaltyConfig
from utils.atomic import write_text_atomic
from utils.config import load_yaml, merge_into
from utils.errors import InputFileError, MissingFileError

__all__ = ["ModelConfig", "OptimConfig", "DensifyConfig", "SamplingConfig", "PenaltyConfig", "RunConfig",
           "TrainConfig", "resolve_config", "validate", "save_config", "load_saved_config", "config_differences"]


@dataclass
class OptimConfig:
    iterations: int = 600_000
    # Splat attributes (GA). The position lr is multiplied by the cameras' extent.
    position_lr_init: float = 5e-3
    position_lr_final: float = 5e-5
    opacity_lr: float = 0.05
    scaling_lr: float = 0.017
    rotation_lr: float = 1e-3
    sh_lr: float = 2.5e-3
    # Tensorial appearance (paper): grids (triplane planes, feature lines) and MLP decoders.
    grid_lr: float = 2e-3
    mlp_lr: float = 1e-4
    # The opacity decoder's rate, separate so a short schedule can raise it without touching the
    # colour decoder (the paper uses mlp_lr for both over 600k iterations).
    opacity_mlp_lr: float = 1e-4
    # Feature lines are switched on after this fraction of the schedule (paper: 10%).
    feature_lines_warmup: float = 0.1
    # Losses (paper eq. 3 and the image loss).
    lambda_dssim: float = 0.2
    lambda_position: float = 0.01
    threshold_position: float = 1.0
    lambda_scale: float = 1.0
    threshold_scale: float = 0.6
    # Optional GA-style fine-tuning of per-timestep FLAME parameters.
    train_flame: bool = False
    flame_expr_lr: float = 1e-3
    flame_pose_lr: float = 1e-5
    flame_trans_lr: float = 1e-6


@dataclass
class RunConfig:
    """How the run is executed; none of these change what is learned, except seed."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    backend: str = "auto"  # rasterizer backend: auto | torch | triton | gsplat
    resolution_scale: float = 1.0
    background: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    eval_interval: int = 10_000
    eval_max_frames: int = 64  # per split, evenly spaced; 0 = all
    save_interval: int = 50_000
    keep_checkpoints: int = 3
    log_interval: int = 10
    image_cache_gb: float = 4.0  # host LRU cache of decoded images (uint8)
    # The training loader decodes upcoming frames ahead on threads (pinned memory on CUDA), and
    # can keep images on the GPU: 0 = off; real images are ~1.3 MB each at 550x802.
    loader_workers: int = 2
    prefetch_frames: int = 8
    device_image_cache_gb: float = 0.0
    # Stop before the update when a loss term or gradient is not finite, or the loss exceeds
    # divergence_factor x its running mean (0: off): one host-device sync per step.
    check_finite: bool = True
    divergence_factor: float = 10.0


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Lists whose length is part of their meaning (a colour, one channel count per plane).
FIXED_LENGTH_LISTS = ("run.background", "model.triplane_channels")


def resolve_config(
    config_files: Iterable[str | os.PathLike] = (),
    overrides: Iterable[dict] = (),
    base: dict | None = None,
) -> TrainConfig:
    """Defaults <- ``base`` (e.g. a saved run's config) <- YAML files in order <- ``overrides``."""
    config = TrainConfig()
    if base is not None:
        merge_into(config, base, "saved config", FIXED_LENGTH_LISTS)
    for path in config_files:
        merge_into(config, load_yaml(path), str(path), FIXED_LENGTH_LISTS)
    for update in overrides:
        merge_into(config, update, "command line", FIXED_LENGTH_LISTS)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    m = config.model
    if len(m.triplane_channels) != 3:
        raise InputFileError("model.triplane_channels must list 3 channel counts (XY, XZ, YZ)")
    if m.n_expr_bases > m.n_expr:
        raise InputFileError("model.n_expr_bases cannot exceed model.n_expr")
    if config.run.device not in ("auto", "cpu", "cuda") and not config.run.device.startswith("cuda:"):
        raise InputFileError(f"run.device must be auto, cpu or cuda[:N], got {config.run.device!r}")
    if config.run.backend not in ("auto", "torch", "triton", "gsplat"):
        raise InputFileError(f"run.backend must be auto, torch, triton or gsplat, got {config.run.backend!r}")
    if not 0 < config.run.resolution_scale <= 1.0:
        raise InputFileError("run.resolution_scale must be in (0, 1]")
    if config.optim.iterations < 1:
        raise InputFileError("optim.iterations must be at least 1")
    for key, value, allowed in (("model.feature_line_box", m.feature_line_box, ("head", "face")),
                                ("model.jaw_weighting", m.jaw_weighting, ("paper", "idw"))):
        if value not in allowed:
            raise InputFileError(f"config key '{key}' must be one of {', '.join(allowed)}, got {value!r}")
    _check_ranges(config)


# (dotted key, lowest allowed, highest allowed or None): values a run cannot work with, refused
# before anything is written instead of clamped quietly or failing at iteration 1.
RANGES = (
    ("sampling.n_classes", 1, None), ("model.n_jaw_bases", 1, None), ("model.n_expr_bases", 1, None),
    ("model.triplane_resolution", 2, None), ("model.line_resolution", 2, None), ("model.line_channels", 1, None),
    ("model.sh_degree", 0, 3), ("model.opacity_hidden_layers", 1, None), ("model.jaw_idw_power", 0.0, None),
    ("model.opacity_hidden", 1, None), ("model.init_splats_per_triangle", 1, None), ("model.box_padding", 0.0, None),
    ("optim.feature_lines_warmup", 0.0, 1.0), ("optim.lambda_dssim", 0.0, 1.0),
    ("densify.densification_interval", 1, None), ("densify.grad_threshold", 0.0, None),
    ("densify.min_opacity", 0.0, 1.0), ("densify.max_splats", 0, None), ("run.eval_interval", 1, None),
    ("run.save_interval", 1, None), ("run.log_interval", 1, None), ("run.keep_checkpoints", 0, None),
    ("run.image_cache_gb", 0.0, None), ("run.loader_workers", 0, None), ("run.prefetch_frames", 0, None),
    ("run.device_image_cache_gb", 0.0, None), ("run.divergence_factor", 0.0, None), ("run.eval_max_frames", 0, None),
    ("penalty.lambda_opacity", 0.0, None), ("penalty.tau_face", 0.0, None), ("penalty.tau_other", 0.0, None),
)
POSITIVE = ("optim.position_lr_init", "optim.position_lr_final", "optim.opacity_lr", "optim.scaling_lr",
            "optim.rotation_lr", "optim.sh_lr", "optim.grid_lr", "optim.mlp_lr", "optim.opacity_mlp_lr")


def _check_ranges(config: TrainConfig) -> None:
    def get(key):
        section, name = key.split(".")
        return getattr(getattr(config, section), name)

    for key, lo, hi in RANGES:
        value = get(key)
        if value < lo or (hi is not None and value > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise InputFileError(f"config key '{key}' must be {bound}, got {value!r}")
    for key in POSITIVE:
        if not get(key) > 0:
            raise InputFileError(f"config key '{key}' (a learning rate) must be > 0, got {get(key)!r}")
    for c in config.model.triplane_channels:
        if c < 1:
            raise InputFileError(f"config key 'model.triplane_channels' must list positive channel counts, got "
                                 f"{config.model.triplane_channels}")
    if not all(0.0 <= v <= 1.0 for v in config.run.background):
        raise InputFileError(f"config key 'run.background' must be 3 values in [0, 1], got {config.run.background}")


def save_config(config: TrainConfig, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write the resolved config (plus run facts in ``extra``, e.g. data paths) atomically."""
    data = {"config": config.to_dict()}
    if extra:
        data.update(extra)
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def load_saved_config(model_dir: str | os.PathLike) -> tuple[TrainConfig, dict]:
    """Read ``MODEL/config.yaml`` back: (config, the extra run facts saved beside it)."""
    path = Path(model_dir) / "config.yaml"
    if not path.is_file():
        raise MissingFileError(
            f"{path} not found: {model_dir} is not a trained model folder (train one with "
            f"`python train.py -s SUBJECT -m {model_dir}`)"
        )
    data = load_yaml(path)
    if "config" not in data:
        raise InputFileError(f"{path}: missing the 'config' section; was it written by train.py?")
    extra = {k: v for k, v in data.items() if k != "config"}
    return resolve_config(base=data["config"]), extra


def config_differences(a: TrainConfig, b: TrainConfig, ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs, except the ``ignore`` prefixes."""
    out = []

    def walk(x: dict, y: dict, prefix: str) -> None:
        for key in x:
            path = f"{prefix}{key}"
            if any(path == p or path.startswith(p + ".") for p in ignore):
                continue
            if isinstance(x[key], dict):
                walk(x[key], y[key], path + ".")
            elif x[key] != y[key]:
                out.append(f"{path}: {x[key]!r} -> {y[key]!r}")

    walk(a.to_dict(), b.to_dict(), "")
    return out
