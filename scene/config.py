"""The run's configuration: the components' config dataclasses composed, overridden by YAML files,
then by the command line.

Each component's settings live beside it: ``ModelConfig`` (scene/model/avatar.py) with one slot per
component (``model.geometry``, ``model.color``, ``model.opacity``: ``{type: <registered name>,
...}``, the type's own config dataclass beside its class), ``DensifyConfig``
(scene/training/densification.py), ``SamplingConfig`` (scene/training/class_balance.py); the
trainer's own (``OptimConfig``, ``RunConfig``) are here. Resolution order (later wins): the defaults
-> each ``--config`` YAML in the order given -> ``--set section.key=value`` and named flags such as
``--iterations``. Every key in a YAML file must exist: an unknown key is an error naming the file
and the key, never silently ignored, and every value is converted to its field's type or refused
(:mod:`utils.config`). ``plugins:`` names modules (or ``.py`` files) to import before anything is
read, so that components registered there can be chosen by type. The resolved config is saved as
``MODEL/config.yaml`` and read back by render.py / evaluate.py; configs written before the
component slots (``model.use_triplane`` ...) are read through :func:`upgrade_legacy_keys`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from gaussian_renderer import check_backend_name
from scene.model.avatar import SLOTS, ModelConfig
from scene.training.class_balance import SamplingConfig
from scene.training.densification import DensifyConfig
from utils.atomic import write_text_atomic
from utils.config import check_positive, check_range, convert, load_yaml, merge_into
from utils.errors import InputFileError, MissingFileError

__all__ = ["ModelConfig", "OptimConfig", "DensifyConfig", "SamplingConfig", "RunConfig", "TrainConfig",
           "resolve_config", "validate", "save_config", "load_saved_config", "config_differences",
           "upgrade_legacy_keys", "import_plugins"]


@dataclass
class OptimConfig:
    """The trainer's optimisation: schedule length, the splats' core learning rates (GA), the image
    loss, FLAME fine-tuning. Each component's own rates and losses are in its config."""

    iterations: int = 600_000
    # Splat attributes (GA). The position lr is multiplied by the cameras' extent.
    position_lr_init: float = 5e-3
    position_lr_final: float = 5e-5
    opacity_lr: float = 0.05
    scaling_lr: float = 0.017
    rotation_lr: float = 1e-3
    # The image loss: (1 - lambda_dssim) L1 + lambda_dssim D-SSIM.
    lambda_dssim: float = 0.2
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
    backend: str = "auto"  # rasterizer backend: "auto" or a name of gaussian_renderer's registry
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
    # The decoders and the projection as torch.compile graphs (scene.rendering.render_avatar's
    # `compile`): fewer, fused kernels per step; the first step (and each new splat count after
    # densification) compiles. Off: on the CPU demo it does not pay (docs/BENCHMARKS.md).
    compile: bool = False


@dataclass
class TrainConfig:
    # Modules (names on the Python path, or .py files) imported before the config is read: where a
    # researcher's own components register themselves (docs/ADDING_A_METHOD.md).
    plugins: list = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Lists whose length is part of their meaning (a colour, one channel count per plane).
FIXED_LENGTH_LISTS = ("run.background", "model.color.channels")


def import_plugins(names: Iterable | str, source: str) -> list[str]:
    """Import each plugin: a module name on the Python path, or a ``.py`` file (relative paths
    from the folder of ``source`` when it is a file, else the working directory). Returns the
    entries as they are saved (files as absolute paths). A plugin that cannot be imported is one
    error naming it and ``source``; one already imported from the same file is not run again."""
    if isinstance(names, str):  # --set plugins=a.py,b.py
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, (list, tuple)):
        raise InputFileError(f"{source}: 'plugins' must be a list of module names or .py files, got {names!r}")
    base = Path(source).parent if Path(source).is_file() else Path.cwd()
    saved = []
    for name in names:
        name = str(name)
        try:
            if name.endswith(".py"):
                path = (base / name).resolve()
                saved.append(str(path))
                # One module per file (two plugins called mine.py in two folders are two modules).
                module_name = f"avatar_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
                if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
                    continue
                if not path.is_file():
                    raise FileNotFoundError(f"no such file {path}")
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                saved.append(name)
                importlib.import_module(name)
        except InputFileError:
            raise
        except Exception as exc:
            raise InputFileError(f"{source}: plugin {name!r} cannot be imported ({type(exc).__name__}: {exc}); "
                                 "'plugins' lists module names on the Python path or .py files") from None
    return saved


def _plugins_of(update: dict, config: TrainConfig, source: str) -> dict:
    """``update`` with its ``plugins`` imported (files made absolute) and added to those the config
    lists already: every source's plugins are needed to read the resolved config back."""
    if isinstance(update, dict) and "plugins" in update:
        new = import_plugins(update["plugins"], source)
        update = dict(update, plugins=config.plugins + [p for p in new if p not in config.plugins])
    return update


