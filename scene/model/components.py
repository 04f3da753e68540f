"""The plug-in contract: what a component (geometry, colour, opacity) provides and what it is given.

A method is a composition of components (:class:`scene.model.avatar.GaussianAvatar`), each
registered by name (:mod:`scene.model.registry`) and chosen in YAML. A component decides:

- its **per-splat tensors** (:meth:`Component.splat_attributes`): kept among the splats, so that
  densification clones, splits and prunes their rows together with their Adam moments, and the
  splats' PLY stores them;
- its **network parameters** as Adam groups with their learning rates (:meth:`Component.param_groups`);
- its **checkpoint entries** (:meth:`Component.checkpoint_entries`): name -> state, one file
  ``<name>.pt`` each, so the storage report is per component; every parameter must be in an entry
  or be a per-splat tensor (:func:`check_component_contract`);
- its **losses** (:meth:`Component.losses`) and **schedule** (:meth:`Component.set_step`).

The trainer, renderer, viewer, export and checkpoint code see only this contract.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from scene.model.registry import ComponentConfig
from utils.errors import UserFacingError

__all__ = ["SplatAttribute", "FlameRig", "BuildContext", "SplatGeometry", "LossContext", "Component", "ColorComponent",
           "OpacityComponent", "GeometryComponent", "ScreenComponent", "PluginContractError", "check_component_contract", "padded_box"]


class PluginContractError(UserFacingError, TypeError):
    """A component breaks the plug-in contract (a parameter nobody saves, a name used twice...):
    one message naming the component and the fix (the CLIs print it without a traceback)."""


@dataclass(frozen=True)
class SplatAttribute:
    """A per-splat tensor of a component, stored among the splats.

    Attributes:
        shape: the shape of one splat's value, e.g. (3,) for an RGB colour.
        lr: its Adam learning rate.
        init: the constant every splat starts with.
        ply_prefix: PLY column names are ``ply_prefix + i`` (default ``"<name>_"``).
        channel_major: columns ordered channel by channel (the 3DGS ``f_rest_*`` layout of (K, 3) SH).
    """

    shape: tuple
    lr: float
    init: float = 0.0
    ply_prefix: str = ""
    channel_major: bool = False

    def initial(self, n: int) -> torch.Tensor:
        """(n, *shape) initial values."""
        return torch.full((n, *self.shape), float(self.init))

    def width(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def column_names(self, name: str) -> list[str]:
        prefix = self.ply_prefix or f"{name}_"
        return [f"{prefix}{i}" for i in range(self.width())]

    def to_columns(self, values: np.ndarray) -> np.ndarray:
        """(N, *shape) -> (N, width) in column order."""
        if self.channel_major:
            values = np.swapaxes(values, -1, -2)
        return values.reshape(values.shape[0], -1)

    def from_columns(self, table: torch.Tensor) -> torch.Tensor:
        """(N, width) in column order -> (N, *shape)."""
        if self.channel_major:
            return table.reshape(table.shape[0], *self.shape[:-2], self.shape[-1], self.shape[-2]).transpose(-1, -2)
        return table.reshape(table.shape[0], *self.shape)


def padded_box(points: torch.Tensor, padding: float) -> torch.Tensor:
    """(2, 3) axis-aligned box (min, max) of ``points`` (P, 3) grown by ``padding`` x its size on every side."""
    lo, hi = points.min(0).values, points.max(0).values
    grow = (hi - lo) * padding
    return torch.stack([lo - grow, hi + grow])


@dataclass
class FlameRig:
    """FLAME's skinning rig and expression basis, for components that move splats the way FLAME
    moves its vertices (linear blend skinning, expression blendshapes) rather than through the
    posed mesh alone.

    Attributes:
        joint_regressor: (K, V) rest-pose joints from vertices (K = 5: global, neck, jaw, eyes).
        lbs_weights: (V, K) skinning weights of every vertex.
        parents: K parent joint indices (parents[0] = -1).
        expr_dirs: (V, 3, n_expr) expression blendshape directions (vertex offsets per coefficient).
    """

    joint_regressor: torch.Tensor
    lbs_weights: torch.Tensor
    parents: tuple
    expr_dirs: torch.Tensor

    @classmethod
    def of(cls, flame, n_expr: int) -> "FlameRig":
        """The rig of a :class:`flame_model.FLAME` layer (float32 copies, on its device)."""
        expr_dirs = flame.shapedirs[:, :, flame.n_shape:flame.n_shape + n_expr]
        return cls(flame.J_regressor.float().clone(), flame.lbs_weights.float().clone(), tuple(flame.parents),
                   expr_dirs.float().clone())


@dataclass
class BuildContext:
    """What components are built from.

    Attributes:
        faces: (F, 3) mesh triangles (FLAME with teeth).
        canonical_vertices: (V, 3) the subject's neutral mesh (shape + static offset).
        head_box: (2, 3) the canonical head box (min, max), padded by ``box_padding`` x its size.
        vertex_masks / face_masks: FLAME region name -> (V,) / (F,) bool (empty without the masks file).
        n_expr: expression coefficients per frame.
        rig: FLAME's skinning rig and expression basis (:class:`FlameRig`).
        training_motion: FLAME parameters (T, ...) of the training timesteps, for data-driven set-up
            (e.g. jaw bases); None when the model is rebuilt from a checkpoint, whose entries then
            overwrite whatever was set up from it.
    """

    faces: torch.Tensor
    canonical_vertices: torch.Tensor
    head_box: torch.Tensor
    box_padding: float
    vertex_masks: dict
    face_masks: dict
    n_expr: int
    rig: FlameRig | None = None
    training_motion: dict | None = None


class SplatGeometry:
    """A frame's splats in world space from the geometry component, with the canonical-space
    quantities colour and opacity models look up, computed on first use.

    Attributes:
        means (N, 3), quats (N, 4) wxyz, scales (N, 3): world space.
        params: the splats' per-splat tensors (``gaussians.params``); binding (N,) their triangles.
        motion: the frame's FLAME parameters (:meth:`scene.model.avatar.GaussianAvatar.splats` sets
            it), for a colour or opacity conditioned on the expression or pose; None for lookups in
            canonical space alone (:meth:`canonical`).
        extras: name -> tensor of the frame that the components' losses read (e.g. NPGA's predicted
            offsets, for its regularisers): :meth:`GaussianAvatar.splats` hands them on in its
            result, which is :attr:`LossContext.splats`; empty for most geometries.
    """

    def __init__(self, means, quats, scales, params, binding,
                 canonical_means_fn: Callable[[], torch.Tensor], canonical_view_fn: Callable[[], torch.Tensor],
                 motion: dict | None = None):
        self.means, self.quats, self.scales, self.params, self.binding = means, quats, scales, params, binding
        self._canonical_means_fn, self._canonical_view_fn = canonical_means_fn, canonical_view_fn
        self._canonical_means = None
        self.motion = motion
        self.extras: dict[str, torch.Tensor] = {}

    @classmethod
    def canonical(cls, canonical_means: torch.Tensor, params: dict | None = None,
                  view_dirs: torch.Tensor | None = None, binding: torch.Tensor | None = None) -> "SplatGeometry":
        """Splats at ``canonical_means`` (N, 3) seen along canonical ``view_dirs`` (N, 3), with their
        per-splat tensors and ``binding`` (N,): for lookups in canonical space alone (export's
        colour per direction, tests); world quantities are the canonical ones, rotations and scales absent."""
        return cls(canonical_means, None, None, params or {}, binding, lambda: canonical_means, lambda: view_dirs)

    @property
    def canonical_means(self) -> torch.Tensor:
        """(N, 3) splat centres on the canonical mesh (where canonical-space fields are looked up)."""
        if self._canonical_means is None:
            self._canonical_means = self._canonical_means_fn()
        return self._canonical_means

    def provide_canonical_means(self, canonical_means: torch.Tensor) -> None:
        """Use ``canonical_means`` (N, 3), which the caller already has (a value the geometry's own
        ``canonical_positions`` gave for these splats), instead of computing them on first use."""
        self._canonical_means = canonical_means

    def canonical_view_dirs(self) -> torch.Tensor:
        """(N, 3) unit directions from the camera to each splat, in the canonical frame."""
        return self._canonical_view_fn()


@dataclass
class LossContext:
    """What a component's losses may read for the current training step.

    Attributes:
        step: the 1-based iteration.
        splats: the frame's world-space splats (:meth:`GaussianAvatar.splats`, with ``delta``).
        meta: the rasterizer's meta (``radii`` (C, N), ``means2d`` ...).
        params: the splats' per-splat tensors; binding: (N,) their triangles.
        triangle_displacement: () -> (F,) each triangle's displacement between the frame's
            expression mesh (no global pose) and the canonical mesh, computed on demand.
        features: (h, w, C) the rasterized image before the screen-space stage (the image itself
            without one); gt: (H, W, 3) the frame's ground truth; image: (H, W, 3) the rendered
            image the photometric loss compares with it (after the screen-space stage).
    """

    step: int
    splats: dict
    meta: dict
    params: dict
    binding: torch.Tensor
    triangle_displacement: Callable[[], torch.Tensor]
    features: torch.Tensor | None = None
    gt: torch.Tensor | None = None
    image: torch.Tensor | None = None


class Component(torch.nn.Module):
    """Base of all components. Subclasses set ``Config`` and register with a registry."""

    Config = ComponentConfig
    type_name = ""
    role = ""
    def __init__(self, cfg: ComponentConfig, ctx: BuildContext):
        super().__init__()
        self.cfg = cfg

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        """Per-splat tensors this component keeps among the splats (name -> spec)."""
        return {}

    def param_groups(self) -> list[dict]:
        """Adam groups of the component's network parameters: ``{"params", "lr", "name"}``, and
        optionally ``"weight_decay"`` with ``"decoupled_weight_decay"`` (Adam's own per-group
        settings: True is AdamW's decay) and ``"frozen_until"``: the group is not updated (nor its
        Adam moments) up to and including that 1-based iteration (NPGA's frozen prior network)."""
        return []

    def checkpoint_entries(self) -> dict:
        """Checkpoint name -> state (a state dict or a tensor), saved as ``<name>.pt`` each."""
        return {}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        """Restore what :meth:`checkpoint_entries` returned (``where``: the folder, for errors)."""

    def set_step(self, step: int | None, schedule_iterations: int) -> None:
        """Schedule hook, called before a training or evaluation frame: ``step`` is the 1-based
        iteration of a schedule of ``schedule_iterations``; None means trained (everything on)."""

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        """Weighted loss terms of this component for one training frame (name -> scalar)."""
        return {}

    def splats_changed(self, gaussians) -> None:
        """Hook after a densification step that cloned, split or pruned splats: the rows of
        ``gaussians`` are other splats now, even where their number is the same. State derived
        from the splat set that is not one of the splats' own rows (NPGA's kNN graph) is stale."""


class GeometryComponent(Component):
    """Places the splats of a frame in world space (:meth:`forward` -> :class:`SplatGeometry`).

    Besides its methods it holds ``faces`` (F, 3) and ``canonical_vertices`` (V, 3), the mesh it is
    built on (as buffers: they follow the avatar's device): export, the orbit camera and loading
    read them through the avatar.
    """

    faces: torch.Tensor
    canonical_vertices: torch.Tensor
    #: The splats live on their triangles (``binding``), so densification never empties a triangle
    #: (GaussianAvatars). False: they move freely (an MLP or blendshapes of the expression) and
    #: ``binding`` is only a nearest triangle that children inherit; pruning is plain 3DGS.
    binds_splats: bool = True

    def initial_splats(self):
        """The splats at the start of training: a :class:`scene.model.gaussian_model.BoundGaussians`."""
        raise NotImplementedError

    def forward(self, vertices: torch.Tensor, gaussians, camera_center: torch.Tensor, motion: dict) -> SplatGeometry:
        """The frame's splats: ``vertices`` (V, 3) the posed mesh, ``camera_center`` (3,), ``motion``
        the frame's FLAME parameters (:meth:`scene.model.avatar.GaussianAvatar.splats`): a geometry
        bound to the mesh reads the vertices, one driven by the expression and pose reads the motion."""
        raise NotImplementedError

    def canonical_positions(self, gaussians) -> torch.Tensor:
        """(N, 3) splat centres in canonical space."""
        raise NotImplementedError

    def canonical_world_scales(self, gaussians) -> torch.Tensor:
        """(N, 3) splat scales in world units on the canonical mesh (densification's split test)."""
        raise NotImplementedError

    def canonical_to_world_rotations(self, vertices: torch.Tensor, gaussians) -> torch.Tensor:
        """(N, 3, 3) rotations taking each splat's canonical directions to the frame's world
        directions (export's SH fit)."""
        raise NotImplementedError


class ColorComponent(Component):
    """Gives each splat its colour: :meth:`forward` returns ``{"colors": (N, C)}`` (RGB >= 0 as the
    rasterizer takes it, C = 3; or C feature channels for a screen-space stage to turn into RGB) or
    ``{"sh": (N, K, 3), "sh_degree": d}`` (SH the rasterizer evaluates)."""

    #: The colour depends on the view direction. False (a colour of the frame's expression and
    #: pose alone, e.g. GHA's): export writes the frame's colours (the first three channels) as the
    #: splats' SH degree 0, without fitting SH over directions.
    view_dependent: bool = True

    def channels(self) -> int:
        """C, the channels of :meth:`forward`'s ``colors`` (3 unless a screen-space stage follows)."""
        return 3

    def forward(self, geometry: SplatGeometry) -> dict:
        raise NotImplementedError

    def own_sh(self, params: dict, degree: int | None) -> torch.Tensor | None:
        """(N, K, 3) SH coefficients up to ``degree`` if this component stores SH per splat (export
        writes them as they are), else None: export then fits SH to :meth:`direction_colors`."""
        return None

    def direction_colors(self, canonical_means: torch.Tensor, params: dict, dirs: torch.Tensor,
                         binding: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D, 3): each splat's colour minus 0.5 (the SH-space value before the renderer's
        clamp at 0) for canonical view directions ``dirs`` (D, 3); export fits SH to it. The
        default evaluates :meth:`forward` once per direction."""
        out = []
        for d in dirs:
            result = self.forward(SplatGeometry.canonical(canonical_means, params, d.expand_as(canonical_means),
                                                          binding))
            if "colors" not in result:
                raise PluginContractError(f"colour component {self.type_name!r} returns SH from forward() but does "
                                          "not give them in own_sh(): export cannot write it")
            if result["colors"].shape != canonical_means.shape:
                raise PluginContractError(f"colour component {self.type_name!r}: export needs (N, 3) RGB per "
                                          f"direction, got {tuple(result['colors'].shape)}")
            out.append(result["colors"] - 0.5)
        return torch.stack(out, 1)


class OpacityComponent(Component):
    """Gives each splat its frame's opacity-logit offset: :meth:`forward` -> (N,) or None (none)."""

    def forward(self, geometry: SplatGeometry, expr: torch.Tensor, jaw_pose: torch.Tensor) -> torch.Tensor | None:
        return None


