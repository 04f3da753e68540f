"""Generate the synthetic FLAME model and NeRSemble-format subjects (``generate_dataset``).

Output layout (docs/DESIGN.md section 1, docs/CONTRACTS.md), with ``<f>`` the downscale factor and ``<n>`` the
camera count (16 by default):

    OUT/flame/flame2023.pkl, OUT/flame/FLAME_masks.pkl
    OUT/<id>/<id>_EXP-<k>_v<n>_DS<f>_whiteBg_staticOffset/   training sequences, k = 1..
    OUT/<id>/<id>_TEST_v<n>_DS<f>_whiteBg_staticOffset/      held-out sequence
    OUT/<id>/<id>_FREE_v<n>_DS<f>_whiteBg_staticOffset/      driving sequence
    OUT/<id>/UNION_<id>_v<n>_DS<f>_whiteBg_staticOffset/     train/val/test JSON + canonical npz
    OUT/synthetic_manifest.json                              settings; written last (= complete)

Each sequence folder holds ``images/``, ``fg_masks/``, ``flame_param/``, ``canonical_flame_param.npz``,
``transforms.json`` and train (cameras != 8) / val (camera 8) / test (empty) splits. All ground
truth geometry is posed through ``flame_model.FLAME`` (teeth on), exactly like the avatar sees it.

With one camera (``n_cameras=1``: a monocular capture, the frontal camera) there is no novel view
to hold out: the union's val split is empty, there is one training sequence, and TEST continues
its take: one talking clip whose first timesteps train (EXP-1) and whose last ones are scored
(TEST), self-reenactment on unseen expressions as monocular avatars are judged.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from utils.errors import UserFacingError

from .appearance import Appearance, ExpressionState, IdentityLook, sample_identity_look
from .cameras import FRONT_CAMERA, CameraRig, make_rig
from .degradation import degrade
from .torso import TORSO_TARGET_Y, build_torso
from .gt_renderer import GroundTruthRenderer
from .head_model import SyntheticHeadModel, build_head_model, write_flame_files
from .head_surface import PART_LEFT_EYE, PART_RIGHT_EYE
from .motion import TRAIN_FOCUS, FlameSequence, add_tracking_noise, make_sequence
from .threads import single_thread_torch
from utils.image_io import write_png

from .subject_writer import frame_entry, transforms_document, write_json, write_npz

__all__ = ["generate_dataset", "SyntheticSettingsError", "DEFAULT_TIMESTEPS", "DEFAULT_EVAL_TIMESTEPS", "GENERATOR_VERSION", "MANIFEST_NAME",
           "sequence_folder_name", "union_folder_name", "Identity", "make_identity", "load_flame"]

GENERATOR_VERSION = 1
DEFAULT_TIMESTEPS = 20        # per training sequence
DEFAULT_EVAL_TIMESTEPS = 10   # TEST and FREE sequences (keeps the default run at ~30 s on 2 cores)
MANIFEST_NAME = "synthetic_manifest.json"


class SyntheticSettingsError(UserFacingError, ValueError):
    """Invalid generator settings (message names the option and the valid range)."""


def sequence_folder_name(subject: str, sequence: str, n_cameras: int, downscale: int) -> str:
    """E.g. ``s000_EXP-1_v16_DS5_whiteBg_staticOffset``."""
    return f"{subject}_{sequence}_v{n_cameras}_DS{downscale}_whiteBg_staticOffset"


def union_folder_name(subject: str, n_cameras: int, downscale: int) -> str:
    """E.g. ``UNION_s000_v16_DS5_whiteBg_staticOffset``."""
    return f"UNION_{subject}_v{n_cameras}_DS{downscale}_whiteBg_staticOffset"


# ----------------------------------------------------------------------------- identities
class Identity:
    """One synthetic subject: FLAME shape, static offset and appearance.

    Attributes:
        name: ``s000``...; shape: (300,) float32; static_offset: (1, V, 3) float32 (V with teeth);
        look: :class:`IdentityLook`.
    """

    def __init__(self, name: str, shape: np.ndarray, static_offset: np.ndarray, look: IdentityLook):
        self.name, self.shape, self.static_offset, self.look = name, shape, static_offset, look


def _static_offset(model: SyntheticHeadModel, canonical: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(1, V, 3) small smooth per-identity offsets (hair volume + a few bumps), teeth rows zero."""
    template = model.template
    num_base = template.vertices.shape[0]
    p = canonical[:num_base]
    centre = np.array([0.0, 0.0, -0.01])
    radial = (p - centre) / np.linalg.norm(p - centre, axis=-1, keepdims=True)
    # Hair volume: a couple of millimetres outward on the upper back of the head.
    hair = np.clip((p[:, 1] - 0.02) / 0.08, 0.0, 1.0) * np.clip((0.06 - p[:, 2]) / 0.08, 0.0, 1.0)
    off = rng.uniform(0.001, 0.003) * hair[:, None] * radial
    for _ in range(4):
        c = p[rng.integers(num_base)]
        sigma = rng.uniform(0.015, 0.04)
        w = np.exp(-0.5 * np.sum((p - c) ** 2, -1) / sigma ** 2)
        off += rng.normal(0.0, 0.0008) * w[:, None] * radial
    # Eyeballs stay rigid: one offset per eyeball.
    for part in (PART_LEFT_EYE, PART_RIGHT_EYE):
        rows = template.part == part
        off[rows] = off[rows].mean(0)
    full = np.zeros((1, canonical.shape[0], 3), dtype=np.float32)
    full[0, :num_base] = off
    return full