def resolve_config(
    config_files: Iterable[str | os.PathLike] = (),
    overrides: Iterable[dict] = (),
    base: dict | None = None,
    base_source: str = "saved config",
) -> TrainConfig:
    """Defaults <- ``base`` (e.g. a saved run's config, named ``base_source`` in errors) <- YAML
    files in order <- ``overrides``."""
    config = TrainConfig()
    sources = [] if base is None else [(base, base_source)]
    sources += [(load_yaml(path), str(path)) for path in config_files]
    sources += [(update, "command line") for update in overrides]
    for update, source in sources:
        update = upgrade_legacy_keys(_plugins_of(update, config, source), config, source)
        merge_into(config, update, source, FIXED_LENGTH_LISTS)
    validate(config)
    return config


# Keys of configs written before the component slots: model.<old> -> (slot, the built-in type that
# owned it, its key in that type's config).
LEGACY_MODEL_KEYS = {
    "init_splats_per_triangle": ("geometry", "flame_bound", "init_splats_per_triangle"),
    "triplane_resolution": ("color", "triplane", "resolution"), "triplane_channels": ("color", "triplane", "channels"),
    "view_pe_freqs": ("color", "triplane", "view_pe_freqs"), "color_hidden": ("color", "triplane", "hidden"),
    "sh_degree": ("color", "sh", "degree"),
    "n_expr_bases": ("opacity", "feature_lines", "n_expr_bases"), "n_jaw_bases": ("opacity", "feature_lines", "n_jaw_bases"),
    "line_resolution": ("opacity", "feature_lines", "line_resolution"),
    "line_channels": ("opacity", "feature_lines", "line_channels"), "opacity_hidden": ("opacity", "feature_lines", "hidden"),
    "opacity_hidden_layers": ("opacity", "feature_lines", "hidden_layers"),
    "feature_line_box": ("opacity", "feature_lines", "box"),
    "face_box_regions": ("opacity", "feature_lines", "face_box_regions"),
    "jaw_weighting": ("opacity", "feature_lines", "jaw_weighting"),
    "jaw_idw_power": ("opacity", "feature_lines", "jaw_idw_power"),
}
# optim.<old> -> the (slot, type, key) it set.
LEGACY_OPTIM_KEYS = {
    "grid_lr": (("color", "triplane", "grid_lr"), ("opacity", "feature_lines", "grid_lr")),
    "mlp_lr": (("color", "triplane", "mlp_lr"),), "opacity_mlp_lr": (("opacity", "feature_lines", "mlp_lr"),),
    "sh_lr": (("color", "sh", "lr"),), "feature_lines_warmup": (("opacity", "feature_lines", "warmup"),),
    "lambda_position": (("geometry", "flame_bound", "lambda_position"),),
    "threshold_position": (("geometry", "flame_bound", "threshold_position"),),
    "lambda_scale": (("geometry", "flame_bound", "lambda_scale"),),
    "threshold_scale": (("geometry", "flame_bound", "threshold_scale"),),
}
# model.<old boolean> -> (slot, type when true, type when false).
LEGACY_SWITCHES = {"use_triplane": ("color", "triplane", "sh"), "use_feature_lines": ("opacity", "feature_lines", "static")}
_warned_legacy: set = set()


def upgrade_legacy_keys(update: dict, config: TrainConfig, source: str) -> dict:
    """``update`` with the keys of configs written before the component slots mapped onto them,
    with one deprecation line per source. ``model.use_triplane`` / ``use_feature_lines`` choose
    ``model.color`` / ``model.opacity``'s type; every other old key (the components' flat keys,
    their ``optim`` rates, the ``penalty`` section) becomes a setting of the built-in type that
    owned it (``model.color.sh: {degree: 2}``), which applies where that type is the slot's, as the
    old code applied it; the line names the ones the chosen types do not use."""
    if not isinstance(update, dict):
        return update
    model, optim = update.get("model"), update.get("optim")
    if not isinstance(model, (dict, type(None))) or not isinstance(optim, (dict, type(None))):
        return update  # merge_into names the malformed section
    model, optim = dict(model or {}), dict(optim or {})
    old = [f"model.{k}" for k in model if k in LEGACY_MODEL_KEYS or k in LEGACY_SWITCHES]
    old += [f"optim.{k}" for k in optim if k in LEGACY_OPTIM_KEYS]
    old += ["penalty"] if "penalty" in update else []
    if not old:
        return update
    for slot in ("geometry", "color", "opacity"):  # a bare type name, as a mapping to add to
        if isinstance(model.get(slot), str):
            model[slot] = {"type": model[slot]}
    slots: dict[str, dict] = {slot: dict(model.get(slot) or {}) for slot in ("geometry", "color", "opacity")}
    for key, (slot, on, off) in LEGACY_SWITCHES.items():
        if key in model:
            slots[slot].setdefault("type", on if convert(True, model.pop(key), source, f"model.{key}") else off)
    moved = [(LEGACY_MODEL_KEYS[k], model.pop(k), f"model.{k}") for k in [k for k in model if k in LEGACY_MODEL_KEYS]]
    for key in [k for k in optim if k in LEGACY_OPTIM_KEYS]:
        value = optim.pop(key)
        moved += [(target, value, f"optim.{key}") for target in LEGACY_OPTIM_KEYS[key]]
    if "penalty" in update:
        moved.append((("opacity", "feature_lines", "penalty"), update["penalty"], "penalty"))
    unused = []
    for (slot, owner, key), value, old_key in moved:
        settings = slots[slot].setdefault(owner, {})
        if isinstance(settings, dict):
            settings.setdefault(key, value)  # a key the file also writes the new way keeps that value
        chosen = slots[slot].get("type", getattr(config.model, slot).type)
        if chosen != owner and old_key not in unused:
            unused.append(old_key)
    update = {k: v for k, v in update.items() if k != "penalty"}
    model.update({slot: values for slot, values in slots.items() if values})
    update["model"] = model
    if optim or "optim" in update:
        update["optim"] = optim
    if source not in _warned_legacy:
        _warned_legacy.add(source)
        note = f"; not used by the chosen components: {', '.join(unused)}" if unused else ""
        print(f"[config] {source}: old-style keys ({', '.join(old[:4])}{' ...' if len(old) > 4 else ''}) read as "
              f"model.geometry / model.color / model.opacity settings{note}; write them there (docs/DESIGN.md "
              "section 0)", file=sys.stderr)
    return update