class ScreenComponent(Component):
    """An optional stage after rasterization (Gaussian Head Avatar's and NPGA's): the colour's C
    feature channels, rasterized at 1/``scale`` of the output size, become the (H, W, 3) image.
    The ``none`` type has no stage: the rasterized colours are the image."""

    #: The rasterizer renders at (width // scale, height // scale); the stage outputs (height, width).
    scale: int = 1
    #: The first three rasterized channels are an RGB image in their own right (a loss holds them
    #: to the ground truth, as GHA's): export may write them as the splats' colour, without the
    #: stage. False: an avatar with this stage cannot be exported.
    exports_feature_rgb: bool = False

    def enabled(self) -> bool:
        return True

    def forward(self, features: torch.Tensor, alpha: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """features (h, w, C) and alpha (h, w, 1) at the rasterized size -> image (height, width, 3)."""
        raise NotImplementedError


def _entry_tensors(entry) -> list[torch.Tensor] | None:
    """The tensors of a checkpoint entry: a tensor, or a state dict (name -> tensor); None for
    anything else (which the checkpoint files cannot hold)."""
    if torch.is_tensor(entry):
        return [entry]
    if isinstance(entry, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in entry.items()):
        return list(entry.values())
    return None


def check_component_contract(component: Component) -> None:
    """What a component must get right for its avatar to train, save and load, checked when the
    avatar is built (one :class:`PluginContractError` naming the component and the fix):

    - each checkpoint entry is a tensor or a state dict (name -> tensor) under a plain name;
    - every parameter is in an entry (the entry holds the parameter itself, as ``state_dict()``
      does, not a copy), or a saved avatar would lose it;
    - every trainable parameter is in one of :meth:`Component.param_groups`, or it never learns.
    """
    where = f"{component.role} component {component.type_name!r} ({type(component).__qualname__})"
    entries = component.checkpoint_entries()
    saved = set()
    for name, entry in entries.items():
        if not name.replace("_", "").isalnum():
            raise PluginContractError(f"{where}: checkpoint entry {name!r} must be a plain name (it becomes "
                                      f"{name}.pt)")
        tensors = _entry_tensors(entry)
        if tensors is None:
            raise PluginContractError(f"{where}: checkpoint entry {name!r} must be a tensor or a state dict (name -> "
                                      f"tensor), got {type(entry).__name__}")
        saved |= {t.untyped_storage().data_ptr() for t in tensors if t.numel()}
    missing = [name for name, p in component.named_parameters()
               if p.numel() and p.untyped_storage().data_ptr() not in saved]
    if missing:
        raise PluginContractError(f"{where}: parameters {missing} are in no checkpoint entry, so a saved avatar "
                                  "would lose them; return them (not copies) from checkpoint_entries() (e.g. "
                                  "{'my_net': self.net.state_dict()}) and restore them in load_checkpoint_entries()")
    grouped = {id(p) for group in component.param_groups() for p in group["params"]}
    untrained = [name for name, p in component.named_parameters() if p.requires_grad and id(p) not in grouped]
    if untrained:
        raise PluginContractError(f"{where}: parameters {untrained} are in no Adam group, so they would never learn; "
                                  "return them from param_groups() (or set requires_grad=False for fixed ones)")
