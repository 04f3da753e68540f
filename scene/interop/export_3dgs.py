"""The avatar of one frame as a standard 3D Gaussian Splatting file (world space).

Two formats:

**PLY** (what 3DGS writes and the 3DGS viewers / SuperSplat read): binary little-endian, one
``vertex`` element with the float32 properties, in this order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3(K-1)-1)  opacity  scale_0..2  rot_0..3

- ``x y z``: world-space mean (the posed FLAME mesh of the frame); ``nx ny nz``: zeros;
- ``f_dc``: the degree-0 SH coefficient per channel; ``f_rest``: the K-1 higher coefficients,
  channel-major (all R coefficients, then all G, then all B), K = (degree + 1)^2;
- ``opacity``: logit (the frame's opacity offset applied); ``scale``: log of the world scale;
- ``rot``: unit quaternion, w x y z.

A viewer's colour is ``max(SH(d) + 0.5, 0)`` with ``d`` the unit direction from the camera centre
to the mean, in the basis of :mod:`gaussian_renderer.sh` (the 3DGS basis), so the file renders with
our own ``rasterize(sh_degree=degree)``.

**.splat** (the compact web format of antimatter15/splat and the viewers derived from it): 32 bytes
per splat, no header, little-endian, splats sorted by descending ``scale_x scale_y scale_z x
opacity`` (large, opaque splats first, as those viewers expect)::

    bytes  0..11  position   float32 x 3   (world space)
    bytes 12..23  scale      float32 x 3   (linear, not log)
    bytes 24..27  colour     uint8 x 4     R G B = clamp(0.5 + C0 f_dc, 0, 1) x 255, A = opacity x 255
    bytes 28..31  rotation   uint8 x 4     w x y z of the unit quaternion, byte = clamp(q x 128 + 128, 0, 255)
                                           (readers take q = (byte - 128) / 128)

(view-dependent colour is lost: only the DC colour is kept).

Colour: avatars whose colour component stores SH per splat (the GaussianAvatars config) export
their own coefficients (:meth:`GaussianAvatar.export_sh`), as the colour gives them for the exported
frame (an expression-dependent SH colour, GBS-style, adds the frame's blendshape deltas). Any other colour component (the triplane)
gets SH coefficients fitted per splat, by least squares, to its colours
(:meth:`ColorComponent.direction_colors`) over Fibonacci view directions spread over the sphere in
the canonical frame; each direction is mapped into world space exactly as the renderer maps world
view directions back (the geometry's :meth:`canonical_to_world_rotations`: through the splat's
triangle frames, :func:`scene.model.binding.canonical_view_dirs`), so the fitted SH reproduces the
colour for a camera anywhere in that direction. Given the training rig's cameras, the fit weights
directions by their closeness to those cameras' views of the splat (:meth:`SHFit.fit`): degree 3
cannot hold all of the decoder's view dependence, and the decoder only ever learnt those directions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from gaussian_renderer.sh import SH_C0, num_sh_bases, sh_basis
from scene.model.avatar import GaussianAvatar
from utils.errors import InputFileError
from utils.ply_io import read_vertex_table

__all__ = ["ExportedSplats", "fibonacci_sphere", "SHFit", "export_frame", "write_3dgs_ply", "read_3dgs_ply",
           "write_splat", "read_splat", "splat_sort_order"]


@dataclass
class ExportedSplats:
    """World-space splats of one frame, ready to be written.

    Attributes:
        means: (N, 3); quats: (N, 4) unit wxyz; scales: (N, 3) linear; opacity_logit: (N,)
        (canonical logit + the frame's offset); sh: (N, K, 3) SH coefficients, K = (degree + 1)^2;
        sh_degree: the degree of ``sh``; fit_rms: RMS colour error of the SH fit near the cameras'
        view directions (:meth:`SHFit.fit`); fit_rms_sphere: the same over the whole
        sphere, unweighted (both None when the avatar has its own SH).
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacity_logit: torch.Tensor
    sh: torch.Tensor
    sh_degree: int
    fit_rms: float | None = None
    fit_rms_sphere: float | None = None

    @property
    def opacities(self) -> torch.Tensor:
        """(N,) opacity in [0, 1]."""
        return torch.sigmoid(self.opacity_logit)


def fibonacci_sphere(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``n`` unit directions (n, 3) spread evenly over the sphere (Fibonacci lattice)."""
    i = torch.arange(n, dtype=torch.float64, device=device) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).to(dtype)


class SHFit:
    """Least-squares SH coefficients, per splat, of an avatar's colour component (one that stores
    no SH of its own, e.g. the triplane and its decoder).

    The component's colour of every splat for ``n_dirs`` canonical view directions does not depend
    on the frame, so it is evaluated once here (:meth:`ColorComponent.direction_colors`);
    :meth:`fit` maps the directions into a frame's world space and solves the small per-splat
    least-squares problems.

    Args:
        avatar: an avatar whose colour has no SH of its own (``avatar.export_sh`` is None).
        degree: SH degree 0..3 of the fit.
        n_dirs: number of Fibonacci directions (>= (degree + 1)^2).
        chunk: splats per batch (bounds memory: chunk x n_dirs x K values).
    """

    view_sigma_deg = 20.0  # angular reach of a camera's weight in the fit (see fit())
    view_floor = 0.05  # weight of the directions no camera comes near

    def __init__(self, avatar: GaussianAvatar, degree: int = 3, n_dirs: int = 256, chunk: int = 8192):
        if not 0 <= degree <= 3:
            raise InputFileError(f"--sh-degree must be 0, 1, 2 or 3, got {degree}")
        if n_dirs < num_sh_bases(degree):
            raise InputFileError(f"{n_dirs} view directions cannot fit {num_sh_bases(degree)} SH coefficients")
        self.avatar, self.degree, self.chunk = avatar, degree, chunk
        device = avatar.faces.device
        self.dirs = fibonacci_sphere(n_dirs, device=device)  # (D, 3) canonical frame
        with torch.no_grad():
            targets = avatar.color.direction_colors(avatar.canonical_splat_positions(), avatar.gaussians.params,
                                                    self.dirs, avatar.gaussians.binding)
        # (N, D, 3): the decoder's colour minus 0.5 before the clamp at 0 (what SH(d) must equal).
        self.targets = targets

    @torch.no_grad()
    def fit(self, to_world: torch.Tensor, means: torch.Tensor | None = None,
            camera_centers: torch.Tensor | None = None) -> tuple[torch.Tensor, float, float]:
        """SH coefficients for a frame.

        Degree 3 cannot hold all of the paper decoder's view dependence (its view encoding reaches
        frequencies of 8 pi), so where the fit has to give, it should give in directions nobody
        looks from: with ``camera_centers``, each direction's squared error is weighted by how
        close it comes to a direction from which one of those cameras sees the splat (a Gaussian
        of the angle, sigma :attr:`view_sigma_deg`, over a floor :attr:`view_floor` that keeps the
        colour defined all around). The decoder was trained from those directions only.

        Args:
            to_world: (N, 3, 3) each splat's rotation from canonical to the frame's world directions
                (the geometry's ``canonical_to_world_rotations``).
            means: (N, 3) world positions of the splats in the frame (needed with ``camera_centers``).
            camera_centers: (C, 3) world positions of the cameras to favour (the training rig), or
                None for an unweighted fit over the whole sphere.
        Returns:
            sh (N, K, 3) float32; the RMS error of the rendered colours max(SH(d) + 0.5, 0) against
            the decoder's colours over all splats and channels, over the directions near the
            cameras' views (weighted by the Gaussian of the angle, without the floor: the error those
            cameras see) or over the whole sphere without ``camera_centers``; and the RMS over the
            whole sphere, unweighted.
        """
        out, sq_err, weight_sum, sphere_err, count = [], 0.0, 0.0, 0.0, 0
        for start in range(0, to_world.shape[0], self.chunk):
            world = torch.einsum("nij,dj->ndi", to_world[start:start + self.chunk], self.dirs).double()  # (n, D, 3)
            basis = sh_basis(self.degree, world)  # (n, D, K)
            target = self.targets[start:start + self.chunk].double()  # (n, D, 3)
            if camera_centers is None:
                near = torch.ones_like(target[..., :1])
                weight = near
            else:
                seen = torch.nn.functional.normalize(
                    means[start:start + self.chunk, None].double() - camera_centers[None].double(), dim=-1)  # (n, C, 3)
                cos = torch.einsum("ndi,nci->ndc", world, seen).amax(-1).clamp(-1.0, 1.0)  # (n, D)
                angle = torch.rad2deg(torch.acos(cos))
                near = torch.exp(-0.5 * (angle / self.view_sigma_deg) ** 2)[..., None]  # (n, D, 1)
                weight = self.view_floor + (1.0 - self.view_floor) * near
            root = weight.sqrt()
            coeffs = torch.linalg.lstsq(basis * root, target * root).solution  # (n, K, 3)
            error = ((basis @ coeffs + 0.5).clamp_min(0.0) - (target + 0.5).clamp_min(0.0)) ** 2  # (n, D, 3)
            sq_err += float((error * near).sum())
            weight_sum += float(near.sum()) * 3
            sphere_err += float(error.sum())
            count += target.numel()
            out.append(coeffs.float())
        return torch.cat(out), math.sqrt(sq_err / max(weight_sum, 1e-12)), math.sqrt(sphere_err / max(count, 1))


@torch.no_grad()
def export_frame(avatar: GaussianAvatar, vertices: torch.Tensor, motion: dict,
                 sh_fit: SHFit | None = None, sh_degree: int | None = None,
                 camera_centers: torch.Tensor | None = None) -> ExportedSplats:
    """World-space splats of the avatar posed by one frame.

    Args:
        avatar: the avatar.
        vertices: (V, 3) posed mesh of the frame; motion: its FLAME parameters, one tensor per key
            (:func:`flame_model.frame_motion`; expr and jaw_pose drive the opacity offsets).
        sh_fit: required when the colour has no SH of its own and depends on the view direction (the
            triplane: its colour becomes fitted SH); a view-independent colour
            (``ColorComponent.view_dependent`` False) is written as the frame's colours, SH degree 0.
        sh_degree: for colour with its own SH, export only up to this degree (None: all of them).
        camera_centers: (C, 3) world positions of the cameras whose view directions the SH fit
            favours (:meth:`SHFit.fit`); None: the whole sphere alike.
    Returns:
        :class:`ExportedSplats`; means, quats and scales are exactly the avatar's
        (:meth:`GaussianAvatar.splats`).
    """
    # The splats' geometry and opacity do not depend on the camera; colour is handled below.
    splats = avatar.splats(vertices, torch.zeros(3, device=vertices.device), motion)
    logit = avatar.gaussians.params["opacity"].detach() + splats["delta"]
    own = avatar.export_sh(sh_degree)
    if own is not None:
        # The frame's coefficients as the colour gave them for this frame (an expression-dependent
        # SH colour's differ from its neutral own_sh; a static one's are the same), up to the degree.
        frame_sh = splats["sh"][:, :own.shape[1]] if "sh" in splats else own
        sh, rms, rms_sphere = frame_sh.detach(), None, None
        degree = int(round(math.sqrt(sh.shape[1]))) - 1
    elif not avatar.color.view_dependent:
        # The frame's colour, the same from every direction: SH degree 0 of its first three channels.
        sh, rms, rms_sphere, degree = ((splats["colors"][:, :3].detach() - 0.5) / SH_C0)[:, None], None, None, 0
    else:
        if sh_fit is None:
            raise ValueError(f"a {avatar.color.type_name!r} colour has no SH of its own: export it with an SHFit")
        to_world = avatar.geometry.canonical_to_world_rotations(vertices, avatar.gaussians)
        sh, rms, rms_sphere = sh_fit.fit(to_world, splats["means"].detach(), camera_centers)
        degree = sh_fit.degree
    return ExportedSplats(splats["means"].detach(), splats["quats"].detach(), splats["scales"].detach(), logit, sh,
                          degree, rms, rms_sphere)


def write_3dgs_ply(path: str | Path, splats: ExportedSplats) -> None:
    """Write the standard 3DGS PLY (module docstring) of ``splats``."""
    n, k = splats.sh.shape[0], splats.sh.shape[1]
    cpu = lambda t: t.detach().float().cpu().numpy()
    means, sh = cpu(splats.means), cpu(splats.sh)
    rest = sh[:, 1:].transpose(0, 2, 1).reshape(n, 3 * (k - 1))  # channel-major
    columns = [("x", means[:, 0]), ("y", means[:, 1]), ("z", means[:, 2])]
    columns += [(name, np.zeros(n, np.float32)) for name in ("nx", "ny", "nz")]
    columns += [(f"f_dc_{i}", sh[:, 0, i]) for i in range(3)]
    columns += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    columns += [("opacity", cpu(splats.opacity_logit))]
    log_scales = cpu(torch.log(splats.scales))
    columns += [(f"scale_{i}", log_scales[:, i]) for i in range(3)]
    quats = cpu(splats.quats)
    columns += [(f"rot_{i}", quats[:, i]) for i in range(4)]
    data = np.empty(n, dtype=[(name, "<f4") for name, _ in columns])
    for name, values in columns:
        data[name] = values
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(data, "vertex")], byte_order="<").write(str(path))


def read_3dgs_ply(path: str | Path) -> dict:
    """Read a standard 3DGS PLY (any SH degree 0..3) into activated tensors.

    Returns:
        {"means" (N, 3), "quats" (N, 4) wxyz normalised, "scales" (N, 3) = exp(scale_*),
        "opacities" (N,) = sigmoid(opacity), "sh" (N, K, 3), "sh_degree" int}, all float32 CPU.
    """
    required = ["x", "y", "z", "opacity"] + [f"f_dc_{i}" for i in range(3)] + [f"scale_{i}" for i in range(3)] + [
        f"rot_{i}" for i in range(4)]
    ply = read_vertex_table(path, required, "3DGS PLY file")
    degree = ply.sh_degree()
    col = ply.columns
    sh = torch.cat([col("f_dc_0", "f_dc_1", "f_dc_2")[:, None], ply.sh_rest()], 1)
    quats = col(*[f"rot_{i}" for i in range(4)])
    return {"means": col("x", "y", "z"), "quats": quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            "scales": torch.exp(col("scale_0", "scale_1", "scale_2")), "opacities": torch.sigmoid(col("opacity")[:, 0]),
            "sh": sh.contiguous(), "sh_degree": degree}


def splat_sort_order(scales: torch.Tensor, opacities: torch.Tensor) -> torch.Tensor:
    """(N,) indices by descending scale product x opacity (the .splat viewers' order).

    Args:
        scales: (N, 3) linear scales; opacities: (N,) in [0, 1].
    """
    return torch.argsort(-(scales.double().prod(-1) * opacities.double()), stable=True)


def write_splat(path: str | Path, splats: ExportedSplats) -> None:
    """Write the compact web ``.splat`` file (module docstring) of ``splats``."""
    order = splat_sort_order(splats.scales, splats.opacities).cpu()
    cpu = lambda t: t.detach().float().cpu()[order]
    rgb = (0.5 + SH_C0 * cpu(splats.sh)[:, 0]).clamp(0.0, 1.0)
    rgba = torch.cat([rgb, cpu(splats.opacities)[:, None]], 1)
    quats = torch.nn.functional.normalize(cpu(splats.quats), dim=-1)
    record = np.empty(order.shape[0], dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                                             ("rot", "u1", 4)])
    record["position"] = cpu(splats.means).numpy()
    record["scale"] = cpu(splats.scales).numpy()
    record["rgba"] = (rgba * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    record["rot"] = (quats * 128.0 + 128.0).round().clamp(0, 255).to(torch.uint8).numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(record.tobytes())


def read_splat(path: str | Path) -> dict:
    """Read a ``.splat`` file: {"means" (N, 3), "scales" (N, 3), "rgba" (N, 4) in [0, 1],
    "quats" (N, 4) wxyz (not normalised: byte quantisation)}, float32."""
    raw = Path(path).read_bytes()
    if len(raw) % 32:
        raise InputFileError(f"{path}: {len(raw)} bytes is not a whole number of 32-byte splats")
    record = np.frombuffer(raw, dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    return {"means": torch.from_numpy(record["position"].copy()), "scales": torch.from_numpy(record["scale"].copy()),
            "rgba": torch.from_numpy(record["rgba"].astype(np.float32) / 255.0),
            "quats": torch.from_numpy((record["rot"].astype(np.float32) - 128.0) / 128.0)}
