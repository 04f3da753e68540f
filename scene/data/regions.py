"""Which part of the head each pixel of a frame shows: FLAME's region masks projected with the
frame's own tracked FLAME mesh and camera (evaluate.py's region metrics).

The region of a pixel is the region of the front-most FLAME triangle covering it (a z-buffer
rasterization of the mesh's triangles by :func:`synthetic.mesh_rasterizer.rasterize`, the plain-
PyTorch rasterizer the synthetic generator renders its ground truth with); pixels the mesh does not
cover are ``other``. The four regions, and the FLAME masks (``FLAME_masks.pkl``) each is made of:

============  ==========================================================================================
region        FLAME masks (first listed region wins where masks overlap)
============  ==========================================================================================
face          face, forehead, eye_region, left/right_eye_region, left/right_eyeball, nose, lips, and the
              mouth's inside (teeth, mouth_interior where a model has them; see "openings" below)
hair_scalp    scalp, left_ear, right_ear
neck          neck, boundary (the ring where FLAME's neck is cut off)
other         every pixel the mesh does not cover: background, torso, clothing, and hair that stands
              out beyond FLAME's skull
============  ==========================================================================================

Why this table: FLAME's ``face`` mask already contains the forehead, eyes, nose and lips (the
surface the expression moves, and what GHA and NPGA score on), so face = ``face`` and its parts.
``scalp`` is the top and back of the skull, the surface under the hair: hair that lies on it
projects onto it, hair volume beyond it is ``other``. The forehead stays in face (it is in FLAME's
``face`` and is skin for most subjects; a fringe over it is then an error the face region should
count). The ears go with the scalp: they are rigid (no expression moves them), sit at the side of
the skull and on real subjects are often under the hair, so they are judged with it, not with the
face. ``boundary`` is FLAME's neck cut, so it is neck. :data:`HEAD` (face + hair_scalp, the head
above the neck) is reported as one more region: the pixels of both, scored together.

Vertices in no listed mask (a masks file need not tile the mesh) take the region of the nearest
listed vertex along the mesh's edges; a triangle takes the region most of its three vertices have
(ties: the first in the table). Mask names outside the table are not used.

Openings: FLAME is an open surface (mouth slit, neck cut), so a camera can look into the mesh and
see the inside of a triangle (the interior behind an open mouth). Such a pixel shows what is
inside the opening, not the far wall, so it takes the region of the front-facing pixels around
the opening (a geodesic fill through the opening's pixels): an open mouth is face, a look up the
neck is neck. The rasterization is two-sided for this reason.

The mesh is the subject's own tracking (its ``shape``, ``static_offset`` and per-timestep FLAME
parameters, no teeth), never a model's fine-tuned FLAME: the regions are a property of the ground
truth image, so every model scored on a subject is scored on the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from synthetic.mesh_rasterizer import rasterize

__all__ = ["REGIONS", "MESH_REGIONS", "OTHER", "HEAD", "HEAD_PARTS", "REGION_MASKS", "vertex_regions",
           "face_regions", "region_labels", "region_pixel_masks", "FrameRegions"]

#: Regions in label order (label value = index); the mesh regions come first.
REGIONS = ("face", "hair_scalp", "neck", "other")
MESH_REGIONS = REGIONS[:3]
OTHER = REGIONS.index("other")
#: The union region reported beside the four (run.sh's "head region").
HEAD = "head"
HEAD_PARTS = ("face", "hair_scalp")
#: FLAME mask name -> region (the table of the module docstring; the order is the priority).
REGION_MASKS = {
    "face": ("face", "forehead", "eye_region", "left_eye_region", "right_eye_region", "left_eyeball",
             "right_eyeball", "nose", "lips", "teeth", "mouth_interior"),
    "hair_scalp": ("scalp", "left_ear", "right_ear"),
    "neck": ("neck", "boundary"),
}
_UNSET = len(REGIONS)  # label of a vertex no mask reached yet


def vertex_regions(vertex_masks: dict, faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Region label per vertex from FLAME's vertex masks (:data:`REGION_MASKS`).

    Args:
        vertex_masks: mask name -> (V,) bool (``FLAME.vertex_masks``).
        faces: (F, 3) int64 triangles (for the edge graph that labels unmasked vertices).
        num_vertices: V.

    Returns:
        (V,) int64 index into :data:`REGIONS`; vertices connected to no masked vertex are ``other``.
    """
    label = torch.full((num_vertices,), _UNSET, dtype=torch.int64)
    for region in reversed(MESH_REGIONS):  # the first region of the table is written last: it wins
        for name in reversed(REGION_MASKS[region]):
            if name in vertex_masks:
                label[vertex_masks[name].cpu().bool()] = REGIONS.index(region)
    # Multi-source breadth-first fill along edges; ties go to the lowest label (table order).
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).cpu()
    src = torch.cat([edges[:, 0], edges[:, 1]])
    dst = torch.cat([edges[:, 1], edges[:, 0]])
    while True:
        todo = label == _UNSET
        if not todo.any():
            break
        near = torch.full_like(label, _UNSET).scatter_reduce_(0, dst, label[src], reduce="amin")
        grow = todo & (near != _UNSET)
        if not grow.any():
            break
        label[grow] = near[grow]
    label[label == _UNSET] = OTHER
    return label


