"""Import a model trained by GaussianAvatars (Qian et al., CVPR 2024) as a model folder of ours.

GA's output folder holds, per saved iteration N, ``point_cloud/iteration_N/``:

- ``point_cloud.ply``: one ``vertex`` element with ``x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity
  scale_0..2 rot_0..3 binding_0``, every splat in the frame of the triangle it is bound to: local
  position, log of the local scale, local rotation (wxyz), opacity logit, SH coefficients with
  ``f_rest`` channel-major (as 3DGS writes them), and the triangle index ``binding_0``;
- ``flame_param.npz``: GA's fine-tuned FLAME parameters: per-timestep rows (indexed by the
  dataset's ``timestep_index``) of ``expr rotation neck_pose jaw_pose eyes_pose translation``
  (plus ``dynamic_offset`` where present), and the subject's ``shape`` and ``static_offset``.

GA's triangle frame and scale are ours (:mod:`scene.model.binding`), so the local attributes carry over
as they are. Only the face list may differ: GA's is FLAME's faces followed by its 168 teeth faces,
ours FLAME's faces followed by the teeth of :mod:`flame_model.teeth`, built on the same vertex
rows but possibly in another face order and with some quads split along the other diagonal.
:func:`match_faces` maps GA's face indices to ours by the faces' vertex sets (a face of another
diagonal to our face of the same quad). A face whose vertices come in another order, or another
triangle of the quad, has another frame; its splats are re-expressed in our frame on the
canonical mesh (exact for the teeth, which move rigidly).

The result is a model folder with the GaussianAvatars config (``configs/gaussian_avatars.yaml``):
``config.yaml`` naming the subject and FLAME files, and one checkpoint folder
(:mod:`scene.model.checkpoint`) with the splats, the identity and the fine-tuned FLAME parameters, so
``render.py``, ``evaluate.py`` and ``export.py`` work on it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from flame_model import MOTION_KEYS
from scene.config import resolve_config, save_config
from scene.data.datasets import load_subject
from scene.model.avatar import GaussianAvatar, build_context
from scene.model.binding import local_to_world, triangle_frames, world_to_local, world_to_local_rotation_scale
from scene.model.checkpoint import build_flame, save_avatar
from scene.model.gaussian_model import BoundGaussians
from utils.checkpoint import list_checkpoints, write_checkpoint
from utils.errors import InputFileError, MissingFileError
from utils.ply_io import read_vertex_table

GA_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gaussian_avatars.yaml"

__all__ = ["GAImportError", "find_ga_iteration", "read_ga_ply", "read_ga_flame_params", "match_faces",
           "rebind_splats", "import_gaussian_avatars"]


class GAImportError(InputFileError):
    """A GaussianAvatars folder or file that cannot be imported (the message names it and why)."""


def find_ga_iteration(ga_folder: Path, iteration: int | None = None) -> tuple[int, Path]:
    """(N, ``ga_folder/point_cloud/iteration_N``): the given iteration, else the highest saved."""
    root = Path(ga_folder) / "point_cloud"
    found = {}
    if root.is_dir():
        for entry in root.iterdir():
            m = re.fullmatch(r"iteration_(\d+)", entry.name)
            if m and entry.is_dir():
                found[int(m.group(1))] = entry
    if not found:
        raise MissingFileError(f"{ga_folder}: no point_cloud/iteration_N folder; is this a GaussianAvatars output folder?")
    if iteration is None:
        iteration = max(found)
    if iteration not in found:
        raise MissingFileError(f"{ga_folder}: no point_cloud/iteration_{iteration}; saved iterations: {sorted(found)}")
    return iteration, found[iteration]


def read_ga_ply(path: Path) -> dict:
    """GA's ``point_cloud.ply`` as tensors.

    Returns:
        {"xyz" (N, 3), "rotation" (N, 4) wxyz, "log_scale" (N, 3), "opacity" (N,), "sh0" (N, 1, 3),
        "shN" (N, K-1, 3), "binding" (N,) int64 (GA's face indices), "sh_degree" int}.
    """
    required = ["x", "y", "z", "opacity", "binding_0"] + [f"f_dc_{i}" for i in range(3)] + [
        f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    ply = read_vertex_table(path, required, "GaussianAvatars splat file", error=GAImportError,
                            hint="a GaussianAvatars point_cloud.ply has x y z f_dc_* f_rest_* opacity scale_* rot_* "
                                 "binding_0")
    degree = ply.sh_degree(GAImportError)
    binding = np.asarray(ply.vertex["binding_0"])
    if not np.all(binding == np.round(binding)):
        raise GAImportError(f"{path}: binding_0 holds non-integer face indices")
    col = ply.columns
    return {"xyz": col("x", "y", "z"), "rotation": col(*[f"rot_{i}" for i in range(4)]),
            "log_scale": col("scale_0", "scale_1", "scale_2"), "opacity": col("opacity")[:, 0],
            "sh0": col("f_dc_0", "f_dc_1", "f_dc_2")[:, None], "shN": ply.sh_rest(),
            "binding": torch.from_numpy(binding.astype(np.int64)), "sh_degree": degree}


def read_ga_flame_params(path: Path) -> dict:
    """GA's ``flame_param.npz`` as float32 tensors (keys as stored; ``shape`` flattened to (n_shape,),
    ``static_offset`` to (V, 3))."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"GaussianAvatars FLAME parameters not found: {path}")
    try:
        with np.load(path) as data:
            params = {k: torch.from_numpy(np.asarray(data[k], np.float32)) for k in data.files}
    except Exception as exc:
        raise GAImportError(f"{path}: not a readable npz file ({exc})") from None
    missing = [k for k in MOTION_KEYS + ("shape",) if k not in params]
    if missing:
        raise GAImportError(f"{path}: lacks the keys {missing} (GaussianAvatars saves {', '.join(MOTION_KEYS)}, shape, "
                            "static_offset)")
    params["shape"] = params["shape"].reshape(-1)
    if "static_offset" in params:
        params["static_offset"] = params["static_offset"].reshape(-1, 3)
    rows = params["expr"].shape[0]
    bad = [k for k in MOTION_KEYS if params[k].dim() != 2 or params[k].shape[0] != rows]
    if bad:
        raise GAImportError(f"{path}: per-timestep keys {bad} do not have {rows} rows like 'expr'")
    return params


def match_faces(ga_faces: torch.Tensor, our_faces: torch.Tensor, num_base_faces: int,
                vertices: torch.Tensor | None = None) -> torch.Tensor:
    """Our face index of each of GA's faces.

    The first ``num_base_faces`` (FLAME's own) must be the same triangles in the same order. The
    rest (the teeth) are matched by their vertex index sets (the sorted triple), whatever their
    order in either list. GA's teeth quads are not all split along the same diagonal as ours, so a
    teeth face of GA's without a face of ours on the same three vertices goes to our teeth face
    that shares most of its vertices (two: the same quad), the nearest by centroid on
    ``vertices``; its splats are then re-expressed in that face's frame (:func:`rebind_splats`),
    exactly, since a teeth quad moves rigidly.

    Args:
        ga_faces: (F, 3) GA's face list; our_faces: (F, 3) ours; num_base_faces: FLAME's face count.
        vertices: (V, 3) a mesh of the subject (the canonical one) for the centroid tie-break;
            needed only when some teeth face of GA's has no same-vertex face of ours.
    Returns:
        (F,) int64: GA face i is our face ``mapping[i]``.
    Raises:
        GAImportError when the lists differ in length, in the base faces, or a teeth face of GA's
        shares fewer than two vertices with every teeth face of ours.
    """
    ga_faces, our_faces = ga_faces.long().cpu(), our_faces.long().cpu()
    if ga_faces.shape != our_faces.shape:
        raise GAImportError(f"GaussianAvatars' mesh has {ga_faces.shape[0]} faces, ours {our_faces.shape[0]}: "
                            "check --flame and model.add_teeth (GA's FLAME has the teeth)")
    base = slice(0, num_base_faces)
    if not torch.equal(ga_faces[base].sort(1).values, our_faces[base].sort(1).values):
        first = int((ga_faces[base].sort(1).values != our_faces[base].sort(1).values).any(1).nonzero()[0])
        raise GAImportError(f"GaussianAvatars' face {first} {ga_faces[first].tolist()} is not our face {first} "
                            f"{our_faces[first].tolist()}: the FLAME models differ (check --flame)")
    mapping = torch.arange(ga_faces.shape[0])
    ours = {tuple(f): j for j, f in enumerate(our_faces[num_base_faces:].sort(1).values.tolist(), num_base_faces)}
    unmatched = []
    for i, f in enumerate(ga_faces[num_base_faces:].sort(1).values.tolist(), num_base_faces):
        j = ours.get(tuple(f))
        if j is None:
            unmatched.append(i)
        else:
            mapping[i] = j
    if unmatched:
        teeth = our_faces[num_base_faces:]  # (T, 3)
        shared = (ga_faces[unmatched][:, :, None, None] == teeth[None, None]).any(-1).sum(1)  # (U, T)
        if int(shared.max(1).values.min()) < 2:
            first = unmatched[int(shared.max(1).values.argmin())]
            raise GAImportError(f"teeth face {first} {ga_faces[first].tolist()} of GaussianAvatars shares fewer than "
                                "two vertices with every teeth face of ours: the teeth differ (check --flame)")
        if vertices is None:
            raise ValueError("match_faces needs the mesh vertices to place GA's teeth faces that are not ours")
        v = vertices.detach().double().cpu()
        distance = (v[ga_faces[unmatched]].mean(1)[:, None] - v[teeth].mean(1)[None]).norm(dim=-1)  # (U, T)
        distance = torch.where(shared == shared.max(1, keepdim=True).values, distance, torch.inf)
        mapping[unmatched] = num_base_faces + distance.argmin(1)
    return mapping


@torch.no_grad()
def rebind_splats(splats: dict, ga_faces: torch.Tensor, our_faces: torch.Tensor, mapping: torch.Tensor,
                  canonical_vertices: torch.Tensor) -> tuple[dict, int]:
    """Move GA's splats onto our faces.

    Args:
        splats: from :func:`read_ga_ply` (binding = GA face indices).
        ga_faces, our_faces: (F, 3); mapping: (F,) from :func:`match_faces`.
        canonical_vertices: (V, 3) the subject's neutral mesh.
    Returns:
        (splats with our binding and, for faces whose vertex order differs, local attributes
        re-expressed in our frame on the canonical mesh; the number of splats so re-expressed).
    """
    binding = splats["binding"]
    if binding.numel() and (binding.min() < 0 or binding.max() >= ga_faces.shape[0]):
        raise GAImportError(f"binding_0 refers to face {int(binding.max())}, the mesh has {ga_faces.shape[0]} faces")
    out = dict(splats)
    out["binding"] = mapping[binding]
    # GA faces whose frame is not our face's: vertices in another order, or another triangle of a quad.
    reordered = (ga_faces.long() != our_faces.long()[mapping]).any(1)  # (F,) per GA face
    moved = reordered[binding]
    if moved.any():
        ga_frames = triangle_frames(canonical_vertices, ga_faces)
        our_frames = triangle_frames(canonical_vertices, our_faces)
        b_ga, b_ours = binding[moved], out["binding"][moved]
        means, quats, scales = local_to_world(*ga_frames, b_ga, splats["xyz"][moved], splats["rotation"][moved],
                                              splats["log_scale"][moved])
        xyz, rot, log_scale = out["xyz"].clone(), out["rotation"].clone(), out["log_scale"].clone()
        xyz[moved] = world_to_local(*our_frames, b_ours, means)
        rot[moved], log_scale[moved] = world_to_local_rotation_scale(our_frames.rotations, our_frames.scales, b_ours,
                                                                     quats, scales)
        out.update(xyz=xyz, rotation=rot, log_scale=log_scale)
    return out, int(moved.sum())


def _load_faces(path: Path) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"GaussianAvatars face list not found: {path}")
    try:
        faces = np.load(path)
    except Exception as exc:
        raise GAImportError(f"{path}: not a readable .npy file ({exc})") from None
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise GAImportError(f"{path}: expected an (F, 3) integer face list, got {faces.dtype} {faces.shape}")
    return torch.from_numpy(faces.astype(np.int64))