def validate(config: TrainConfig) -> None:
    m = config.model
    if config.run.device not in ("auto", "cpu", "cuda") and not config.run.device.startswith("cuda:"):
        raise InputFileError(f"run.device must be auto, cpu or cuda[:N], got {config.run.device!r}")
    check_backend_name(config.run.backend, "run.backend")
    if not 0 < config.run.resolution_scale <= 1.0:
        raise InputFileError("run.resolution_scale must be in (0, 1]")
    if config.optim.iterations < 1:
        raise InputFileError("optim.iterations must be at least 1")
    for slot, _, _ in SLOTS:
        getattr(m, slot).validate(m, f"model.{slot}")
    config.densify.validate("densify")
    _check_ranges(config)


# (dotted key, lowest allowed, highest allowed or None): values a run cannot work with, refused
# before anything is written instead of clamped quietly or failing at iteration 1. Each
# component's own keys are checked by its config's ``validate``.
RANGES = (
    ("sampling.n_classes", 1, None), ("sampling.balance", 0.0, 1.0), ("model.box_padding", 0.0, None), ("optim.lambda_dssim", 0.0, 1.0),
    ("densify.densification_interval", 1, None), ("densify.grad_threshold", 0.0, None),
    ("densify.min_opacity", 0.0, 1.0), ("densify.max_splats", 0, None), ("run.eval_interval", 1, None),
    ("run.save_interval", 1, None), ("run.log_interval", 1, None), ("run.keep_checkpoints", 0, None),
    ("run.image_cache_gb", 0.0, None), ("run.loader_workers", 0, None), ("run.prefetch_frames", 0, None),
    ("run.device_image_cache_gb", 0.0, None), ("run.divergence_factor", 0.0, None), ("run.eval_max_frames", 0, None),
)
POSITIVE = ("optim.position_lr_init", "optim.position_lr_final", "optim.opacity_lr", "optim.scaling_lr",
            "optim.rotation_lr")


def _check_ranges(config: TrainConfig) -> None:
    def get(key):
        section, name = key.split(".")
        return getattr(getattr(config, section), name)

    for key, lo, hi in RANGES:
        check_range(key, get(key), lo, hi)
    for key in POSITIVE:
        check_positive(key, get(key))
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
    return resolve_config(base=data["config"], base_source=str(path)), extra


def config_differences(a: TrainConfig, b: TrainConfig, ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs, except the ``ignore`` prefixes."""
    out = []

    def walk(x: dict, y: dict, prefix: str) -> None:
        # Component slots of different types have different keys: one absent on a side is a difference.
        for key in list(x) + [k for k in y if k not in x]:
            path = f"{prefix}{key}"
            if any(path == p or path.startswith(p + ".") for p in ignore):
                continue
            a, b = x.get(key, "(absent)"), y.get(key, "(absent)")
            if isinstance(a, dict) and isinstance(b, dict) and "type" in a and a.get("type") != b.get("type"):
                out.append(f"{path}: type {a['type']!r} -> {b.get('type')!r}")  # a component swapped: one line
            elif isinstance(a, dict) and isinstance(b, dict):
                walk(a, b, path + ".")
            elif a != b:
                out.append(f"{path}: {a!r} -> {b!r}")

    walk(a.to_dict(), b.to_dict(), "")
    return out
