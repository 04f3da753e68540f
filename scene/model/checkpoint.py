"""What a checkpoint folder holds, and how an avatar is rebuilt from a model folder.

A checkpoint folder (``MODEL/checkpoints/iteration_NNNNNNN/``) holds one file per component entry,
so that the storage report is simply the size of each file as saved:

- ``splats.ply``       the per-splat tensors: local position/rotation/scale, canonical opacity,
                       binding, and every component's per-splat attributes (SH for the ``sh`` colour)
- ``<entry>.pt``       each component's checkpoint entries, named by the component: ``triplane.pt``
                       and ``color_decoder.pt`` (``triplane`` colour); ``feature_lines.pt``,
                       ``opacity_decoder.pt``, ``jaw_bases.pt`` (``feature_lines`` opacity)
- ``identity.pt``      FLAME shape (n_shape,) and static offset (V, 3) of the subject
- ``flame_params.pt``  per-timestep FLAME parameters, only when they were fine-tuned
- ``training_state.pt`` optimisers, densification statistics, sampler and RNG (resume only)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from flame_model import FLAME
from scene.config import TrainConfig, load_saved_config
from scene.model.avatar import GaussianAvatar, ModelConfig, build_context
from utils.checkpoint import latest_checkpoint, list_checkpoints, load_state
from utils.errors import MissingFileError

#: Files of a checkpoint folder that are not part of the avatar itself (storage report).
NOT_AVATAR = ("training_state.pt", "flame_params.pt")


def _for_file(entry, half: bool):
    """A component's checkpoint entry on the CPU: a state dict (network weights, float16 when
    ``half``) or a tensor, kept as it is (e.g. the jaw bases)."""
    if torch.is_tensor(entry):
        return entry.detach().cpu()
    return {k: (v.half() if half and torch.is_floating_point(v) else v) for k, v in entry.items()}


def save_avatar(folder: Path, avatar: GaussianAvatar, shape: torch.Tensor, static_offset: torch.Tensor | None, half: bool = False) -> None:
    """Write the avatar into ``folder``: the splats, each component entry, the identity.

    ``half`` stores network weights in float16 (``render.py --half`` export); splat attributes
    stay float32 in the PLY.
    """
    folder = Path(folder)
    avatar.gaussians.save_ply(folder / "splats.ply")
    for name, entry in avatar.checkpoint_entries().items():
        torch.save(_for_file(entry, half), folder / f"{name}.pt")
    torch.save(
        {"shape": shape.detach().cpu(), "static_offset": None if static_offset is None else static_offset.detach().cpu()},
        folder / "identity.pt",
    )


def load_component(path: Path):
    """One file of a checkpoint (plain data, loaded without running code)."""
    return load_state(path, map_location="cpu")


def load_avatar_components(avatar: GaussianAvatar, folder: Path) -> None:
    """Load a checkpoint's splats and component entries into ``avatar`` (in place)."""
    avatar.load_checkpoint_entries(Path(folder), load_component)


def storage_report(folder: Path) -> dict[str, int]:
    """Bytes of each saved part of the avatar in a checkpoint folder (file stem -> bytes; the
    training state and fine-tuned FLAME parameters excluded)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name not in NOT_AVATAR
                   and p.suffix in (".ply", ".pt"))
    files.sort(key=lambda p: (p.name != "splats.ply", p.name == "identity.pt", p.name))
    return {p.stem: p.stat().st_size for p in files}


@dataclass
class LoadedModel:
    config: TrainConfig
    extra: dict  # run facts saved beside the config (data and FLAME paths)
    iteration: int
    folder: Path  # the checkpoint folder
    flame: FLAME
    avatar: GaussianAvatar
    shape: torch.Tensor
    static_offset: torch.Tensor | None


def resolve_checkpoint(model_dir: str | os.PathLike, iteration: int | None = None) -> tuple[int, Path]:
    model_dir = Path(model_dir)
    if iteration is None:
        found = latest_checkpoint(model_dir)
        if found is None:
            raise MissingFileError(
                f"no checkpoint in {model_dir / 'checkpoints'}: train first with `python train.py -s SUBJECT -m {model_dir}`"
            )
        return found
    for it, path in list_checkpoints(model_dir):
        if it == iteration:
            return it, path
    available = [it for it, _ in list_checkpoints(model_dir)]
    raise MissingFileError(f"{model_dir}: no checkpoint for iteration {iteration}; available: {available}")


def build_flame(model: ModelConfig, extra: dict, flame_path: str | None = None, masks_path: str | None = None) -> FLAME:
    """The FLAME layer of a run: ``flame_path`` / ``masks_path``, else the paths in its saved ``extra``."""
    path = flame_path or extra.get("flame_model")
    masks = masks_path or extra.get("flame_masks")
    return FLAME(path, masks, n_shape=model.n_shape, n_expr=model.n_expr, add_teeth=model.add_teeth)


def load_model(model_dir: str | os.PathLike, iteration: int | None = None, flame_path: str | None = None,
               masks_path: str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained avatar from a model folder's config and a checkpoint."""
    config, extra = load_saved_config(model_dir)
    it, folder = resolve_checkpoint(model_dir, iteration)
    flame = build_flame(config.model, extra, flame_path, masks_path)
    identity = load_component(folder / "identity.pt")
    shape, static_offset = identity["shape"].float(), identity["static_offset"]
    static_offset = None if static_offset is None else static_offset.float()
    canonical = flame.canonical_vertices(shape, None if static_offset is None else static_offset[None])[0]
    avatar = GaussianAvatar(config.model, build_context(config.model, flame, canonical))
    load_avatar_components(avatar, folder)
    avatar.set_step(None, config.optim.iterations)  # trained: every component in its final state
    avatar.eval()
    return LoadedModel(config, extra, it, folder, flame.to(device), avatar.to(device), shape.to(device),
                       None if static_offset is None else static_offset.to(device))
