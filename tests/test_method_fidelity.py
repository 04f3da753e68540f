"""The paper's method and GaussianAvatars as their authors' code has them: the feature lines' box,
the GA config's switches, the opacity reset at densify start, and the training/evaluation protocols."""
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_fixtures import mesh_avatar, sphere_strip  # noqa: E402
from subject_fixtures import write_fake_subject  # noqa: E402

from scene.config import DensifyConfig, resolve_config  # noqa: E402
from scene.data.datasets import load_subject  # noqa: E402
from scene.data.protocols import protocol_splits  # noqa: E402
from scene.model.components import SplatGeometry, padded_box  # noqa: E402
from scene.model.gaussian_model import BoundGaussians  # noqa: E402
from scene.training.densification import BindingAwareDensification  # noqa: E402
from scene.training.optimizer_ops import make_splat_optimizers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _head(box: str):
    """A head-like point set: a 'face' region (front, z > 0) and a scalp (the top, y > 0.8)."""
    verts, faces = sphere_strip(400)
    face_mask = (verts[:, 2] > 0.3) & (verts[:, 1] < 0.5)
    avatar = mesh_avatar(faces, verts, {"opacity": {"box": box, "n_expr_bases": 4, "n_jaw_bases": 2},
                                        "color": {"resolution": 8}}, face_mask=face_mask)
    with torch.no_grad():
        avatar.opacity.lines.expr_lines.normal_()
    return avatar, verts, face_mask


def test_head_box_lets_scalp_splats_change_opacity_and_the_face_box_does_not():
    expr, jaw = torch.tensor([1.0, 0.5, -0.3, 0.2]), torch.zeros(3)
    for box in ("head", "face"):
        avatar, verts, face_mask = _head(box)
        scalp = verts[verts[:, 1] > 0.9]  # the top of the head: outside the face region's box
        assert len(scalp) > 0
        delta = avatar.opacity(SplatGeometry.canonical(scalp), expr, jaw)
        if box == "head":
            assert (delta != 0).all()  # every scalp splat can change opacity with expression
            assert torch.equal(avatar.opacity.box, padded_box(verts, 0.1))
        else:
            assert torch.equal(delta, torch.zeros_like(delta))


def test_gaussian_avatars_config_switches():
    ga = resolve_config([REPO / "configs/gaussian_avatars.yaml"])
    assert ga.optim.train_flame  # GA fine-tunes the per-timestep FLAME parameters
    m = ga.model
    assert (m.geometry.type, m.color.type, m.color.degree, m.opacity.type) == ("flame_bound", "sh", 3, "static")
    assert not ga.sampling.class_balanced
    o, d, g = ga.optim, ga.densify, m.geometry
    assert (o.position_lr_init, o.position_lr_final, o.opacity_lr, o.scaling_lr, o.rotation_lr, m.color.lr) == \
        (5e-3, 5e-5, 0.05, 0.017, 1e-3, 2.5e-3)
    assert (o.lambda_dssim, g.lambda_position, g.threshold_position, g.lambda_scale, g.threshold_scale) == \
        (0.2, 0.01, 1.0, 1.0, 0.6)
    assert (d.densify_from_iter, d.densify_until_iter, d.densification_interval, d.grad_threshold, d.min_opacity,
            d.opacity_reset_interval, d.opacity_reset_at_densify_start) == (10_000, 600_000, 2000, 2e-4, 0.005,
                                                                            60_000, True)
    paper = resolve_config([REPO / "configs/tensorial.yaml"])
    assert paper.model.opacity.penalty.weight_other == 10.0 and not paper.optim.train_flame
    assert paper.model.opacity.hidden_layers == 2 and paper.model.opacity.box == "head"


def test_opacity_reset_at_densify_start_only_with_a_white_background():
    cfg = DensifyConfig(densify_from_iter=10, densify_until_iter=100, densification_interval=1000,
                        opacity_reset_interval=1000)
    for white, expected in ((True, True), (False, False)):
        splats = BoundGaussians.one_per_triangle(6)
        with torch.no_grad():
            splats.params["opacity"].fill_(3.0)
        strategy = BindingAwareDensification(cfg, 1.0, 6, white_background=white)
        optimizers = make_splat_optimizers(splats, {k: 1e-3 for k in splats.params})
        events = strategy.step(10, splats, optimizers, torch.ones(6, 3))
        assert ("opacity_reset" in events) == expected
        assert (splats.opacity.max() < 0.05) == expected
        assert "opacity_reset" not in strategy.step(11, splats, optimizers, torch.ones(6, 3))


def test_protocol_splits(tmp_path):
    fake = write_fake_subject(tmp_path, n_cameras=4, n_timesteps=2, val_camera=1)
    subject = load_subject(fake.union)
    ga, paper, none = (protocol_splits(subject, p) for p in ("ga", "paper", "none"))
    assert ga == {"train": subject.frames["train"], "val": subject.frames["val"], "test": subject.frames["test"]}
    n = lambda frames: len(frames)  # noqa: E731
    assert n(paper["train"]) == n(ga["train"]) + n(ga["test"]) * 3 // 4  # the held-out sequence trains too
    assert n(paper["val"]) == n(ga["val"]) + n(ga["test"]) // 4
    assert all(f.camera_index != 1 for f in paper["train"]) and all(f.camera_index == 1 for f in paper["val"])
    assert paper["test"] == []  # the FREE sequence, another folder
    assert n(none["train"]) == n(ga["train"]) + n(ga["val"]) + n(ga["test"]) and none["val"] == none["test"] == []


def test_train_and_render_under_the_paper_protocol(tmp_path):
    """train.py --protocol paper records it; render.py's test split is the subject's own FREE
    sequence (not another subject's, not the union's held-out sequence)."""
    import shutil

    import render
    import train
    from test_train import SMALL_SCHEDULE
    from flame_fixtures import write_small_flame
    flame_path, nv = write_small_flame(tmp_path / "flame")
    fake = write_fake_subject(tmp_path / "data", n_cameras=4, n_timesteps=2, width=48, height=64, n_vertices=nv,
                              distance=0.6)
    # The union is named like an export (UNION_<id>_...) beside <id>_FREE_... and another id's FREE.
    parent = fake.union.parent
    union = parent / "UNION_s007_v4_DS1"
    fake.union.rename(union)
    seq = next(iter(fake.sequences.values()))
    shutil.copytree(seq, parent / "s007_FREE_v4_DS1")
    shutil.copytree(seq, parent / "s001_FREE_v4_DS1")
    out = tmp_path / "m"
    argv = ["-s", str(union), "-m", str(out), "--flame", str(flame_path), *SMALL_SCHEDULE, "--iterations", "3"]
    argv.remove("--eval")
    assert train.main(argv + ["--protocol", "paper"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["protocol"] == "paper" and saved["eval"] is True
    assert render.main(["-m", str(out), "--split", "test", "--quiet"]) == 0
    renders = sorted((out / "test/ours_3/renders").glob("*.png"))
    free_images = sorted((parent / "s007_FREE_v4_DS1/images").glob("*.png"))
    assert [p.name for p in renders] == [p.name for p in free_images]
    assert len(list((out / "test/ours_3/gt").glob("*.png"))) == len(free_images)
