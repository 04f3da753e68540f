"""The avatar: a geometry, a colour, an opacity and a screen-space component composed behind one
model interface.

:class:`GaussianAvatar` is the model the trainer, renderer, viewer, export and checkpoint code talk
to (docs/DESIGN.md section 0). Which components it is made of is configuration
(``model.geometry``, ``model.color``, ``model.opacity``, ``model.screen``, each
``{type: <registered name>, ...}``):

- the compact tensorial avatar (``configs/tensorial.yaml``): ``flame_bound`` + ``triplane`` +
  ``feature_lines``;
- GaussianAvatars (``configs/gaussian_avatars.yaml``): ``flame_bound`` + ``sh`` + ``static``;
- the paper's ablations swap one component each.

The interface, for one frame: :meth:`GaussianAvatar.splats` gives the world-space splats the
rasterizer takes; for training: per-splat tensors (``gaussians``, which densification edits),
:meth:`splat_attributes` and :meth:`param_groups` (what the optimisers update, at which rates),
:meth:`losses`, :meth:`set_step`; for files: :meth:`checkpoint_entries` /
:meth:`load_checkpoint_entries`; for export: :meth:`export_sh`; after rasterization, the
``screen`` stage (:func:`scene.rendering.render_avatar`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# The shared components and the tensorial method's, imported so that they are registered.
from scene.methods import gaussianhead as _gaussianhead  # noqa: F401  (GaussianHead-style)
from scene.methods import gbs as _gbs  # noqa: F401  (Gaussian Blendshapes-style)
from scene.methods import gha as _gha  # noqa: F401  (Gaussian Head Avatar-style)
from scene.methods import npga as _npga  # noqa: F401  (NPGA-style)
from scene.methods.tensorial import color as _tensorial_color  # noqa: F401
from scene.methods.tensorial import opacity as _tensorial_opacity  # noqa: F401
from scene.model import flame_bound as _flame_bound  # noqa: F401
from scene.model import no_screen as _no_screen  # noqa: F401
from scene.model import sh_color as _sh_color  # noqa: F401
from scene.model import static_opacity as _static_opacity  # noqa: F401
from scene.model.components import (BuildContext, ColorComponent, Component, FlameRig, GeometryComponent,
                                    LossContext, OpacityComponent, PluginContractError, ScreenComponent, SplatAttribute,
                                    check_component_contract, padded_box)
from scene.model.gaussian_model import CORE_COLUMNS, BoundGaussians
from scene.model.registry import COLOR, GEOMETRY, OPACITY, SCREEN, ComponentConfig, component_field
from utils.errors import InputFileError

__all__ = ["ModelConfig", "GaussianAvatar", "build_context", "masks_needed", "SLOTS"]


@dataclass
class ModelConfig:
    """What the avatar is made of: FLAME's sizes, the canonical box, and one component per slot."""

    n_shape: int = 300
    n_expr: int = 100
    add_teeth: bool = True
    # The canonical head box is the canonical mesh's bounding box grown by this fraction on every
    # side: the triplane's, and the feature lines' (their box "head"; "face" pads the face regions' box).
    box_padding: float = 0.1
    geometry: ComponentConfig = component_field(GEOMETRY, "flame_bound")
    color: ComponentConfig = component_field(COLOR, "triplane")
    opacity: ComponentConfig = component_field(OPACITY, "feature_lines")
    # An optional stage after rasterization (a CNN from C feature channels to RGB); "none": no stage.
    screen: ComponentConfig = component_field(SCREEN, "none")


#: Names of the trainer's own loss figures, which no component term may take.
RESERVED_TERMS = ("loss", "l1", "d_ssim", "psnr", "gradient norm")

SLOTS = (("geometry", GEOMETRY, GeometryComponent), ("color", COLOR, ColorComponent),
         ("opacity", OPACITY, OpacityComponent), ("screen", SCREEN, ScreenComponent))


def masks_needed(cfg: ModelConfig) -> list[str]:
    """What of the configured components reads the FLAME region masks."""
    return [need for slot, _, _ in SLOTS for need in getattr(cfg, slot).masks_needed()]


def build_context(cfg: ModelConfig, flame, canonical_vertices: torch.Tensor,
                  training_motion: dict | None = None) -> BuildContext:
    """The :class:`BuildContext` of an avatar of ``flame`` (faces, region masks) around the
    subject's canonical mesh (V, 3); ``training_motion``: the training timesteps' FLAME parameters
    (T, ...), or None when the avatar is rebuilt from a checkpoint."""
    canonical = canonical_vertices.float()
    return BuildContext(faces=flame.faces.long(), canonical_vertices=canonical,
                        head_box=padded_box(canonical, cfg.box_padding), box_padding=cfg.box_padding,
                        vertex_masks=dict(flame.vertex_masks), face_masks=dict(flame.face_masks), n_expr=cfg.n_expr,
                        rig=FlameRig.of(flame, cfg.n_expr), training_motion=training_motion)


