"""Contact sheet of a synthetic subject: a grid of cameras x showcase expressions.

Rows: neutral, brow raise (forehead wrinkles), smile (creases), open jaw, smile + open jaw,
brow furrow + blink (frown lines, closed lids), pucker + gaze. Columns: five cameras across the
arc. Rendered with the same renderer and FLAME layer as the dataset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .appearance import Appearance, ExpressionState
from .blendshapes import BLINK, BROW_FURROW, BROW_RAISE, LIP_PUCKER, SMILE
from .cameras import make_rig
from .dataset import _texture_rows, load_flame, make_identity, rig_framing
from .threads import single_threaded
from .torso import build_torso
from .gt_renderer import GroundTruthRenderer
from .head_model import build_head_model

__all__ = ["SHOWCASE", "render_contact_sheet", "write_contact_sheets"]

# (label, {expression index: value}, jaw opening, eyes (yaw))
SHOWCASE = (
    ("neutral", {}, 0.0, 0.0),
    ("brow raise 2", {BROW_RAISE: 2.0}, 0.0, 0.0),
    ("smile 2", {SMILE: 2.0}, 0.0, 0.0),
    ("jaw 0.35", {}, 0.35, 0.0),
    ("smile+jaw", {SMILE: 1.5}, 0.22, 0.0),
    ("furrow+blink", {BROW_FURROW: 1.6, BLINK: 1.0}, 0.0, 0.0),
    ("pucker+gaze", {LIP_PUCKER: 1.5}, 0.0, 0.3),
)


@single_threaded
def render_contact_sheet(paths: dict, subject: str, cameras=(0, 4, 8, 12, 15), scale: int = 2) -> Image.Image:
    """Render the showcase grid of one subject of a generated dataset.

    Args:
        paths: the dict returned by ``generate_dataset``.
        subject: identity id, e.g. ``"s000"``.
        cameras: camera indices (columns).
        scale: nearest-neighbour upscaling of each tile (for viewing small images).

    Returns:
        PIL RGB image.
    """
    settings = paths["settings"]
    ds = settings["downscale"]
    model = build_head_model()
    flame = load_flame(paths["flame_model"], paths["flame_masks"]).to(torch.float64)
    identity = make_identity(int(subject[1:]), settings["seed"], model, flame.v_template.numpy())
    teeth = flame.teeth
    n = teeth.ring_upper.shape[0]
    appearance = Appearance(model.template, float(np.mean(teeth.vertices[2 * n:4 * n, 1])), identity.look,
                            texture_size=(_texture_rows(ds), 2 * _texture_rows(ds)))
    renderer = GroundTruthRenderer(model.template, flame.faces, flame.v_template, appearance,
                                   supersample=settings["supersample"],
                                   torso=build_torso() if settings.get("torso") else None)
    rig = make_rig(settings["n_cameras"], settings["seed"], **rig_framing(settings))
    cameras = [c for c in cameras if c < rig.num_cameras]
    width, height = rig.image_size(ds)
    viewmats = torch.tensor(rig.viewmats()[cameras], dtype=torch.float32)
    K = torch.tensor(rig.intrinsics(ds)[cameras], dtype=torch.float32)

    label_w = 90
    tile_w, tile_h = width * scale, height * scale
    sheet = Image.new("RGB", (label_w + tile_w * len(cameras), tile_h * len(SHOWCASE)), "white")
    draw = ImageDraw.Draw(sheet)
    shape = torch.tensor(identity.shape, dtype=torch.float64)[None]
    for r, (label, expr_values, jaw, gaze) in enumerate(SHOWCASE):
        expr = torch.zeros(1, 100, dtype=torch.float64)
        for k, v in expr_values.items():
            expr[0, k] = v
        jaw_pose = torch.tensor([[jaw, 0.0, 0.0]], dtype=torch.float64)
        eyes = torch.tensor([[0.0, gaze, 0.0, 0.0, gaze, 0.0]], dtype=torch.float64)
        zeros = torch.zeros(1, 3, dtype=torch.float64)
        with torch.no_grad():
            verts = flame(shape, expr, zeros, zeros, jaw_pose, eyes, zeros,
                          static_offset=torch.tensor(identity.static_offset, dtype=torch.float64))[0]
        images, _ = renderer.render(verts.to(torch.float32), ExpressionState.from_params(expr[0], jaw_pose[0]),
                                    torch.eye(3), viewmats, K, height, width)
        for c in range(len(cameras)):
            tile = Image.fromarray((images[c].numpy() * 255 + 0.5).astype(np.uint8))
            sheet.paste(tile.resize((tile_w, tile_h), Image.NEAREST), (label_w + c * tile_w, r * tile_h))
        draw.text((4, r * tile_h + tile_h // 2 - 6), label, fill=(0, 0, 0))
    return sheet


def write_contact_sheets(paths: dict, progress: bool = True) -> list[str]:
    """Write ``OUT/<id>/contact_sheet.png`` for every subject; returns the file paths."""
    out = []
    for subject in paths["subjects"]:
        target = Path(paths["root"]) / subject / "contact_sheet.png"
        if progress:
            print(f"Rendering contact sheet of {subject}...", flush=True)
        render_contact_sheet(paths, subject).save(target)
        out.append(str(target))
    return out