def make_identity(index: int, seed: int, model: SyntheticHeadModel, canonical: np.ndarray) -> Identity:
    """Identity ``index`` of a dataset with ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index, 11])
    shape = (rng.normal(0.0, 1.0, 300) * 0.9).astype(np.float32)
    static_offset = _static_offset(model, canonical, rng)
    look = sample_identity_look(rng)
    return Identity(f"s{index:03d}", shape, static_offset, look)


# ----------------------------------------------------------------------------- helpers
def load_flame(model_path, masks_path):
    """The project's FLAME layer with teeth (imported lazily: it is another module's code)."""
    from flame_model import FLAME
    return FLAME(model_path, masks_path, n_shape=300, n_expr=100, add_teeth=True)


def _texture_rows(downscale: int) -> int:
    """Rows of the baked skin texture: texels ~2.5x finer than a pixel on the face."""
    rows = int(math.ceil(1600.0 / downscale / 64.0)) * 64
    return int(min(max(rows, 256), 2048))


def _rotation_matrices(axis_angle: torch.Tensor) -> torch.Tensor:
    from flame_model import axis_angle_to_matrix
    return axis_angle_to_matrix(axis_angle)


def _flame_npz(seq: FlameSequence, t: int, identity: Identity) -> dict:
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return {"translation": f32(seq.translation[t][None]), "rotation": f32(seq.rotation[t][None]),
            "neck_pose": f32(seq.neck_pose[t][None]), "jaw_pose": f32(seq.jaw_pose[t][None]),
            "eyes_pose": f32(seq.eyes_pose[t][None]), "shape": f32(identity.shape),
            "expr": f32(seq.expr[t][None]), "static_offset": f32(identity.static_offset)}


def _canonical_npz(identity: Identity) -> dict:
    z = lambda *s: np.zeros(s, dtype=np.float32)  # noqa: E731
    return {"translation": z(1, 3), "rotation": z(1, 3), "neck_pose": z(1, 3), "jaw_pose": z(1, 3),
            "eyes_pose": z(1, 6), "shape": identity.shape.astype(np.float32), "expr": z(1, 100),
            "static_offset": identity.static_offset.astype(np.float32)}


def _check_settings(seed, n_identities, downscale, n_cameras, timesteps, n_train, noise, test_t, free_t,
                    blur_sigma=0.0, jpeg_quality=0, torso=False) -> None:
    def bad(option, value, rule):
        raise SyntheticSettingsError(f"synthetic data: {option}={value!r} is invalid; {rule}.")
    if not isinstance(seed, int) or seed < 0:
        bad("seed", seed, "use a non-negative integer")
    if n_identities < 1:
        bad("identities", n_identities, "use at least 1")
    if downscale < 1:
        bad("downscale", downscale, "use an integer >= 1 (5 gives 110x160 images)")
    if n_cameras != 1 and n_cameras <= FRONT_CAMERA:
        bad("cameras", n_cameras, f"use 1 (monocular) or at least {FRONT_CAMERA + 1} so that camera {FRONT_CAMERA} "
            "(validation) exists")
    if n_cameras == 1 and n_train != 1:
        bad("train-sequences", n_train, "a monocular subject (cameras=1) has one talking clip: use 1")
    for option, value in (("timesteps", timesteps), ("test timesteps", test_t), ("free timesteps", free_t)):
        if value < 1:
            bad(option, value, "use at least 1")
    if n_train < 1:
        bad("train-sequences", n_train, "use at least 1")
    if noise < 0:
        bad("tracking-noise", noise, "use a value >= 0 (radians)")
    if blur_sigma < 0:
        bad("blur", blur_sigma, "use a value >= 0 (pixels)")
    if not (jpeg_quality == 0 or 1 <= jpeg_quality <= 95):
        bad("jpeg-quality", jpeg_quality, "use 0 (off) or 1..95")
    if not isinstance(torso, bool):
        bad("torso", torso, "use true or false")


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----------------------------------------------------------------------------- main entry
def generate_dataset(out_dir, *, seed: int = 0, n_identities: int = 1, downscale: int = 5, n_cameras: int = 16,
                     timesteps_per_sequence: int = DEFAULT_TIMESTEPS, n_train_sequences: int = 3,
                     tracking_noise: float = 0.0, force: bool = False, progress: bool = True,
                     test_timesteps: int | None = None, free_timesteps: int | None = None,
                     supersample: int = 2, workers: int = 0, blur_sigma: float = 0.0, jpeg_quality: int = 0,
                     torso: bool = False) -> dict:
    """Write the synthetic FLAME model and ``n_identities`` NeRSemble-format subjects.

    Skips the work (and says so) when ``out_dir`` already holds a complete dataset generated with
    the same settings; regenerates when the settings (or the generator version) differ, or with
    ``force``.

    Args:
        out_dir: output folder (created).
        seed: dataset seed (identities, motion, camera jitter). The head *model* is fixed.
        n_identities: subjects ``s000``, ``s001``, ...
        downscale: image downscale factor of the 550 x 802 full resolution (5 -> 110 x 160).
        n_cameras: cameras on the arc (camera 8 is the frontal validation camera); 1: a monocular
            capture (the frontal camera, no validation split, TEST continues the training take;
            ``n_train_sequences`` must be 1).
        timesteps_per_sequence: timesteps of each training sequence.
        n_train_sequences: training sequences ``EXP-1..``.
        tracking_noise: sigma of the noise on the *written* FLAME parameters (radians; see
            :func:`motion.add_tracking_noise`); images always come from the clean parameters.
        force: regenerate even if complete.
        progress: print what happens and show tqdm progress bars.
        test_timesteps, free_timesteps: timesteps of TEST / FREE (default DEFAULT_EVAL_TIMESTEPS = 10).
        supersample: anti-aliasing samples per pixel along each axis.
        workers: processes rendering timesteps in parallel (0: one per CPU core). The output does
            not depend on it: every timestep is rendered the same way in any process.
        blur_sigma: Gaussian blur of the colour images, pixels at the output size (0: none);
        jpeg_quality: JPEG round trip of the colour images (0: none): video-like degradation
            (:mod:`synthetic.degradation`). Mattes stay exact.
        torso: render a static clothed torso below the neck (:mod:`synthetic.torso`; in the
            images and mattes, not in FLAME), with the cameras aimed lower so that it shows.

    Returns:
        ``{"root": str, "flame_model": str, "flame_masks": str, "manifest": str, "settings": dict,
        "subjects": {id: {"union": str, "sequences": {"EXP-1": str, ..., "TEST": str, "FREE": str}}}}``
        with absolute paths.

    Raises:
        SyntheticSettingsError: invalid settings.
    """
    test_timesteps = DEFAULT_EVAL_TIMESTEPS if test_timesteps is None else int(test_timesteps)
    free_timesteps = DEFAULT_EVAL_TIMESTEPS if free_timesteps is None else int(free_timesteps)
    _check_settings(seed, n_identities, downscale, n_cameras, timesteps_per_sequence, n_train_sequences,
                    tracking_noise, test_timesteps, free_timesteps, blur_sigma, jpeg_quality, torso)
    root = Path(out_dir).expanduser().resolve()
    settings = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "n_identities": int(n_identities),
                "downscale": int(downscale), "n_cameras": int(n_cameras),
                "timesteps_per_sequence": int(timesteps_per_sequence), "n_train_sequences": int(n_train_sequences),
                "test_timesteps": test_timesteps, "free_timesteps": free_timesteps,
                "tracking_noise": float(tracking_noise), "supersample": int(supersample)}
    # Recorded only when on, so that the manifests of data generated before they existed stay valid.
    if blur_sigma > 0:
        settings["blur_sigma"] = float(blur_sigma)
    if jpeg_quality > 0:
        settings["jpeg_quality"] = int(jpeg_quality)
    if torso:
        settings["torso"] = True
    say = print if progress else (lambda *a, **k: None)
    paths = _expected_paths(root, settings)
    manifest_path = root / MANIFEST_NAME

    previous = _read_manifest(manifest_path)
    if previous is not None and not force and previous.get("settings") == settings and previous.get("complete") \
            and _all_exist(paths):
        say(f"Synthetic dataset in {root} is complete for these settings; skipping (use --force to regenerate).")
        return paths
    if previous is not None:
        reason = "--force" if force else ("settings changed" if previous.get("settings") != settings else "incomplete")
        say(f"Regenerating synthetic dataset in {root} ({reason}).")
        _remove_generated(root, previous.get("generated", []))
        manifest_path.unlink(missing_ok=True)
    _remove_generated(root, [Path(paths["flame_model"]).parent.name] + list(paths["subjects"]))

    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    with single_thread_torch():
        _generate(root, settings, say, progress, workers or os.cpu_count() or 1)
    generated = ["flame"] + [f"s{i:03d}" for i in range(n_identities)]
    elapsed = time.perf_counter() - start
    size = sum(_folder_size(root / g) for g in generated)
    write_json(manifest_path, {"settings": settings, "complete": True, "generated": generated,
                               "paths": paths, "seconds": round(elapsed, 2), "bytes": size})
    say(f"Synthetic dataset written to {root} in {elapsed:.1f} s ({size / 2 ** 20:.1f} MiB).")
    return paths


def _generate(root: Path, settings: dict, say, progress: bool, workers: int) -> None:
    """Model files and every subject (the body of :func:`generate_dataset`)."""
    n_identities, n_train_sequences = settings["n_identities"], settings["n_train_sequences"]
    timesteps_per_sequence = settings["timesteps_per_sequence"]
    test_timesteps, free_timesteps = settings["test_timesteps"], settings["free_timesteps"]
    n_cameras, downscale, seed = settings["n_cameras"], settings["downscale"], settings["seed"]
    say(f"Building the synthetic FLAME-format head model -> {root / 'flame'}")
    model = build_head_model()
    model_path, masks_path = write_flame_files(model, root / "flame")
    flame = load_flame(model_path, masks_path).to(torch.float64)
    rig = make_rig(n_cameras, seed, **rig_framing(settings))
    canonical = flame.v_template.detach().cpu().numpy()

    total = n_identities * (n_train_sequences * timesteps_per_sequence + test_timesteps + free_timesteps)
    bar = _progress_bar(total, progress)
    for index in range(n_identities):
        identity = make_identity(index, seed, model, canonical)
        say(f"Subject {identity.name}: {n_train_sequences} training sequences x {timesteps_per_sequence} timesteps, "
            f"TEST x {test_timesteps}, FREE x {free_timesteps}, {n_cameras} cameras, "
            f"{rig.image_size(downscale)[0]}x{rig.image_size(downscale)[1]} px", flush=True)
        _write_subject(root, identity, model, flame, rig, settings, bar, workers)
    bar.close()


def rig_framing(settings: dict) -> dict:
    """make_rig's framing for generator ``settings``: aimed lower when the torso is shown."""
    return {"target_y": TORSO_TARGET_Y} if settings.get("torso") else {}


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="rendering timesteps", unit="timestep", disable=not enabled)


