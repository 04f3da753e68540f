"""What a checkpoint folder holds, and how an avatar is rebuilt from a model folder.

A checkpoint folder (``MODEL/checkpoints/iteration_NNNNNNN/``) holds one file per component, so
that the storage report is simply the size of each file as saved:

- ``splats.ply``          local position/rotation/scale, canonical opacity, binding (+ SH for GA)
- ``triplane.pt``         the three feature planes (tensorial colour)
- ``color_decoder.pt``    the colour MLP
- ``feature_lines.pt``    expression and jaw feature lines
- ``opacity_decoder.pt``  the opacity-offset MLP
- ``jaw_bases.pt``        the jaw-rotation bases (K, 4)
- ``identity.pt``         FLAME shape (n_shape,) and static offset (V, 3) of the subject
- ``flame_params.pt``     per-timestep FLAME parameters, only when they were fine-tuned
- ``training_state.pt``   optimisers, densification statistics, sampler and RNG (resume only)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from flame_model import FLAME
from scene.avatar import GaussianAvatar
from scene.config import TrainConfig, load_saved_config
from scene.gaussian_model import BoundGaussians
from utils.checkpoint import latest_checkpoint, list_checkpoints, load_state
from utils.errors import MissingFileError

COMPONENT_FILES = {
    "splats": "splats.ply",
    "triplane": "triplane.pt",
    "color_decoder": "color_decoder.pt",
    "feature_lines": "feature_lines.pt",
    "opacity_decoder": "opacity_decoder.pt",
    "jaw_bases": "jaw_bases.pt",
    "identity": "identity.pt",
}


def _for_file(entry, half: bool):
    """A component's checkpoint entry on the CPU: a state dict (network weights, float16 when
    ``half``) or a tensor, kept as it is (the jaw bases)."""
    if torch.is_tensor(entry):
        return entry.detach().cpu()
    return {k: (v.half() if half and torch.is_floating_point(v) else v) for k, v in entry.items()}


def save_avatar(folder: Path, avatar: GaussianAvatar, shape: torch.Tensor, static_offset: torch.Tensor | None, half: bool = False) -> None:
    """Write the avatar's components into ``folder`` (one file each; see module docstring).

    ``half`` stores network weights in float16 (``render.py --half`` export); splat attributes
    stay float32 in the PLY.
    """
    folder = Path(folder)
    avatar.gaussians.save_ply(folder / COMPONENT_FILES["splats"])
    for component in avatar.components().values():
        for name, entry in component.checkpoint_entries().items():
            torch.save(_for_file(entry, half), folder / COMPONENT_FILES[name])
    torch.save(
        {"shape": shape.detach().cpu(), "static_offset": None if static_offset is None else static_offset.detach().cpu()},
        folder / COMPONENT_FILES["identity"],
    )


def load_component(path: Path):
    """One component file of a checkpoint (plain data, loaded without running code)."""
    return load_state(path, map_location="cpu")


def load_avatar_components(avatar: GaussianAvatar, folder: Path) -> None:
    """Load a checkpoint's splats, grids, decoders and jaw bases into ``avatar`` (in place)."""
    folder = Path(folder)
    device = avatar.faces.device
    avatar.gaussians = BoundGaussians.load_ply(folder / COMPONENT_FILES["splats"]).to(device)
    for component in avatar.components().values():
        component.load_checkpoint_entries(
            {name: load_component(folder / COMPONENT_FILES[name]) for name in component.CHECKPOINT_ENTRIES},
            where=f"{folder}/")


def storage_report(folder: Path) -> dict[str, int]:
    """Bytes of each saved component of a checkpoint folder (training state excluded)."""
    return {name: (Path(folder) / f).stat().st_size for name, f in COMPONENT_FILES.items() if (Path(folder) / f).is_file()}


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


def build_flame(config: TrainConfig, extra: dict, flame_path: str | None = None, masks_path: str | None = None) -> FLAME:
    model = flame_path or extra.get("flame_model")
    masks = masks_path or extra.get("flame_masks")
    return FLAME(model, masks, n_shape=config.model.n_shape, n_expr=config.model.n_expr, add_teeth=config.model.add_teeth)


def face_vertex_mask(flame: FLAME, regions: list[str]) -> torch.Tensor | None:
    """Union of the named vertex regions that the masks file has (None when it has none)."""
    present = [flame.vertex_masks[r] for r in regions if r in flame.vertex_masks]
    if not present:
        return None
    return torch.stack(present).any(0)


def load_model(model_dir: str | os.PathLike, iteration: int | None = None, flame_path: str | None = None,
               masks_path: str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained avatar from a model folder's config and a checkpoint."""
    config, extra = load_saved_config(model_dir)
    it, folder = resolve_checkpoint(model_dir, iteration)
    flame = build_flame(config, extra, flame_path, masks_path)
    identity = load_component(folder / COMPONENT_FILES["identity"])
    shape, static_offset = identity["shape"].float(), identity["static_offset"]
    static_offset = None if static_offset is None else static_offset.float()
    canonical = flame.canonical_vertices(shape, None if static_offset is None else static_offset[None])[0]
    jaw_bases = load_component(folder / COMPONENT_FILES["jaw_bases"]).float() if config.model.use_feature_lines else None
    avatar = GaussianAvatar(config.model, flame.faces, canonical,
                            face_vertex_mask(flame, config.model.face_box_regions), jaw_bases)
    load_avatar_components(avatar, folder)
    avatar.eval()
    return LoadedModel(config, extra, it, folder, flame.to(device), avatar.to(device), shape.to(device),
                       None if static_offset is None else static_offset.to(device))
