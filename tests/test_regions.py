"""Region metrics: the pixel regions of a frame (scene/data/regions.py), the metrics over a region
(utils/region_metrics.py) and evaluate.py's region output.

The label tests build meshes whose covered pixels are known exactly: quads given in pixel
coordinates at chosen depths, seen by a camera at the origin (x right, y down, z forward), so a
pixel (row i, column j) is inside a quad [u0, u1] x [v0, v1] when its centre (j + 0.5, i + 0.5) is.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene.data.regions import (HEAD, OTHER, REGIONS, FrameRegions, face_regions, region_labels,
                                region_pixel_masks, vertex_regions)
from utils.region_metrics import region_lpips, region_psnr, region_ssim

REPO = Path(__file__).resolve().parent.parent
FACE, HAIR, NECK = REGIONS.index("face"), REGIONS.index("hair_scalp"), REGIONS.index("neck")
FOCAL = 10.0
K = torch.tensor([[FOCAL, 0.0, 0.0], [0.0, FOCAL, 0.0], [0.0, 0.0, 1.0]])


def quad(u0, v0, u1, v1, z, facing=True):
    """(4, 3) camera-space corners of the pixel rectangle [u0, u1] x [v0, v1] at depth z, and its
    two triangles (2, 3), wound to face the camera (or away from it with ``facing=False``)."""
    corners = torch.tensor([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=torch.float32)
    verts = torch.cat([corners * z / FOCAL, torch.full((4, 1), float(z))], 1)
    tris = torch.tensor([[0, 3, 2], [0, 2, 1]]) if facing else torch.tensor([[0, 2, 3], [0, 1, 2]])
    return verts, tris


def mesh(*quads):
    """Concatenate (verts, tris, region) quads into (V, 3), (F, 3), (F,)."""
    verts, faces, regions, offset = [], [], [], 0
    for v, t, r in quads:
        verts.append(v)
        faces.append(t + offset)
        regions.append(torch.full((t.shape[0],), r))
        offset += v.shape[0]
    return torch.cat(verts), torch.cat(faces), torch.cat(regions)


def box(h, w, rows, cols, value, out=None):
    out = torch.full((h, w), OTHER, dtype=torch.int64) if out is None else out
    out[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = value
    return out


def test_labels_of_known_quads_and_front_most_rule():
    h, w = 9, 10
    front = quad(1.2, 1.2, 4.8, 4.8, z=1.0)     # pixels rows 1..4, cols 1..4
    back = quad(3.2, 2.2, 7.8, 6.8, z=2.0)      # rows 2..6, cols 3..7
    expected = box(h, w, (2, 6), (3, 7), NECK)
    expected = box(h, w, (1, 4), (1, 4), FACE, expected)
    for order in ((front + (FACE,), back + (NECK,)), (back + (NECK,), front + (FACE,))):  # not draw order
        verts, faces, regions = mesh(*order)
        assert torch.equal(region_labels(verts, faces, regions, K, h, w), expected)
    # Swap the depths: the neck quad is now in front where they overlap.
    verts, faces, regions = mesh(quad(1.2, 1.2, 4.8, 4.8, z=2.0) + (FACE,), quad(3.2, 2.2, 7.8, 6.8, z=1.0) + (NECK,))
    expected = box(h, w, (1, 4), (1, 4), FACE)
    expected = box(h, w, (2, 6), (3, 7), NECK, expected)
    assert torch.equal(region_labels(verts, faces, regions, K, h, w), expected)


def test_an_opening_shows_its_rim_region_not_the_inside_wall():
    """A face-region frame around a hole, and behind it a wall seen from its back (the inside of the
    mesh): the hole's pixels are face. A wall seen from its front is a surface: its own region."""
    h, w = 12, 12
    rim = [quad(1.2, 1.2, 10.8, 3.8, 1.0), quad(1.2, 8.2, 10.8, 10.8, 1.0),   # rows 1..3 / 8..10
           quad(1.2, 4.2, 3.8, 7.8, 1.0), quad(8.2, 4.2, 10.8, 7.8, 1.0)]     # cols 1..3 / 8..10
    rim = [q + (FACE,) for q in rim]
    inside = quad(2.2, 2.2, 9.8, 9.8, 3.0, facing=False) + (HAIR,)   # behind the rim, seen from inside
    verts, faces, regions = mesh(*rim, inside)
    labels = region_labels(verts, faces, regions, K, h, w)
    expected = box(h, w, (1, 10), (1, 10), FACE)
    assert torch.equal(labels, expected)
    outside = quad(2.2, 2.2, 9.8, 9.8, 3.0, facing=True) + (HAIR,)
    verts, faces, regions = mesh(*rim, outside)
    labels = region_labels(verts, faces, regions, K, h, w)
    assert torch.equal(labels, box(h, w, (4, 7), (4, 7), HAIR, expected))