def _expected_paths(root: Path, s: dict) -> dict:
    n_cams, ds = s["n_cameras"], s["downscale"]
    subjects = {}
    for i in range(s["n_identities"]):
        sid = f"s{i:03d}"
        names = [f"EXP-{k + 1}" for k in range(s["n_train_sequences"])] + ["TEST", "FREE"]
        subjects[sid] = {"union": str(root / sid / union_folder_name(sid, n_cams, ds)),
                         "sequences": {n: str(root / sid / sequence_folder_name(sid, n, n_cams, ds)) for n in names}}
    return {"root": str(root), "flame_model": str(root / "flame" / "flame2023.pkl"),
            "flame_masks": str(root / "flame" / "FLAME_masks.pkl"), "manifest": str(root / MANIFEST_NAME),
            "settings": dict(s), "subjects": subjects}


def _all_exist(paths: dict) -> bool:
    files = [paths["flame_model"], paths["flame_masks"]]
    for subj in paths["subjects"].values():
        files += [str(Path(subj["union"]) / n) for n in ("transforms_train.json", "transforms_val.json",
                                                         "transforms_test.json", "canonical_flame_param.npz")]
        files += [str(Path(p) / "transforms.json") for p in subj["sequences"].values()]
    return all(Path(f).is_file() for f in files)