class GaussianAvatar(torch.nn.Module):
    """A Gaussian head avatar composed of registered components.

    Args:
        cfg: the model config (which component in each slot, and their settings).
        ctx: what the components are built from (:func:`build_context`).
    """

    def __init__(self, cfg: ModelConfig, ctx: BuildContext):
        super().__init__()
        self.cfg = cfg
        components = {}
        for slot, registry, base in SLOTS:
            component_cfg = getattr(cfg, slot)
            cls = registry.get(component_cfg.type, f"model.{slot}")
            if not issubclass(cls, base):
                raise PluginContractError(f"model.{slot} type {component_cfg.type!r} ({cls.__qualname__}) must derive "
                                          f"from {base.__name__}")
            components[slot] = cls(component_cfg, ctx)
            if slot == "geometry":
                missing = [a for a in ("faces", "canonical_vertices")
                           if not torch.is_tensor(getattr(components["geometry"], a, None))]
                if missing:
                    raise PluginContractError(f"model.geometry {component_cfg.type!r}: a geometry holds {missing} "
                                              "(buffers of its mesh; scene/model/components.GeometryComponent)")
                # The splats exist before the colour and opacity components are built (and their
                # parameters drawn from the RNG), as they always have.
                self.geometry = components["geometry"]
                self.gaussians = self.geometry.initial_splats()
        self.color: ColorComponent = components["color"]
        self.opacity: OpacityComponent = components["opacity"]
        self.screen: ScreenComponent = components["screen"]
        if self.color.channels() != 3 and not self.screen.enabled():
            raise PluginContractError(f"model.color {self.color.type_name!r} gives {self.color.channels()} channels: "
                                      "an image needs 3, or a model.screen stage that turns them into RGB")
        owners: dict[str, str] = {}
        for slot, component in self.components().items():
            check_component_contract(component)
            for name, spec in component.splat_attributes().items():
                if name in owners or name in self.gaussians.params:
                    raise PluginContractError(f"model.{slot} {component.type_name!r}: per-splat attribute {name!r} is "
                                              f"already {owners.get(name, 'a core splat attribute')}'s")
                owners[name] = f"model.{slot} {component.type_name!r}"
                self.gaussians.add_attribute(name, spec)
        self._check_file_names()

    def components(self) -> dict[str, Component]:
        """The avatar's components by slot: geometry, color, opacity, screen."""
        return {"geometry": self.geometry, "color": self.color, "opacity": self.opacity, "screen": self.screen}

    def _check_file_names(self) -> None:
        """Checkpoint entries and PLY columns: each name once. The files a checkpoint folder holds
        besides the components' entries are taken."""
        seen: dict[str, str] = {"splats": "the splats", "identity": "the identity",
                                "training_state": "the trainer", "flame_params": "the trainer"}
        for slot, component in self.components().items():
            for name in component.checkpoint_entries():
                if name in seen:
                    raise PluginContractError(f"model.{slot} {component.type_name!r}: checkpoint entry {name!r} is "
                                              f"already {seen[name]}'s (entries become <name>.pt files)")
                seen[name] = f"model.{slot} {component.type_name!r}"
        columns: dict[str, str] = {}
        for name, spec in self.gaussians.attributes.items():
            for column in spec.column_names(name):
                if column in CORE_COLUMNS or column in columns:
                    raise PluginContractError(f"per-splat attribute {name!r}: its PLY column {column!r} is already "
                                              f"{columns.get(column, 'a core column')}'s; name the attribute otherwise "
                                              "or give it a ply_prefix")
                columns[column] = f"attribute {name!r}"

    # -- the frame ------------------------------------------------------------------------------

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) the mesh triangles."""
        return self.geometry.faces

    @property
    def canonical_vertices(self) -> torch.Tensor:
        """(V, 3) the subject's neutral mesh."""
        return self.geometry.canonical_vertices

    def splats(self, vertices: torch.Tensor, camera_center: torch.Tensor, motion: dict,
               canonical_means: torch.Tensor | None = None) -> dict:
        """World-space splats of one frame.

        Args:
            vertices: (V, 3) posed mesh; camera_center: (3,) world position of the camera.
            motion: the frame's FLAME parameters (:func:`flame_model.frame_motion`): expr (n_expr,)
                and jaw_pose (3,) always (they drive the opacity); rotation (3,), neck_pose (3,),
                eyes_pose (6,), translation (3,) for geometries driven by the pose rather than the mesh.
            canonical_means: None, or (N, 3) :meth:`canonical_splat_positions`, when the caller
                has them already (a compiled frame takes them as an input: their per-version
                cache is Python the graph cannot hold).
        Returns:
            dict with means (N, 3), quats (N, 4), scales (N, 3), opacities (N,), and either
            colors (N, 3) or sh (N, K, 3) with sh_degree (the active degree); plus delta (N,), the
            opacity-logit offsets (zeros without expression-dependent opacity).
        """
        geometry = self.geometry(vertices, self.gaussians, camera_center, motion)
        geometry.motion = motion
        if canonical_means is not None:
            geometry.provide_canonical_means(canonical_means)
        out = {"means": geometry.means, "quats": geometry.quats, "scales": geometry.scales}
        out.update(self.color(geometry))
        for name, value in geometry.extras.items():  # what the components' losses read
            if name in out:
                raise PluginContractError(f"model.geometry {self.geometry.type_name!r}: extra tensor {name!r} of the "
                                          "frame has the name of a splat quantity; name it otherwise")
            out[name] = value
        logit = self.gaussians.params["opacity"]
        delta = self.opacity(geometry, motion["expr"], motion["jaw_pose"])
        out["delta"] = torch.zeros_like(logit) if delta is None else delta
        out["opacities"] = torch.sigmoid(logit + out["delta"])
        return out

    def canonical_splat_positions(self) -> torch.Tensor:
        """(N, 3) splat centres on the canonical mesh (without autograd the geometry may keep them
        until the splats change: ``flame_bound`` does)."""
        return self.geometry.canonical_positions(self.gaussians)

    def canonical_world_scales(self) -> torch.Tensor:
        """(N, 3) splat scales in world units on the canonical mesh (densification's split test)."""
        return self.geometry.canonical_world_scales(self.gaussians)

    # -- training -------------------------------------------------------------------------------

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        """The components' per-splat tensors (name -> spec), beyond the geometry's core ones."""
        return dict(self.gaussians.attributes)

    def param_groups(self) -> list[dict]:
        """Adam groups of the components' network parameters (the splats' own optimisers are
        :mod:`scene.training.optimizer_ops`')."""
        return [group for component in self.components().values() for group in component.param_groups()]

    def set_step(self, step: int | None, schedule_iterations: int) -> None:
        """Schedule hooks (feature-line warm-up, SH degree): ``step`` 1-based, None = trained."""
        for component in self.components().values():
            component.set_step(step, schedule_iterations)

    def splats_changed(self) -> None:
        """Tell every component that densification cloned, split or pruned splats."""
        for component in self.components().values():
            component.splats_changed(self.gaussians)

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        """The components' weighted loss terms for one training frame, in slot order: each a scalar
        tensor under a name of its own (the trainer's own terms' names are taken)."""
        terms: dict[str, torch.Tensor] = {}
        for slot, component in self.components().items():
            for name, value in component.losses(ctx).items():
                where = f"model.{slot} {component.type_name!r}: loss term {name!r}"
                if name in terms or name in RESERVED_TERMS:
                    raise PluginContractError(f"{where} is named twice (or is one of the trainer's "
                                              f"{', '.join(RESERVED_TERMS)}): give it a name of its own")
                if not (torch.is_tensor(value) and value.ndim == 0):
                    raise PluginContractError(f"{where} must be a scalar tensor (0-dim, from the frame's tensors so "
                                              f"that it has a gradient), got {type(value).__name__}"
                                              f"{tuple(value.shape) if torch.is_tensor(value) else ''}")
                terms[name] = value
        return terms

    # -- files ----------------------------------------------------------------------------------

    def checkpoint_entries(self) -> dict:
        """Entry name -> state of every component (one ``<name>.pt`` file each)."""
        return {name: entry for component in self.components().values()
                for name, entry in component.checkpoint_entries().items()}

    def load_checkpoint_entries(self, folder: Path, read) -> None:
        """Load the splats and every component's entries from a checkpoint ``folder`` (``read``:
        path -> the file's data, loaded without running code)."""
        folder = Path(folder)
        device = self.faces.device
        self.gaussians = BoundGaussians.load_ply(folder / "splats.ply", self.splat_attributes()).to(device)
        for slot, component in self.components().items():
            names = list(component.checkpoint_entries())
            missing = [f"{n}.pt" for n in names if not (folder / f"{n}.pt").is_file()]
            if missing:
                raise InputFileError(f"{folder}: {', '.join(missing)} missing, which model.{slot} "
                                     f"{component.type_name!r} needs; the checkpoint was written by another model "
                                     "config or is incomplete")
            component.load_checkpoint_entries({n: read(folder / f"{n}.pt") for n in names}, where=f"{folder}/")

    # -- export ---------------------------------------------------------------------------------

    def export_sh(self, degree: int | None) -> torch.Tensor | None:
        """(N, K, 3) the colour component's own SH up to ``degree`` (None: all), or None when
        colour must be fitted (:class:`scene.interop.export_3dgs.SHFit`)."""
        return self.color.own_sh(self.gaussians.params, degree)