def test_vertex_and_triangle_regions_follow_the_table():
    """Priority where masks overlap, unmasked vertices from the nearest masked one along edges,
    triangles by majority."""
    # A strip of 8 vertices 0-1-2-...-7 (triangles (i, i+1, i+2)).
    faces = torch.tensor([[i, i + 1, i + 2] for i in range(6)])
    masks = {"scalp": torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool),
             "face": torch.tensor([0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool),      # face wins over scalp
             "boundary": torch.tensor([0, 0, 0, 0, 0, 0, 0, 1], dtype=torch.bool),
             "some_other_mask": torch.ones(8, dtype=torch.bool)}                    # not in the table
    v = vertex_regions(masks, faces, 8)
    # edges join i to i+1 and i+2: 2, 3 reach vertex 1 (face), 5, 6 reach 7 (neck) in one step;
    # 4 reaches both in two: the table order decides (face)
    assert v.tolist() == [HAIR, FACE, FACE, FACE, FACE, NECK, NECK, NECK]
    assert face_regions(v, faces).tolist() == [FACE, FACE, FACE, FACE, NECK, NECK]
    assert face_regions(torch.tensor([HAIR, FACE, NECK]), torch.tensor([[0, 1, 2]])).tolist() == [FACE]
    assert vertex_regions({}, faces, 8).tolist() == [OTHER] * 8


def test_region_masks_include_head():
    labels = torch.tensor([[FACE, HAIR], [NECK, OTHER]])
    masks = region_pixel_masks(labels)
    assert set(masks) == {*REGIONS, HEAD}
    assert masks[HEAD].tolist() == [[True, True], [False, False]]


# ------------------------------------------------------------------------------------------------
# The metrics over a region
# ------------------------------------------------------------------------------------------------
def test_region_psnr_by_hand_and_absent_region():
    x = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    y = torch.full_like(x, 0.5)
    mask = torch.zeros(1, 4, 5, dtype=torch.bool)
    mask[0, 1, 2] = mask[0, 3, 4] = True
    y[:, :, 1, 2] = 0.1
    y[:, 0, 3, 4], y[:, 1, 3, 4], y[:, 2, 3, 4] = 0.1, 0.2, 0.3   # region MSE (6 * .01 + .04 + .09) / 6
    mse = (4 * 0.01 + 0.04 + 0.09) / 6
    assert float(region_psnr(x, y, mask)) == pytest.approx(10 * np.log10(1 / mse), abs=1e-12)
    assert float(region_psnr(x, y, torch.ones_like(mask))) == pytest.approx(
        10 * np.log10(1 / float(((x - y) ** 2).mean())), abs=1e-12)
    assert torch.isnan(region_psnr(x, y, torch.zeros_like(mask))).all()


def test_region_ssim_and_lpips_of_the_whole_frame_are_the_full_frame_numbers(lpips_weights):
    from utils.image_metrics import ssim, ssim_map
    from utils.lpips import LPIPS

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 64, 48, generator=g), torch.rand(2, 3, 64, 48, generator=g)
    everything = torch.ones(2, 64, 48, dtype=torch.bool)
    for padding in ("same", "valid"):
        smap = ssim_map(x, y, padding=padding)
        assert torch.allclose(region_ssim(smap, everything), ssim(x, y, reduction="none", padding=padding),
                              atol=1e-6)
    # A region: the mean of the map over its pixels (by hand, same padding).
    half = torch.zeros_like(everything)
    half[:, :32] = True
    smap = ssim_map(x, y, padding="same")
    assert torch.allclose(region_ssim(smap, half), smap[:, :, :32].mean(dim=(1, 2, 3)), atol=1e-6)
    lp = LPIPS(net="alex")
    maps = lp.layer_maps(x, y)
    assert torch.equal(LPIPS.reduce(maps), lp(x, y))
    assert torch.allclose(region_lpips(maps, everything), lp(x, y), rtol=1e-6)
    # Two images equal outside the top half: the top half's LPIPS is the larger.
    y2 = x.clone()
    y2[:, :, :32] = y[:, :, :32]
    maps = lp.layer_maps(x, y2)
    assert (region_lpips(maps, half) > region_lpips(maps, ~half)).all()
    assert torch.isnan(region_lpips(maps, torch.zeros_like(half))).all()


# ------------------------------------------------------------------------------------------------
# On the synthetic subject: what the generator knows
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_regions(synthetic_dataset):
    from flame_model import FLAME
    from scene.data.datasets import load_subject

    union = synthetic_dataset["subjects"]["s000"]["union"]
    subject = load_subject(union)
    flame = FLAME(synthetic_dataset["flame_model"], synthetic_dataset["flame_masks"], add_teeth=False)
    return subject, flame, FrameRegions(flame, {f.image_name: (subject, f) for f in subject.all_frames()})