def _read_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _remove_generated(root: Path, names) -> None:
    """Remove folders this generator wrote (only plain child names of root: never anything else)."""
    for name in names:
        name = str(name)
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            continue
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)


# ----------------------------------------------------------------------------- one subject
# The renderer of the worker process (set once per process by _start_render_worker).
_WORKER: dict = {}


def _start_render_worker(renderer: GroundTruthRenderer) -> None:
    torch.set_num_threads(1)  # one process per core: threads inside would only contend
    _WORKER["renderer"] = renderer


def _render_timestep(seq_dir: Path, t: int, verts: torch.Tensor, state, head_rot: torch.Tensor,
                     viewmats: torch.Tensor, K: torch.Tensor, height: int, width: int,
                     blur_sigma: float = 0.0, jpeg_quality: int = 0) -> None:
    """Render all cameras of one timestep and write their images (degraded as asked) and mattes (in a worker)."""
    images, alpha = _WORKER["renderer"].render(verts, state, head_rot, viewmats, K, height, width)
    _write_pngs(seq_dir, t, degrade(images.numpy(), blur_sigma, jpeg_quality), alpha.numpy())


class _InlineExecutor:
    """ProcessPoolExecutor's submit/shutdown, run in this process (workers == 1)."""

    def __init__(self, renderer):
        _start_render_worker(renderer)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True) -> None:
        _WORKER.clear()


