"""export.py: standard 3DGS PLY / .splat files of an avatar frame, rendered back by rasterize()."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import export  # noqa: E402
import render  # noqa: E402
import train  # noqa: E402
from gaussian_renderer import rasterize  # noqa: E402
from scene.interop.export_3dgs import read_3dgs_ply, read_splat, splat_sort_order  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.model.gaussian_model import BoundGaussians  # noqa: E402
from flame_model import frame_motion  # noqa: E402
from scene.renderer import reenactment_vertices  # noqa: E402
from test_train import SMALL_SCHEDULE  # noqa: E402


def train_tiny(tiny, model: Path, configs: list, iterations: int) -> Path:
    args = ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"], *configs, "--iterations", str(iterations)]
    assert train.main(list(map(str, args))) == 0
    return model


@pytest.fixture(scope="module")
def models(tiny, tmp_path_factory):
    """A triplane avatar whose feature lines give real opacity offsets, and a GA avatar with
    non-zero higher-order SH (a few steps leave them at zero)."""
    root = tmp_path_factory.mktemp("export")
    tri = train_tiny(tiny, root / "tri", SMALL_SCHEDULE, 6)
    ckpt = next((tri / "checkpoints").iterdir())
    lines = torch.load(ckpt / "feature_lines.pt", weights_only=True)
    g = torch.Generator().manual_seed(0)
    lines = {k: v + torch.randn(v.shape, generator=g) if "line" in k else v for k, v in lines.items()}
    torch.save(lines, ckpt / "feature_lines.pt")

    # The paper's colour decoder encodes the view direction with 4 frequencies up to 8 pi: at
    # initialisation (and in short runs) its view dependence is mostly beyond SH degree 3. With
    # the direction given as is (no frequencies) it is smooth, and the fit must reach 40 dB.
    smooth = train_tiny(tiny, root / "tri_smooth", SMALL_SCHEDULE + ["--set", "model.color.view_pe_freqs=0"], 6)

    ga = train_tiny(tiny, root / "ga", ["--config", REPO / "configs/gaussian_avatars.yaml", "--config",
                                        REPO / "configs/demo.yaml", "--eval", "--quiet"], 4)
    ckpt = next((ga / "checkpoints").iterdir())
    splats = BoundGaussians.load_ply(ckpt / "splats.ply", load_model(ga).avatar.splat_attributes())
    with torch.no_grad():
        splats.params["shN"].normal_(0, 0.3, generator=g)
        splats.params["sh0"].add_(torch.randn(splats.params["sh0"].shape, generator=g) * 0.5)
    splats.save_ply(ckpt / "splats.ply")
    return {"tri": tri, "tri_smooth": smooth, "ga": ga}


def avatar_frame(model: Path, split: str = "val"):
    """render.py's image of the first frame of ``split`` and the avatar's world-space splats."""
    renderer = render.Renderer(render.options_from_args(render.parse_args(["-m", str(model), "--quiet", "--backend", "torch"])))
    frame = renderer.subject.frames[split][0]
    motion = renderer.motion_from(renderer.subject, renderer.fine_tuned)(frame.timestep)
    verts = reenactment_vertices(renderer.model, motion)[0]
    image = renderer.render(verts, frame_motion(motion), frame.viewmat, frame.K, frame.width,
                            frame.height)
    with torch.no_grad():
        splats = renderer.model.avatar.splats(verts, torch.zeros(3), frame_motion(motion))
    return renderer, frame, image, splats


def rasterize_file(path: Path, frame, background) -> torch.Tensor:
    data = read_3dgs_ply(path)
    rgb, _, _ = rasterize(data["means"], data["quats"], data["scales"], data["opacities"], data["sh"],
                          frame.viewmat[None], frame.K[None], frame.width, frame.height, sh_degree=data["sh_degree"],
                          backgrounds=background[None], backend="torch", tile_size=8)
    return rgb[0]


def psnr(a, b):
    return -10 * math.log10(float(((a - b) ** 2).mean()))


def check_geometry(path: Path, splats: dict):
    vertex = PlyData.read(str(path))["vertex"]
    raw = lambda *keys: torch.from_numpy(np.stack([np.asarray(vertex[k]) for k in keys], 1))
    assert vertex.data.dtype.names[:6] == ("x", "y", "z", "nx", "ny", "nz")
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in vertex.data.dtype.names)
    # The stored fields are the avatar's world-space splats of the frame, bit for bit.
    assert torch.equal(raw("x", "y", "z"), splats["means"])
    assert torch.equal(raw("rot_0", "rot_1", "rot_2", "rot_3"), splats["quats"])
    assert torch.equal(raw("scale_0", "scale_1", "scale_2"), torch.log(splats["scales"]))
    data = read_3dgs_ply(path)
    assert torch.equal(data["means"], splats["means"])
    assert torch.allclose(data["quats"], splats["quats"], rtol=0, atol=1e-6)
    assert torch.allclose(data["scales"], splats["scales"], rtol=1e-6, atol=0)
    assert torch.allclose(data["opacities"], splats["opacities"], rtol=0, atol=1e-6)
    assert splats["delta"].abs().max() > 0 or "sh" in splats  # the frame's offsets are in the file


def export_triplane(model: Path, out: Path, *flags: str) -> tuple[float, float, float]:
    """Export the first val frame; (PSNR of the file rasterized vs render.py's image, fit RMS, check PSNR)."""
    assert export.main(["-m", str(model), "-o", str(out), "--camera-split", "val", "--quiet", *flags]) == 0
    renderer, frame, image, splats = avatar_frame(model)
    check_geometry(out, splats)
    data = read_3dgs_ply(out)
    assert data["sh_degree"] == 3 and data["sh"].shape == (splats["means"].shape[0], 16, 3)
    value = psnr(rasterize_file(out, frame, renderer.background), image)
    report = json.loads(out.with_suffix(".json").read_text())
    return value, report["frames"][0]["sh_fit_rms"], report["frames"][0]["check_psnr_db"]


def test_triplane_avatar_exports_fitted_sh_that_renders_like_the_avatar(models, tmp_path):
    value, rms, check = export_triplane(models["tri_smooth"], tmp_path / "smooth.ply")
    print(f"triplane (view_pe_freqs=0) SH fit: RMS {rms:.5f}, PSNR {value:.2f} dB (export's own check {check:.2f})")
    assert value >= 40.0 and abs(check - value) < 1e-4 and 0 <= rms < 0.01
    # The paper's decoder: degree 3 cannot hold all of its view dependence. Over the whole sphere
    # alike, the fit loses ~36 dB worth; weighted towards the rig's views, the rig's cameras see
    # the decoder's colours to 40 dB, and the error the report states is the image's error.
    sphere, sphere_rms, _ = export_triplane(models["tri"], tmp_path / "sphere.ply", "--sphere-fit")
    value, rms, check = export_triplane(models["tri"], tmp_path / "paper.ply")
    report = json.loads((tmp_path / "paper.json").read_text())
    rms_sphere = report["frames"][0]["sh_fit_rms_sphere"]
    print(f"triplane (paper decoder) SH fit: rig-weighted RMS {rms:.5f} (whole sphere {rms_sphere:.5f}), PSNR "
          f"{value:.2f} dB; fitted over the whole sphere alike: RMS {sphere_rms:.5f}, PSNR {sphere:.2f} dB")
    assert value >= 40.0 and value > sphere + 2.0 and abs(check - value) < 1e-4
    assert report["sh_fit_weighting"] == "rig views" and rms < sphere_rms < rms_sphere
    assert abs(sphere + 20 * math.log10(sphere_rms)) < 3.0  # the image error is the fit error the report states


def test_gaussian_avatars_export_is_exact_and_splat_format(models, tmp_path):
    model = models["ga"]
    out = tmp_path / "frame.ply"
    assert export.main(["-m", str(model), "-o", str(out), "--camera-split", "val", "--quiet"]) == 0
    renderer, frame, image, splats = avatar_frame(model)
    check_geometry(out, splats)
    ours = rasterize_file(out, frame, renderer.background)
    diff = float((ours - image).abs().max())
    print(f"GA export: max abs difference {diff:.2e}")
    assert diff < 1e-5
    assert json.loads(out.with_suffix(".json").read_text())["frames"][0]["sh_fit_rms"] is None

    web = tmp_path / "frame.splat"
    assert export.main(["-m", str(model), "-o", str(web), "--format", "splat", "--camera-split", "val", "--quiet"]) == 0
    assert web.stat().st_size == 32 * splats["means"].shape[0]
    got = read_splat(web)
    ply = read_3dgs_ply(out)
    order = splat_sort_order(ply["scales"], ply["opacities"])
    assert torch.equal(got["means"], ply["means"][order])
    assert torch.allclose(got["scales"], ply["scales"][order])
    assert torch.allclose(got["rgba"][:, 3], ply["opacities"][order], atol=0.5 / 255 + 1e-6)
    rgb = (0.5 + 0.28209479177387814 * ply["sh"][order, 0]).clamp(0, 1)
    assert torch.allclose(got["rgba"][:, :3], rgb, atol=0.5 / 255 + 1e-6)
    assert torch.allclose(got["quats"], ply["quats"][order], atol=1 / 128)
    key = (ply["scales"].double().prod(-1) * ply["opacities"].double())[order]
    assert (key[:-1] >= key[1:]).all() and key[0] > key[-1]  # descending scale product x opacity


def test_target_sequence_writes_one_file_per_frame(models, tiny, tmp_path):
    target = next(p for p in Path(tiny["subject"]).parent.iterdir() if p.is_dir() and p != Path(tiny["subject"]))
    out = tmp_path / "seq"
    assert export.main(["-m", str(models["tri"]), "--target", str(target), "-o", str(out), "--sh-degree", "1",
                        "--directions", "32", "--quiet"]) == 0
    report = json.loads((out / "export.json").read_text())
    files = sorted(out.glob("*.ply"))
    assert [f.name for f in files] == [f"{i:05d}.ply" for i in range(len(report["frames"]))] and files
    assert read_3dgs_ply(files[0])["sh"].shape[1] == 4
    assert not torch.equal(read_3dgs_ply(files[0])["means"], read_3dgs_ply(files[-1])["means"])


def test_bad_input_is_one_error_line(models, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "export.py"), *map(str, args)], cwd=REPO,
                              capture_output=True, text=True)
    result = run("-m", models["ga"], "-o", tmp_path / "x.ply", "--timestep", "999")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "999" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("-m", tmp_path / "none", "-o", tmp_path / "x.ply")
    assert result.returncode == 2 and "config.yaml" in result.stderr and "Traceback" not in result.stderr