def test_synthetic_frames_mesh_coverage_is_the_generators_matte(synthetic_regions):
    """The generator renders the same FLAME-format mesh (clean tracking): where its matte is fully
    opaque the mesh covers the pixel (a mesh region), where it is empty the pixel is ``other``."""
    subject, _, regions = synthetic_regions
    frames = subject.frames["val"] + subject.frames["test"][::7]
    for frame in frames:
        labels = regions.labels(frame.image_name + ".png", (frame.height, frame.width))
        alpha = subject.load_mask(frame)[..., 0]
        assert ((alpha == 1) == ((labels != OTHER) & (alpha == 1))).all(), frame.image_name
        assert (labels[alpha == 0] == OTHER).all(), frame.image_name
        assert int((alpha == 1).sum()) > 0.2 * alpha.numel()
    assert regions.labels("99999_08.png", (frames[0].height, frames[0].width)) is None   # not a frame
    assert regions.labels(frames[0].image_name, (1, 1)) is None                           # other size


def test_synthetic_frames_regions_where_the_masks_say(synthetic_regions):
    """Deep inside each mask (a vertex whose whole 1-ring is in the region), the vertex nearest the
    frontal camera projects onto a pixel of that region."""
    subject, flame, regions = synthetic_regions
    frame = subject.frames["val"][0]
    labels = regions.labels(frame.image_name, (frame.height, frame.width))
    verts = regions._vertices(subject, frame.timestep)
    cam = verts @ frame.viewmat[:3, :3].T + frame.viewmat[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * torch.stack([frame.K[0, 0], frame.K[1, 1]]) + torch.stack([frame.K[0, 2], frame.K[1, 2]])
    v_region = vertex_regions(flame.vertex_masks, regions.faces, flame.num_vertices)
    faces = regions.faces
    for name, mask_names in (("face", ("nose", "lips")), ("neck", ("neck",))):
        region = REGIONS.index(name)
        mine = torch.zeros(flame.num_vertices, dtype=torch.bool)
        for m in mask_names:
            mine |= flame.vertex_masks[m]
        # vertices on a triangle of another region are on the region's border: not deep inside
        border = torch.zeros(flame.num_vertices, dtype=torch.long).index_add_(
            0, faces.flatten(), (v_region[faces] != region).any(1).repeat_interleave(3).long()) > 0
        bad = border
        candidates = torch.nonzero(mine & ~bad).flatten()
        nearest = candidates[cam[candidates, 2].argmin()]
        col, row = int(uv[nearest, 0]), int(uv[nearest, 1])
        assert labels[row, col] == region, (name, int(nearest))


# ------------------------------------------------------------------------------------------------
# evaluate.py
# ------------------------------------------------------------------------------------------------
def run_eval(*args):
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env=dict(os.environ))


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def region_model(synthetic_dataset, synthetic_regions, tmp_path_factory):
    """A model folder over the synthetic subject: val renders = GT brightened in the face region
    only, plus one image that is not a frame of the subject."""
    subject, _, regions = synthetic_regions
    model = tmp_path_factory.mktemp("region_model") / "model"
    it = model / "val" / "ours_10"
    union = synthetic_dataset["subjects"]["s000"]["union"]
    (model / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (model / "config.yaml").write_text(
        f"config: {{}}\nsource_path: {union}\nflame_model: {synthetic_dataset['flame_model']}\n"
        f"flame_masks: {synthetic_dataset['flame_masks']}\neval: true\nprotocol: ga\n")
    labels = {}
    for frame in subject.frames["val"][:2]:
        gt = np.asarray(subject.load_image_uint8(frame))
        lab = regions.labels(frame.image_name, (frame.height, frame.width)).numpy()
        render = gt.copy()
        face = lab == FACE
        render[face] = np.clip(gt[face].astype(int) + 20, 0, 255).astype(np.uint8)
        _png(it / "gt" / f"{frame.image_name}.png", gt)
        _png(it / "renders" / f"{frame.image_name}.png", render)
        labels[frame.image_name] = lab
    stranger = np.full_like(gt, 128)
    _png(it / "gt" / "99999_08.png", stranger)
    _png(it / "renders" / "99999_08.png", stranger // 2)
    return model, labels


def test_evaluate_writes_region_metrics_beside_unchanged_full_frame(region_model, lpips_weights):
    model, labels = region_model
    proc = run_eval("-m", model, "--lpips", "alex", "--regions", "none")
    assert proc.returncode == 0, proc.stderr
    plain = json.loads((model / "results.json").read_text())
    plain_views = json.loads((model / "per_view.json").read_text())
    assert plain["region_metrics"] == "off (--regions none)" and "regions" not in plain["val"]
    assert "regions (" not in proc.stdout

    proc = run_eval("-m", model, "--lpips", "alex")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((model / "results.json").read_text())
    views = json.loads((model / "per_view.json").read_text())
    assert results["region_metrics"] == "flame masks, tracked mesh"
    # Full frame: byte-identical numbers with and without regions.
    assert {k: results["val"][k] for k in ("PSNR", "SSIM", "LPIPS", "n_images")} == plain["val"]
    for name, v in views["val"].items():
        assert {k: v[k] for k in ("PSNR", "SSIM", "LPIPS")} == plain_views["val"][name]
    regions = results["val"]["regions"]
    assert list(regions) == [HEAD, *REGIONS]
    # The stranger image has no regions; the two frames have every region.
    assert "regions" not in views["val"]["99999_08.png"]
    assert all(regions[r]["n_images"] == 2 for r in regions) and results["val"]["n_images"] == 3
    # Only the face differs: its PSNR by hand from the PNGs; the rest match exactly (inf -> null).
    it = model / "val" / "ours_10"
    for name, lab in labels.items():
        r = np.asarray(Image.open(it / "renders" / f"{name}.png"), dtype=np.float64) / 255
        g = np.asarray(Image.open(it / "gt" / f"{name}.png"), dtype=np.float64) / 255
        mse = ((r - g) ** 2)[lab == FACE].mean()
        scores = views["val"][f"{name}.png"]["regions"]
        assert scores["face"]["PSNR"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-9)
        assert scores["neck"]["PSNR"] is None and scores["hair_scalp"]["PSNR"] is None
        assert scores["neck"]["LPIPS"] < scores["face"]["LPIPS"] and scores["face"]["SSIM"] < 1.0
    assert regions["face"]["PSNR"] == pytest.approx(np.mean([views["val"][f"{n}.png"]["regions"]["face"]["PSNR"]
                                                             for n in labels]), abs=1e-9)
    assert "full frame:" in proc.stdout and "| model | split | region |" in proc.stdout
    assert f"| {model} | val | head |" in proc.stdout and "not frames of the training subject" in proc.stderr

    # The multi-model table carries the region means.
    out = model.parent / "all.json"
    twin = model.parent / "twin"
    if not twin.exists():
        shutil.copytree(model, twin)
    proc = run_eval("-m", model, twin, "--lpips", "alex", "--out", out)
    assert proc.returncode == 0, proc.stderr
    table = json.loads(out.read_text())
    assert table["mean"]["val"]["regions"]["face"]["n_models"] == 2
    assert table["mean"]["val"]["regions"]["face"]["PSNR"] == pytest.approx(regions["face"]["PSNR"], abs=1e-9)
    assert table["models"][str(model)]["region_metrics"] == "flame masks, tracked mesh"


def test_evaluate_without_flame_tracking_skips_regions_with_one_line(region_model, tmp_path, lpips_weights):
    model, _ = region_model
    bare = tmp_path / "bare"
    (bare / "val").mkdir(parents=True)
    os.symlink(model / "val" / "ours_10", bare / "val" / "ours_10")
    proc = run_eval("-m", bare, "--lpips", "alex")
    assert proc.returncode == 0, proc.stderr
    assert sum("region metrics skipped" in ln for ln in proc.stderr.splitlines()) == 1
    assert "no config.yaml" in proc.stderr
    results = json.loads((bare / "results.json").read_text())
    assert results["region_metrics"].startswith("skipped: ") and "regions" not in results["val"]
    proc = run_eval("-m", bare, "--lpips", "alex", "--regions", "flame")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --regions flame") and "Traceback" not in proc.stderr


def test_split_mean_skips_images_where_a_region_is_absent():
    sys.path.insert(0, str(REPO))
    from evaluate import summarize

    views = {"a.png": {"PSNR": 20.0, "SSIM": 0.5, "LPIPS": 0.1,
                       "regions": {"face": {"PSNR": 30.0, "SSIM": 0.9, "LPIPS": 0.2},
                                   "other": {"PSNR": 10.0, "SSIM": 0.1, "LPIPS": 0.5}}},
             "b.png": {"PSNR": 22.0, "SSIM": 0.6, "LPIPS": 0.2,
                       "regions": {"other": {"PSNR": 12.0, "SSIM": 0.3, "LPIPS": 0.7}}}}
    s = summarize(views)
    assert s["regions"]["face"] == {"PSNR": 30.0, "SSIM": 0.9, "LPIPS": 0.2, "n_images": 1}
    assert s["regions"]["other"]["PSNR"] == 11.0 and s["regions"]["other"]["n_images"] == 2
    assert s["regions"]["neck"] == {"PSNR": None, "SSIM": None, "LPIPS": None, "n_images": 0}
    assert s["PSNR"] == 21.0 and s["n_images"] == 2