def _render_pool(renderer: GroundTruthRenderer, workers: int):
    if workers <= 1:
        return _InlineExecutor(renderer)
    # fork: the workers inherit the renderer (textures, mesh) instead of unpickling it.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_render_worker, initargs=(renderer,))


def _write_subject(root: Path, identity: Identity, model: SyntheticHeadModel, flame, rig: CameraRig, settings: dict,
                   bar, workers: int = 1) -> None:
    seed, ds, n_cams = settings["seed"], settings["downscale"], settings["n_cameras"]
    width, height = rig.image_size(ds)
    K = rig.intrinsics(ds)
    K_shared = K.mean(0)
    teeth = flame.teeth
    teeth_middle_y = float(np.mean(teeth.vertices[2 * teeth.ring_upper.shape[0]:4 * teeth.ring_upper.shape[0], 1]))
    appearance = Appearance(model.template, teeth_middle_y, identity.look,
                            texture_size=(_texture_rows(ds), 2 * _texture_rows(ds)))
    renderer = GroundTruthRenderer(model.template, flame.faces, flame.v_template, appearance,
                                   supersample=settings["supersample"],
                                   torso=build_torso() if settings.get("torso") else None)
    viewmats = torch.tensor(rig.viewmats(), dtype=torch.float32)
    K_t = torch.tensor(K, dtype=torch.float32)
    subject_dir = root / identity.name
    index = int(identity.name[1:])

    specs = [(f"EXP-{k + 1}", "train", TRAIN_FOCUS[k % len(TRAIN_FOCUS)], settings["timesteps_per_sequence"])
             for k in range(settings["n_train_sequences"])]
    specs += [("TEST", "test", None, settings["test_timesteps"]), ("FREE", "free", None, settings["free_timesteps"])]
    monocular = n_cams == 1
    if monocular:  # one talking take: EXP-1 its first timesteps, TEST the rest
        n_train, n_test = settings["timesteps_per_sequence"], settings["test_timesteps"]
        take = make_sequence(np.random.default_rng([seed, index, 101]), n_train + n_test, style="free")
        takes = {"EXP-1": take.slice(0, n_train), "TEST": take.slice(n_train, n_train + n_test)}
    degradation = (settings.get("blur_sigma", 0.0), settings.get("jpeg_quality", 0))
    union = {"train": [], "val": [], "test": []}
    offset = 0
    pool = _render_pool(renderer, workers)
    pending = []
    for seq_no, (name, style, focus, num_t) in enumerate(specs):
        seq_dir = subject_dir / sequence_folder_name(identity.name, name, n_cams, ds)
        for sub in ("images", "fg_masks", "flame_param"):
            (seq_dir / sub).mkdir(parents=True, exist_ok=True)
        if monocular and name in takes:
            clean = takes[name]
        else:
            clean = make_sequence(np.random.default_rng([seed, index, 101 + seq_no]), num_t, style=style, focus=focus)
        written = add_tracking_noise(clean, settings["tracking_noise"], np.random.default_rng([seed, index, 501 + seq_no]))
        verts = _pose(flame, identity, clean)
        head_rot = _rotation_matrices(torch.tensor(clean.rotation)) @ _rotation_matrices(torch.tensor(clean.neck_pose))
        frames, union_frames = [], []
        union_prefix = f"../{seq_dir.name}/"
        for t in range(num_t):
            state = ExpressionState.from_params(clean.expr[t], clean.jaw_pose[t])
            job = pool.submit(_render_timestep, seq_dir, t, verts[t], state, head_rot[t].to(torch.float32), viewmats,
                              K_t, height, width, *degradation)
            job.add_done_callback(lambda _: bar.update(1))
            pending.append(job)
            for c in range(n_cams):
                common = dict(timestep_local=t, camera_index=c, camera_id=rig.camera_ids[c], K=K[c], width=width,
                              height=height, c2w=rig.c2w[c])
                frames.append(frame_entry(timestep_index=t, prefix="", **common))
                union_frames.append(frame_entry(timestep_index=offset + t, prefix=union_prefix, **common))
            write_npz(seq_dir / "flame_param" / f"{t:05d}.npz", _flame_npz(written, t, identity))
        _write_splits(seq_dir, frames, K_shared, width, height, identity)
        if style == "train":
            union["train"] += [f for f in union_frames if monocular or f["camera_index"] != FRONT_CAMERA]
            union["val"] += [f for f in union_frames if not monocular and f["camera_index"] == FRONT_CAMERA]
            offset += num_t
        elif style == "test":
            union["test"] += union_frames
            offset += num_t
    for job in pending:
        job.result()  # re-raise any render or write error
    pool.shutdown(wait=True)
    union_dir = subject_dir / union_folder_name(identity.name, n_cams, ds)
    union_dir.mkdir(parents=True, exist_ok=True)
    for split, frames in union.items():
        write_json(union_dir / f"transforms_{split}.json", transforms_document(frames, K_shared, width, height))
    write_npz(union_dir / "canonical_flame_param.npz", _canonical_npz(identity))