def import_gaussian_avatars(ga_folder: str | Path, subject: str | Path, output: str | Path, iteration: int | None = None,
                            flame_path: str | None = None, masks_path: str | None = None,
                            ga_faces_path: str | None = None, protocol: str = "ga", log=print) -> Path:
    """Write ``output`` (a model folder of ours) from a GaussianAvatars output folder.

    Args:
        ga_folder: GA's model folder (``point_cloud/iteration_N/``).
        subject: the NeRSemble subject folder GA was trained on (its timesteps order the fine-tuned
            FLAME rows; render.py and evaluate.py read its cameras and images).
        output: the new model folder (must not hold a checkpoint yet).
        iteration: GA's iteration to import (default: the highest saved).
        flame_path, masks_path: FLAME files (default: ``flame_model/assets/flame``).
        ga_faces_path: ``.npy`` (F, 3) of GA's face list (FLAME's faces then its teeth faces), to
            map its teeth faces to ours; None assumes GA's teeth faces are ours in our order.
        protocol: saved as the run's protocol (which frames render.py treats as val / test).
    Returns:
        the checkpoint folder written.
    """
    ga_folder, output = Path(ga_folder), Path(output)
    if list_checkpoints(output):
        raise GAImportError(f"{output} already holds a checkpoint; choose another -o folder")
    ga_iteration, folder = find_ga_iteration(ga_folder, iteration)
    splats = read_ga_ply(folder / "point_cloud.ply")
    params = read_ga_flame_params(folder / "flame_param.npz")

    config = resolve_config([GA_CONFIG], [{"model": {"color": {"type": "sh", "degree": splats["sh_degree"]},
                                                     "n_expr": int(params["expr"].shape[1])}}])
    flame = build_flame(config.model, {}, flame_path, masks_path)
    if not config.model.add_teeth or flame.teeth is None:
        raise GAImportError("GaussianAvatars' mesh has teeth; the FLAME model must get them (model.add_teeth)")
    n_shape = config.model.n_shape
    shape = params["shape"][:n_shape]
    if shape.shape[0] < n_shape:
        shape = torch.cat([shape, torch.zeros(n_shape - shape.shape[0])])
    static_offset = params.get("static_offset")
    if static_offset is not None and static_offset.shape[0] not in (flame.num_vertices, flame.num_base_vertices):
        raise GAImportError(f"{folder / 'flame_param.npz'}: static_offset has {static_offset.shape[0]} rows, the FLAME "
                            f"model {flame.num_vertices} (or {flame.num_base_vertices} without teeth)")
    canonical = flame.canonical_vertices(shape, None if static_offset is None else static_offset[None])[0]

    our_faces = flame.faces.cpu()
    if ga_faces_path is None:
        ga_faces = our_faces
        log("[import] no --ga-faces given: GaussianAvatars' teeth faces are taken to be ours, in our order")
    else:
        ga_faces = _load_faces(ga_faces_path)
    mapping = match_faces(ga_faces, our_faces, flame.num_base_faces, canonical)
    splats, moved = rebind_splats(splats, ga_faces, our_faces, mapping, canonical)
    if moved:
        log(f"[import] {moved} splat(s) on faces whose vertices GaussianAvatars orders differently were re-expressed "
            "in our triangle frames (on the canonical mesh)")

    subject_data = load_subject(subject, resolution_scale=config.run.resolution_scale)
    rows = torch.tensor(subject_data.timesteps, dtype=torch.long)
    n_rows = params["expr"].shape[0]
    if rows.numel() and int(rows.max()) >= n_rows:
        raise GAImportError(f"{folder / 'flame_param.npz'} has {n_rows} timesteps, the subject {subject} uses "
                            f"timestep {int(rows.max())}: was GA trained on another subject?")
    fine_tuned = {k: params[k][rows].clone() for k in MOTION_KEYS}
    if "dynamic_offset" in params and params["dynamic_offset"].abs().max() > 0:
        log("[import] warning: GaussianAvatars' dynamic_offset is not supported and is dropped: renders of frames "
            "that used it will differ")

    avatar = GaussianAvatar(config.model, build_context(config.model, flame, canonical))
    gaussians = BoundGaussians(splats["binding"], avatar.splat_attributes())
    for name in ("xyz", "rotation", "log_scale", "opacity", "sh0", "shN"):
        gaussians.params[name].data = splats[name].float().contiguous()
    avatar.gaussians = gaussians
    avatar.set_step(None, config.optim.iterations)

    def writer(target: Path) -> None:
        save_avatar(target, avatar, shape, static_offset)
        torch.save(fine_tuned, target / "flame_params.pt")

    output.mkdir(parents=True, exist_ok=True)
    ckpt = write_checkpoint(output, ga_iteration, writer)
    save_config(config, output / "config.yaml", extra={
        "source_path": str(Path(subject).resolve()), "flame_model": str(Path(flame.model_path).resolve()),
        "flame_masks": None if flame.masks_path is None else str(Path(flame.masks_path).resolve()),
        "eval": protocol != "none", "protocol": protocol,
        "imported_from": {"gaussian_avatars": str(ga_folder.resolve()), "iteration": ga_iteration,
                          "faces": None if ga_faces_path is None else str(Path(ga_faces_path).resolve())}})
    log(f"[import] {len(gaussians)} splats (SH degree {splats['sh_degree']}) and {len(rows)} timesteps of FLAME "
        f"parameters from {folder} -> {ckpt}")
    return ckpt