def face_regions(vertex_region: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F,) int64 region of each triangle: the one most of its vertices have (ties: table order)."""
    votes = F.one_hot(vertex_region[faces.cpu()], len(REGIONS)).sum(1)    # (F, R)
    return votes.argmax(1)                                               # first maximum wins


def region_labels(verts_cam: torch.Tensor, faces: torch.Tensor, face_region: torch.Tensor, K: torch.Tensor,
                  height: int, width: int) -> torch.Tensor:
    """Region of every pixel of one image (the module's rules: front-most triangle, openings filled).

    Args:
        verts_cam: (V, 3) mesh vertices in the camera's OpenCV frame (x right, y down, z forward).
        faces: (F, 3) int64 triangles wound counter-clockwise seen from outside.
        face_region: (F,) int64 region index per triangle (:func:`face_regions`).
        K: (3, 3) pixel intrinsics (pixel centres at +0.5) for this ``height`` x ``width`` image.

    Returns:
        (H, W) int64 index into :data:`REGIONS`.
    """
    frags = rasterize(verts_cam[None].float(), faces, K[None].float(), height, width,
                      two_sided=torch.ones(faces.shape[0], dtype=torch.bool))
    label = torch.full((height * width,), OTHER, dtype=torch.int64)
    tri = verts_cam.float()[faces[frags.face]]                           # (N, 3, 3)
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    inside = (normal * tri[:, 0]).sum(-1) >= 0                           # the triangle's back is seen
    label[frags.pix] = torch.where(inside, torch.full_like(frags.face, -1), face_region[frags.face])
    label = label.view(height, width)
    if inside.any():
        _fill_openings(label)
    return label


def _fill_openings(label: torch.Tensor) -> None:
    """Give each pixel labelled -1 (the mesh seen from inside) the region of the nearest front-facing
    mesh pixel reached through -1 pixels (8-neighbour steps; ties: table order), in place; -1
    pixels that reach none become ``other``."""
    rows, cols = torch.nonzero(label < 0, as_tuple=True)
    r0, r1 = max(int(rows.min()) - 1, 0), int(rows.max()) + 2
    c0, c1 = max(int(cols.min()) - 1, 0), int(cols.max()) + 2
    crop = label[r0:r1, c0:c1]                                           # a view: written through
    known = F.one_hot(crop.clamp(0, OTHER), len(REGIONS))[..., :OTHER].permute(2, 0, 1).float()
    known *= ((crop >= 0) & (crop != OTHER)).float()[None]
    todo = crop < 0
    while todo.any():
        grown = F.max_pool2d(known[None], 3, stride=1, padding=1)[0]    # (3, h, w)
        reach = todo & (grown.amax(0) > 0)
        if not reach.any():
            break
        pick = grown.argmax(0)                                           # first maximum: table order
        crop[reach] = pick[reach]
        known[:, reach] = F.one_hot(pick[reach], OTHER).T.float()
        todo &= ~reach
    crop[todo] = OTHER


def region_pixel_masks(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Region name -> (..., H, W) bool pixel mask, for the four :data:`REGIONS` and :data:`HEAD`."""
    masks = {name: labels == i for i, name in enumerate(REGIONS)}
    masks[HEAD] = torch.zeros_like(labels, dtype=torch.bool)
    for part in HEAD_PARTS:
        masks[HEAD] |= masks[part]
    return masks


@dataclass
class FrameRegions:
    """Region labels of a subject's frames, from its tracked FLAME meshes.

    Args:
        flame: a ``flame_model.FLAME`` with region masks (teeth off: the tracked mesh as exported).
        frames: image name (``CameraFrame.image_name``) -> (subject, CameraFrame): where each scored
            image comes from.
    """

    flame: object
    frames: dict

    def __post_init__(self):
        faces = self.flame.faces.cpu()
        self.faces = faces
        self.face_region = face_regions(vertex_regions(self.flame.vertex_masks, faces, self.flame.num_vertices),
                                        faces)
        self._verts: dict = {}

    def _vertices(self, subject, timestep: int) -> torch.Tensor:
        """(V, 3) world-space tracked mesh of one timestep (cached: every camera of it shares it)."""
        key = (id(subject), timestep)
        if key not in self._verts:
            if len(self._verts) > 64:
                self._verts.clear()
            params = subject.flame_at(timestep)
            offset = params.get("static_offset")
            if offset is not None:  # exports carry teeth rows (appended last); the mesh here has none
                offset = offset[:, :self.flame.num_vertices]
            with torch.no_grad():
                self._verts[key] = self.flame(params["shape"], params["expr"], params["rotation"],
                                              params["neck_pose"], params["jaw_pose"], params["eyes_pose"],
                                              params["translation"],
                                              static_offset=offset)[0].float().cpu()
        return self._verts[key]

    def labels(self, image_name: str, size: tuple[int, int]) -> torch.Tensor | None:
        """(H, W) int64 region labels of the image called ``image_name`` (its file name or stem), or
        None when the subject has no such frame or the frame's size is not ``size`` = (H, W)."""
        entry = self.frames.get(Path(image_name).stem)
        if entry is None:
            return None
        subject, frame = entry
        if (frame.height, frame.width) != tuple(size):
            return None
        verts = self._vertices(subject, frame.timestep)
        viewmat = frame.viewmat.float().cpu()
        verts_cam = verts @ viewmat[:3, :3].T + viewmat[:3, 3]
        return region_labels(verts_cam, self.faces, self.face_region, frame.K.float().cpu(), frame.height,
                             frame.width)


def model_frame_regions(model_dir: str | Path) -> tuple[dict | None, str]:
    """The region labellers of a trained model folder's scored splits, from its ``config.yaml``
    (the training subject, its FLAME model and masks, the protocol).

    Returns:
        ``({split: FrameRegions}, "")``, or ``(None, why)`` when region metrics cannot be computed
        (no config.yaml, no FLAME masks, the subject folder gone, ...). Splits whose frames are not
        the training subject's (``reenact_*``) are absent from the dict. Under the ``paper``
        protocol ``test`` is the subject's FREE sequence.
    """
    from flame_model import FLAME
    from scene.config import load_saved_config
    from scene.data.datasets import load_sequence, load_subject
    from scene.data.protocols import saved_protocol
    from utils.errors import UserFacingError
    from utils.subject_ids import own_free_sequence

    model_dir = Path(model_dir)
    if not (model_dir / "config.yaml").is_file():
        return None, f"{model_dir} has no config.yaml (not a model trained here), so no FLAME tracking is known"
    try:
        config, extra = load_saved_config(model_dir)
        flame = FLAME(extra.get("flame_model"), extra.get("flame_masks"), n_shape=config.model.n_shape,
                      n_expr=config.model.n_expr, add_teeth=False)
        if flame.masks_path is None:
            return None, (f"no FLAME_masks.pkl beside the FLAME model {flame.model_path} (download "
                          "\"FLAME Vertex Masks\" from https://flame.is.tue.mpg.de and put it there)")
        source = extra.get("source_path")
        if not source:
            return None, f"{model_dir}/config.yaml names no training subject (source_path)"
        if not Path(source).is_dir():
            return None, f"the training subject {source} (config.yaml source_path) is not there any more"
        subject = load_subject(source, resolution_scale=config.run.resolution_scale)
        frames = {f.image_name: (subject, f) for f in subject.all_frames()}
        by_split = {split: FrameRegions(flame, frames) for split in ("train", "val", "test")}
        if saved_protocol(extra) == "paper":
            free, _ = own_free_sequence(source)
            del by_split["test"]
            if free is not None:
                sequence = load_sequence(free, resolution_scale=config.run.resolution_scale)
                by_split["test"] = FrameRegions(flame, {f.image_name: (sequence, f) for f in sequence.all_frames()})
    except UserFacingError as exc:
        return None, str(exc)
    return by_split, ""
