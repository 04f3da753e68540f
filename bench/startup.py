"""Start-up at real size: time to the first training step, peak RSS and each start-up phase.

    python bench/startup.py [--timesteps 25,250,2500] [--cameras 16] [--work DIR] [--downscale 5]
        [--modes cold,new_run,resumed] [--config configs/tensorial.yaml ...] [--json OUT.json]

NeRSemble's real subjects are 2,000-3,000 timesteps x 16 cameras. This builds such a subject of
N timesteps x 16 cameras from the built-in synthetic one (``scripts/make_synthetic_subject.py``,
one identity at ``--downscale``): every image and mask is a hard link to one of the synthetic
subject's (timestep ``t`` uses the pixels of synthetic timestep ``t mod 8``), every timestep gets
a FLAME file of its own (the synthetic timestep's parameters plus a fixed per-timestep
perturbation of expression, jaw and eyes, so that no two timesteps are the same expression, as
in a real capture). All N x 16 frames train (protocol ``none``); val and test are empty.

For each size it runs ``train.py``'s :class:`Trainer` in a child process and reports, from the
child's start (interpreter start-up and imports included) to the end of the first training step:

- ``cold``: a new output folder, nothing cached anywhere (the subject cache of
  ``AVATAR_CACHE_DIR`` and torch.compile's ``TORCHINDUCTOR_CACHE_DIR``, which the bench points
  into ``--work``, are emptied first);
- ``new_run``: another new output folder and seed of the same subject (what every seed, ablation
  or launch subject pays): whatever the subject cache holds is reused;
- ``resumed``: ``--resume`` of the cold run's folder (its checkpoint at iteration 1).

Phases are timed by wrapping the start-up functions by name (those that do not exist in the code
under test are simply not listed): ``distances`` and ``spectral`` are the expression clustering's
two steps, ``clustering`` the rest of it (cache look-up, expression meshes); ``other`` is the
rest of the start-up (model build, optimisers, config save).
Peak RSS is the child's ``ru_maxrss`` at the first step, ``CPU s`` its user + system CPU time
until then (on a shared machine a steadier figure than the wall time). The table is printed at the end; ``--json``
also writes it. Every size reuses its subject under ``--work`` (built once).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_TIMESTEPS = 4  # per training sequence of the synthetic subject (2 sequences: 8 timesteps)
# (phase, "module:attribute" of the callable to time); several callables may add to one phase.
PHASES = [
    ("imports", None),
    ("load subject", "scene.training.trainer:load_subject"),
    ("check files", "scene.data.subject:Subject.check_files"),
    ("build FLAME", "scene.training.trainer:build_flame"),
    ("precompute meshes", "scene.data.mesh_cache:FlameSequence.precompute"),
    ("clustering", "scene.training.trainer:Trainer._timestep_classes"),
    ("clustering", "scene.training.trainer:Trainer._cluster_settings"),
    ("clustering", "scene.training.trainer:Trainer._cached_timestep_classes"),
    ("distances", "scene.training.class_balance:timestep_distance_matrix"),
    ("distances", "scene.training.class_balance:expression_distance_matrix"),
    ("spectral", "scene.training.class_balance:cluster_timesteps"),
    ("spectral", "scene.training.trainer:cluster_timesteps"),
    ("frame loader", "scene.training.trainer:frame_loader_for"),
    ("load checkpoint", "scene.training.trainer:Trainer._load_latest_readable"),
    ("first step", "scene.training.trainer:Trainer.training_step"),
]
# Phases timed inside another: reported on their own and taken out of it ("clustering" is then
# the rest: cache look-up, expression meshes, labels).
NESTED = {"distances": "clustering", "spectral": "clustering"}
MODES = ("cold", "new_run", "resumed")


class BenchError(Exception):
    """Bad input or a failed child run; printed as one ``error:`` line."""


# ----------------------------------------------------------------------------- the subject


def make_base(work: Path, downscale: int) -> tuple[Path, Path]:
    """The synthetic subject (union folder) and its FLAME pickle, generated once into ``work``."""
    out = work / f"synthetic_ds{downscale}"
    cmd = [sys.executable, str(REPO / "scripts/make_synthetic_subject.py"), "--out", str(out), "--identities", "1",
           "--downscale", str(downscale), "--timesteps", str(BASE_TIMESTEPS), "--train-sequences", "2",
           "--test-timesteps", "2", "--free-timesteps", "2", "--seed", "0", "--quiet"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"make_synthetic_subject.py failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    union = next((out / "s000").glob("UNION_*"))
    return union, out / "flame" / "flame2023.pkl"


def build_subject(base: Path, work: Path, n_timesteps: int, cameras: int) -> Path:
    """A subject of ``n_timesteps`` x ``cameras`` training frames from hard links (see the module
    docstring); reused when its ``bench_manifest.json`` says it is complete."""
    import numpy as np

    root = work / f"subject_T{n_timesteps}_C{cameras}"
    manifest = root / "bench_manifest.json"
    want = {"timesteps": n_timesteps, "cameras": cameras, "base": str(base)}
    if manifest.is_file() and json.loads(manifest.read_text()) == want:
        return root
    if root.exists():
        shutil.rmtree(root)
    seq = root / "seq"
    for sub in ("images", "fg_masks", "flame_param"):
        (seq / sub).mkdir(parents=True)
    records = {}
    for split in ("train", "val"):
        doc = json.loads((base / f"transforms_{split}.json").read_text())
        for rec in doc["frames"]:
            records[(rec["timestep_index"], rec["camera_index"])] = rec
    top = {k: v for k, v in doc.items() if k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    base_ts = sorted({t for t, _ in records})
    base_cams = sorted({c for _, c in records})
    if len(base_cams) < cameras:
        raise BenchError(f"the synthetic subject has {len(base_cams)} cameras, fewer than --cameras {cameras}")
    rng = np.random.default_rng(0)
    frames = []
    for t in range(n_timesteps):
        bt = base_ts[t % len(base_ts)]
        src = records[(bt, base_cams[0])]
        with np.load((base / src["flame_param_path"]).resolve()) as f:
            params = {k: f[k].copy() for k in f.files}
        params["expr"][..., :10] += rng.normal(0.0, 0.3, size=params["expr"][..., :10].shape).astype(params["expr"].dtype)
        params["jaw_pose"][..., 0] += np.float32(rng.uniform(0.0, 0.05))
        params["eyes_pose"] += rng.normal(0.0, 0.02, size=params["eyes_pose"].shape).astype(params["eyes_pose"].dtype)
        np.savez(seq / "flame_param" / f"{t:05d}.npz", **params)
        for c in base_cams[:cameras]:
            rec = dict(records[(bt, c)])
            name = f"{t:05d}_{c:02d}.png"
            os.link((base / rec["file_path"]).resolve(), seq / "images" / name)
            os.link((base / rec["fg_mask_path"]).resolve(), seq / "fg_masks" / name)
            rec.update(timestep_index=t, timestep_index_original=t, timestep_id=f"frame_{t:05d}",
                       file_path=f"seq/images/{name}", fg_mask_path=f"seq/fg_masks/{name}",
                       flame_param_path=f"seq/flame_param/{t:05d}.npz")
            frames.append(rec)
    shutil.copy(base / "canonical_flame_param.npz", root / "canonical_flame_param.npz")
    (root / "transforms_train.json").write_text(json.dumps({**top, "frames": frames}))
    for split in ("val", "test"):
        (root / f"transforms_{split}.json").write_text(json.dumps({**top, "frames": []}))
    manifest.write_text(json.dumps(want))
    return root


# ----------------------------------------------------------------------------- the child


def _resolve(target: str):
    import importlib

    module_name, attr = target.split(":")
    owner = importlib.import_module(module_name)
    parts = attr.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return None, None
    return (owner, parts[-1]) if hasattr(owner, parts[-1]) else (None, None)


def child(args) -> None:
    """One start-up of the Trainer with its phases timed; prints one JSON line."""
    t0 = float(os.environ["BENCH_T0"])
    import resource

    sys.path.insert(0, str(REPO))
    from scene.training.trainer import Trainer, TrainRequest  # noqa: F401  (the imports phase)

    seconds = {"imports": time.time() - t0}
    first_step_end = []

    def wrap(owner, name, phase):
        fn = getattr(owner, name)

        def timed(*a, **k):
            if phase == "first step" and first_step_end:
                return fn(*a, **k)
            start = time.time()
            try:
                return fn(*a, **k)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + time.time() - start
                if phase == "first step":
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    first_step_end.extend([time.time(), usage.ru_maxrss, usage.ru_utime + usage.ru_stime])

        setattr(owner, name, timed)

    for phase, target in PHASES[1:]:
        owner, name = _resolve(target)
        if owner is not None:
            wrap(owner, name, phase)
    overrides = [{"optim": {"iterations": args.iterations}}, {"run": {"seed": args.seed, "save_interval": 1,
                                                                       "device": "cpu"}}]
    request = TrainRequest(model_path=args.model, source_path=args.subject, config_files=args.config,
                           overrides=overrides, flame=args.flame, protocol="none", resume=args.resume, quiet=True)
    import scene.training.trainer as trainer_module

    trainer_module.Trainer(request).train()
    total = first_step_end[0] - t0
    for phase, parent in NESTED.items():
        if phase in seconds:
            seconds[parent] -= seconds[phase]
    seconds["other"] = max(0.0, total - sum(seconds.values()))
    print("BENCH " + json.dumps({"first_step_s": total, "cpu_s": first_step_end[2],
                                 "peak_rss_mb": first_step_end[1] / 1024.0, "phases": seconds}))


def run_child(subject: Path, flame: Path, model: Path, cache: Path, configs: list, seed: int, resume: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--subject", str(subject), "--flame", str(flame),
           "--model", str(model), "--seed", str(seed), "--iterations", "2" if resume else "1"]
    for c in configs:
        cmd += ["--config", c]
    if resume:
        cmd.append("--resume")
    # torch.compile's own cache (the fused distance kernel) lives beside the subject cache, so that
    # "cold" builds the kernel from scratch too.
    env = dict(os.environ, BENCH_T0=repr(time.time()), AVATAR_CACHE_DIR=str(cache),
               TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchError(f"the start-up run in {model} failed (exit {done.returncode}): {' | '.join(tail)}")
    return json.loads(line[len("BENCH "):])


# ----------------------------------------------------------------------------- the table


def table(rows: list) -> str:
    phases = list(dict.fromkeys(p for p, _ in PHASES if any(p in r["phases"] for r in rows))) + ["other"]
    head = ["frames", "mode", "first step s", "CPU s", "peak RSS MB"] + phases
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cpu = f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-"
        cells = [f"{r['frames']:,}", r["mode"], f"{r['first_step_s']:.1f}", cpu, f"{r['peak_rss_mb']:.0f}"]
        cells += [f"{r['phases'][p]:.2f}" if p in r["phases"] else "-" for p in phases]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timesteps", default="25,250,2500", help="comma-separated sizes in timesteps (x --cameras frames)")
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--downscale", type=int, default=5, help="image size of the synthetic subject (5: 110x160)")
    p.add_argument("--work", default=str(Path("/tmp") / "startup_bench"), help="subjects, runs and caches")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--config", action="append", help="method configs (default: configs/tensorial.yaml, demo.yaml)")
    p.add_argument("--json", help="also write the rows here")
    # The child's own arguments (internal).
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    p.add_argument("--flame", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--iterations", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.config = args.config or ["configs/tensorial.yaml", "configs/demo.yaml"]
    if args.child:
        child(args)
        return 0
    try:
        sizes = [int(s) for s in args.timesteps.split(",") if s.strip()]
        modes = [m for m in args.modes.split(",") if m]
        bad = [m for m in modes if m not in MODES]
        if bad or not sizes or min(sizes) < 1:
            raise BenchError(f"--modes must be a subset of {','.join(MODES)} and --timesteps positive integers")
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        base, flame = make_base(work, args.downscale)
        rows = []
        for n in sizes:
            t = time.time()
            subject = build_subject(base, work, n, args.cameras)
            print(f"[bench] subject of {n} timesteps x {args.cameras} cameras ready ({time.time() - t:.0f} s)",
                  file=sys.stderr)
            runs = work / f"runs_T{n}"
            cache = work / f"cache_T{n}"
            shutil.rmtree(runs, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            # Caches other code may keep inside the subject folder itself start empty too.
            shutil.rmtree(subject / ".cache", ignore_errors=True)
            for mode in modes:
                model = runs / ("cold" if mode in ("cold", "resumed") else "new_run")
                if mode == "resumed" and not (runs / "cold").is_dir():
                    run_child(subject, flame, runs / "cold", cache, args.config, 0, resume=False)
                result = run_child(subject, flame, model, cache, args.config, 1 if mode == "new_run" else 0,
                                   resume=mode == "resumed")
                row = {"timesteps": n, "frames": n * args.cameras, "mode": mode, **result}
                rows.append(row)
                print(f"[bench] {n * args.cameras:,} frames, {mode}: first step {result['first_step_s']:.1f} s, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB", file=sys.stderr)
        print(table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
