"""scripts/import_gaussian_avatars.py: a GaussianAvatars output folder becomes a model folder of ours.

No GaussianAvatars file exists here, so the test writes one from an avatar trained with the GA
config: splats in GA's PLY layout (local attributes, channel-major f_rest, binding_0), GA's
flame_param.npz (rows indexed by timestep) and GA's face list with the teeth faces in another
order (and some of them with their vertices rotated), then imports it and renders both.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "scripts"))

import export  # noqa: E402
import import_gaussian_avatars  # noqa: E402
import render  # noqa: E402
from flame_model import frame_motion  # noqa: E402
from scene.renderer import reenactment_vertices  # noqa: E402
import train  # noqa: E402
from scene.model.checkpoint import load_model  # noqa: E402
from scene.interop.ga_import import GAImportError, match_faces  # noqa: E402
from scene.model.gaussian_model import BoundGaussians  # noqa: E402


@pytest.fixture(scope="module")
def ga_avatar(tiny, tmp_path_factory):
    """A GA-config avatar (fine-tuned FLAME parameters) with random higher-order SH."""
    model = tmp_path_factory.mktemp("ga_import") / "ga"
    args = ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"], "--config", REPO / "configs/gaussian_avatars.yaml",
            "--config", REPO / "configs/demo.yaml", "--iterations", "4", "--eval", "--quiet"]
    assert train.main(list(map(str, args))) == 0
    ckpt = next((model / "checkpoints").iterdir())
    splats = BoundGaussians.load_ply(ckpt / "splats.ply", load_model(model).avatar.splat_attributes())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        splats.params["shN"].normal_(0, 0.3, generator=g)
    splats.save_ply(ckpt / "splats.ply")
    return model


def write_ga_folder(model: Path, dest: Path, rotate_vertices: int = 0, flip_quads: int = 0,
                    seed: int = 0) -> tuple[Path, Path, int]:
    """Write ``model`` as GaussianAvatars would have saved it; returns (folder, faces.npy, iteration).

    GA's teeth faces are ours permuted; ``rotate_vertices`` of them also list their vertices from
    the second one on (same triangle, another frame); ``flip_quads`` of our teeth quads (two
    consecutive teeth faces sharing an edge) are split along the other diagonal, as GA's hand-made
    teeth faces are in places (other triangles: the splats on them are in those triangles' frames)."""
    loaded = load_model(model)
    flame, g = loaded.flame, loaded.avatar.gaussians
    faces = flame.faces.cpu().numpy()
    base = flame.num_base_faces
    rng = np.random.default_rng(seed)
    perm = np.concatenate([np.arange(base), base + rng.permutation(faces.shape[0] - base)])  # GA face i = our perm[i]
    ga_faces = faces[perm].copy()
    rotated = base + rng.choice(faces.shape[0] - base, rotate_vertices, replace=False)
    ga_faces[rotated] = ga_faces[rotated][:, [1, 2, 0]]
    ours_to_ga = np.argsort(perm)
    changed = set(rotated.tolist())
    for q in rng.choice((faces.shape[0] - base) // 2, flip_quads, replace=False):
        t1, t2 = faces[base + 2 * q], faces[base + 2 * q + 1]
        diagonal = sorted(set(t1) & set(t2))
        assert len(diagonal) == 2  # a quad of the strip
        u, w = int(next(iter(set(t1) - set(diagonal)))), int(next(iter(set(t2) - set(diagonal))))
        for our_face, new in ((base + 2 * q, [u, w, diagonal[0]]), (base + 2 * q + 1, [u, diagonal[1], w])):
            ga_faces[ours_to_ga[our_face]] = new
            changed.add(int(ours_to_ga[our_face]))
    changed = np.array(sorted(changed), dtype=np.int64)
    binding = ours_to_ga[g.binding.cpu().numpy()]

    p = {k: v.detach().cpu().numpy() for k, v in g.params.items()}
    xyz, rot, log_scale = p["xyz"], p["rotation"], p["log_scale"]
    if changed.size:  # GA's local attributes of splats on changed faces are in GA's frame of that face
        from scene.model.binding import local_to_world, triangle_frames, world_to_local, world_to_local_rotation_scale
        canon = loaded.avatar.canonical_vertices
        frames_ours = triangle_frames(canon, torch.from_numpy(faces))
        frames_ga = triangle_frames(canon, torch.from_numpy(ga_faces))
        on = torch.from_numpy(np.isin(binding, changed))
        b_ours, b_ga = g.binding[on], torch.from_numpy(binding)[on]
        with torch.no_grad():
            m, q, s = local_to_world(*frames_ours, b_ours, g.params["xyz"][on], g.params["rotation"][on],
                                     g.params["log_scale"][on])
            xyz, rot, log_scale = xyz.copy(), rot.copy(), log_scale.copy()
            xyz[on.numpy()] = world_to_local(*frames_ga, b_ga, m).numpy()
            q, s = world_to_local_rotation_scale(frames_ga.rotations, frames_ga.scales, b_ga, q, s)
            rot[on.numpy()], log_scale[on.numpy()] = q.numpy(), s.numpy()
        assert on.any()

    n = len(g)
    rest = p["shN"].transpose(0, 2, 1).reshape(n, -1)
    columns = [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])] + [(c, np.zeros(n)) for c in ("nx", "ny", "nz")]
    columns += [(f"f_dc_{i}", p["sh0"][:, 0, i]) for i in range(3)] + [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    columns += [("opacity", p["opacity"])] + [(f"scale_{i}", log_scale[:, i]) for i in range(3)]
    columns += [(f"rot_{i}", rot[:, i]) for i in range(4)] + [("binding_0", binding)]
    data = np.empty(n, dtype=[(name, "f4") for name, _ in columns])
    for name, values in columns:
        data[name] = values
    folder = dest / "point_cloud" / f"iteration_{loaded.iteration}"
    folder.mkdir(parents=True)
    PlyData([PlyElement.describe(data, "vertex")]).write(str(folder / "point_cloud.ply"))

    # GA's FLAME parameters: rows by timestep index; our checkpoint's rows follow the subject's timesteps.
    fine = torch.load(loaded.folder / "flame_params.pt", weights_only=True)
    timesteps = render.Renderer(render.options_from_args(render.parse_args(["-m", str(model), "--quiet"]))).subject.timesteps
    npz = {}
    for key, value in fine.items():
        full = np.zeros((max(timesteps) + 1,) + tuple(value.shape[1:]), np.float32)
        full[timesteps] = value.numpy()
        npz[key] = full
    npz["shape"] = loaded.shape.cpu().numpy()[None]
    npz["static_offset"] = loaded.static_offset.cpu().numpy()[None]
    npz["dynamic_offset"] = np.zeros((max(timesteps) + 1, flame.num_vertices, 3), np.float32)
    np.savez(folder / "flame_param.npz", **npz)
    np.save(dest / "faces.npy", ga_faces)
    return dest, dest / "faces.npy", loaded.iteration


def renders(model: Path) -> list[torch.Tensor]:
    """render.py's images of the val frames and the first test frame."""
    renderer = render.Renderer(render.options_from_args(render.parse_args(["-m", str(model), "--quiet", "--backend", "torch"])))
    frames = renderer.subject.frames["val"] + renderer.subject.frames["test"][:1]
    out = []
    for frame in frames:
        motion = renderer.motion_from(renderer.subject, renderer.fine_tuned)(frame.timestep)
        verts = reenactment_vertices(renderer.model, motion)[0]
        out.append(renderer.render(verts, frame_motion(motion), frame.viewmat, frame.K,
                                   frame.width, frame.height))
    return out


@pytest.mark.parametrize("rotate_vertices, flip_quads", [(0, 0), (12, 0), (6, 20)])
def test_round_trip_renders_the_same_images(ga_avatar, tiny, tmp_path, rotate_vertices, flip_quads):
    folder, faces, iteration = write_ga_folder(ga_avatar, tmp_path / "ga_out", rotate_vertices, flip_quads)
    out = tmp_path / "imported"
    assert import_gaussian_avatars.main([str(folder), "-s", str(tiny["subject"]), "-o", str(out), "--flame",
                                         str(tiny["flame"]), "--ga-faces", str(faces), "--quiet"]) == 0
    original, imported = load_model(ga_avatar), load_model(out)
    assert imported.iteration == iteration and imported.config.model.color.type == "sh"
    if not flip_quads:  # a splat on a GA triangle of another diagonal may land on the quad's other triangle
        assert torch.equal(imported.avatar.gaussians.binding, original.avatar.gaussians.binding)
    a, b = original.avatar.gaussians.params, imported.avatar.gaussians.params
    assert all(torch.equal(a[k], b[k]) for k in ("opacity", "sh0", "shN"))
    if not rotate_vertices and not flip_quads:
        assert all(torch.equal(a[k], b[k]) for k in ("xyz", "rotation", "log_scale"))
    diff = max(float((x - y).abs().max()) for x, y in zip(renders(ga_avatar), renders(out)))
    print(f"GA import round trip ({rotate_vertices} teeth faces with rotated vertices, {flip_quads} quads of the "
          f"other diagonal): max abs difference {diff:.2e}")
    assert diff < 1e-5
    if not rotate_vertices and not flip_quads:  # the imported folder is a model folder like any other
        assert render.main(["-m", str(out), "--split", "val", "--max-frames", "2", "--quiet"]) == 0
        assert len(list((out / "val" / f"ours_{iteration}" / "renders").glob("*.png"))) == 2
        assert export.main(["-m", str(out), "-o", str(tmp_path / "frame.ply"), "--quiet"]) == 0


def test_match_faces_maps_teeth_by_vertex_sets():
    ours = torch.tensor([[0, 1, 2], [1, 2, 3], [4, 5, 6], [5, 6, 7], [6, 7, 8]])
    ga = torch.tensor([[0, 1, 2], [1, 2, 3], [7, 6, 8], [4, 6, 5], [6, 7, 5]])
    assert match_faces(ga, ours, 2).tolist() == [0, 1, 4, 2, 3]


def test_match_faces_puts_a_quad_of_the_other_diagonal_on_the_nearest_face_of_that_quad():
    # Our quad 4-5-7-6 is split along 5-6; GA's along 4-7. Each GA triangle shares two vertices
    # with both of ours: the nearer centroid wins.
    v = torch.tensor([[0.0, 0, 0]] * 4 + [[0, 0, 0], [2, 0, 0], [0, 1, 0], [2, 1, 0], [5, 5, 5]])
    ours = torch.tensor([[0, 1, 2], [1, 2, 3], [4, 5, 6], [5, 7, 6], [6, 7, 8]])
    ga = torch.tensor([[0, 1, 2], [1, 2, 3], [4, 5, 7], [4, 7, 6], [6, 7, 8]])
    # GA's 4-5-7 (centroid 1.33, 0.33) is nearer our 5-7-6 (1.33, 0.67); its 4-7-6 (0.67, 0.67) our 4-5-6.
    assert match_faces(ga, ours, 2, v).tolist() == [0, 1, 3, 2, 4]
    with pytest.raises(GAImportError, match="fewer than two"):
        match_faces(torch.tensor([[0, 1, 2], [1, 2, 3], [0, 4, 8], [5, 7, 6], [6, 7, 8]]), ours, 2, v)


def test_bad_inputs_are_one_error_line(ga_avatar, tiny, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts/import_gaussian_avatars.py"), *map(str, args)],
                              cwd=REPO, capture_output=True, text=True)
    result = run(tmp_path / "nothing", "-s", tiny["subject"], "-o", tmp_path / "o", "--flame", tiny["flame"])
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "point_cloud" in result.stderr
    folder, faces, _ = write_ga_folder(ga_avatar, tmp_path / "ga_out")
    bad = np.load(faces)
    bad[-1] = [0, 1, 2]
    np.save(tmp_path / "bad.npy", bad)
    result = run(folder, "-s", tiny["subject"], "-o", tmp_path / "o", "--flame", tiny["flame"], "--ga-faces",
                 tmp_path / "bad.npy")
    assert result.returncode == 2 and "teeth face" in result.stderr and "Traceback" not in result.stderr