def _write_pngs(seq_dir: Path, t: int, images: np.ndarray, alpha: np.ndarray) -> None:
    """images/<t>_<cam>.png and fg_masks/<t>_<cam>.png for all cameras of one timestep."""
    for c in range(images.shape[0]):
        stem = f"{t:05d}_{c:02d}.png"
        write_png(seq_dir / "images" / stem, images[c])
        write_png(seq_dir / "fg_masks" / stem, alpha[c])


def _pose(flame, identity: Identity, seq: FlameSequence) -> torch.Tensor:
    """(T, V, 3) float32 posed vertices of a sequence through the FLAME layer (float64 inside)."""
    d = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        verts = flame(d(identity.shape)[None], d(seq.expr), d(seq.rotation), d(seq.neck_pose), d(seq.jaw_pose),
                      d(seq.eyes_pose), d(seq.translation), static_offset=d(identity.static_offset))
    return verts.to(torch.float32)


def _write_splits(seq_dir: Path, frames: list, K_shared: np.ndarray, width: int, height: int,
                  identity: Identity) -> None:
    """transforms.json (all) and the single-sequence GA splits: train = cameras != 8, val = 8, test = none."""
    write_json(seq_dir / "transforms.json", transforms_document(frames, K_shared, width, height))
    write_json(seq_dir / "transforms_train.json",
               transforms_document([f for f in frames if f["camera_index"] != FRONT_CAMERA], K_shared, width, height))
    write_json(seq_dir / "transforms_val.json",
               transforms_document([f for f in frames if f["camera_index"] == FRONT_CAMERA], K_shared, width, height))
    write_json(seq_dir / "transforms_test.json", transforms_document([], K_shared, width, height))
    write_npz(seq_dir / "canonical_flame_param.npz", _canonical_npz(identity))
