"""Quality benchmark: the tensorial model against the other methods on synthetic subjects.

For every dataset seed (one synthetic subject each) and every method, trains at the demo schedule
(configs/demo.yaml) through train.py under the chosen protocol, renders val (novel views) and test
(self-reenactment: the held-out sequence under ``ga``, the FREE sequence under ``paper``) through
render.py, scores them with evaluate.py (``gaussian-avatars`` metric set unless ``--metrics``),
and prints one Markdown table per protocol in the layout of the CVPR 2025 paper's Table 1 (novel
views, self-reenactment, storage, render FPS at the data's resolution through ``render.py
--benchmark`` on this machine's device, and training time): each seed's row and the mean over
seeds, then the paper's own Table 1 for reference (RTX 4090, NeRSemble, 600k iterations: not
comparable figure for figure), then each method's difference to GaussianAvatars per test
timestep (mean over cameras and seeds), and the commits the rows were trained at.

    python bench/quality.py [--seeds 0 1 2] [--protocol ga paper] [--methods tensorial gaussian_avatars ...]
                            [--out output/bench_quality] [--iterations N] [--jobs 2] [--fresh]
                            [-- extra train.py options]

Each finished run keeps its row (``row.json`` beside the model, with the options it was made with
and the commit it was trained at) and a later invocation with the same options reuses it instead of
rendering and scoring it again (other options, e.g. another ``--iterations``, continue the run;
``--fresh`` retrains), so a table can be gathered run by run, stopped and continued, and printed
whole by one invocation.

Methods are configs of the same code; the ``tensorial_*`` variants each change one thing of the
tensorial config (its ablation rows): the face box instead of the head box, a one-hidden-layer
opacity decoder, the off-face penalty weight 2 instead of 10, inverse-distance jaw weights, the
expression classes balanced half-way (``sampling.balance`` 0.5), NPGA's power-mean densification
statistic (``densify.grad_power`` 2) and its soft opacity decay (``densify.opacity_decay`` 0.01).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_fingerprint import repo_commit  # noqa: E402  (bench/training_fingerprint.py)
from utils.atomic import write_text_atomic  # noqa: E402

#: A finished run's row, beside its model folder.
ROW_FILE = "row.json"
TENSORIAL = ["configs/tensorial.yaml"]
METHODS = {
    # name: (configs, --set overrides)
    "tensorial": (TENSORIAL, []),
    "gaussian_avatars": (["configs/gaussian_avatars.yaml"], []),
    "gaussian_head_avatar": (["configs/gaussian_head_avatar.yaml", "configs/gaussian_head_avatar_demo.yaml"], []),
    "gaussian_blendshapes": (["configs/gaussian_blendshapes.yaml", "configs/gaussian_blendshapes_demo.yaml"], []),
    "gaussianhead": (["configs/gaussianhead.yaml", "configs/gaussianhead_demo.yaml"], []),
    "npga": (["configs/npga.yaml", "configs/npga_demo.yaml"], []),
    "tensorial_face_box": (TENSORIAL, ["model.opacity.box=face"]),
    "tensorial_decoder_1_layer": (TENSORIAL, ["model.opacity.hidden_layers=1"]),
    "tensorial_penalty_weight_2": (TENSORIAL, ["model.opacity.penalty.weight_other=2"]),
    "tensorial_jaw_idw": (TENSORIAL, ["model.opacity.jaw_weighting=idw"]),
    "no_triplane": (TENSORIAL + ["configs/ablation_no_triplane.yaml"], []),
    "no_feature_lines": (TENSORIAL + ["configs/ablation_no_feature_lines.yaml"], []),
    "no_penalty": (TENSORIAL + ["configs/ablation_no_penalty.yaml"], []),
    "no_resampling": (TENSORIAL + ["configs/ablation_no_resampling.yaml"], []),
    "tensorial_balance_half": (TENSORIAL, ["sampling.balance=0.5"]),
    # NPGA's density options on the tensorial method (each alone): the power-mean statistic with
    # e = 2, and the soft opacity decay of 0.01 in place of the hard reset (too-large splats pruned
    # from where configs/tensorial.yaml's first reset falls, as there; the demo schedule reaches
    # neither).
    "tensorial_grad_power_2": (TENSORIAL, ["densify.grad_power=2"]),
    "tensorial_opacity_decay": (TENSORIAL, ["densify.opacity_decay=0.01", "densify.opacity_reset_interval=0",
                                            "densify.prune_large_after_iter=60000"]),
    # configs/demo.yaml's departures from the paper config, each undone alone (the convergence
    # study, bench/convergence.py): the paper's head box for the lines, its opacity penalty
    # lambda 1.0, its opacity decoder rate 1e-4.
    "tensorial_head_box": (TENSORIAL, ["model.opacity.box=head"]),
    "tensorial_paper_penalty": (TENSORIAL, ["model.opacity.penalty.lambda_opacity=1.0"]),
    "tensorial_paper_decoder_lr": (TENSORIAL, ["model.opacity.mlp_lr=1e-4"]),
}


def run(cmd: list[str], env: dict | None = None, log: Path | None = None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    if log is None:
        subprocess.run(cmd, cwd=REPO, check=True, env=env)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        res = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        # The cause is the log's last lines (a refused --resume of a run whose options changed
        # since, say: the bench's --fresh trains it again).
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}; the end of {log}:\n" + "\n".join(tail))


def dataset(seed: int, data_root: Path, preset: str = "demo") -> tuple[Path, Path]:
    """(union subject folder, FLAME pickle) of the synthetic subject of ``seed`` made with
    ``scripts/make_synthetic_subject.py --preset preset`` (generated once)."""
    folder = data_root / f"seed{seed}"
    run([sys.executable, "scripts/make_synthetic_subject.py", "--out", str(folder), "--seed", str(seed), "--preset",
         preset, "--quiet"])
    return next((folder / "s000").glob("UNION_s000_*")), folder / "flame" / "flame2023.pkl"


def train_options(method: str, protocol: str, train_extra: list | None = None) -> list[str]:
    """The train.py options that make ``method``'s run under ``protocol`` (besides its data, output
    and --quiet / --resume): its configs, the demo schedule, its --set overrides, ``train_extra``."""
    configs, sets = METHODS[method]
    return (["--protocol", protocol] + [c for cfg in configs + ["configs/demo.yaml"] for c in ("--config", cfg)]
            + [c for s in sets for c in ("--set", s)] + [str(a) for a in train_extra or []])


def run_spec(method: str, protocol: str, train_extra: list | None, splits, metrics: str, fps_frames: int) -> dict:
    """What a kept row was made with: a row is reused only for the same training, splits, metric
    set and FPS timing (another ``--iterations``, say, continues the run and scores it again)."""
    return {"train": train_options(method, protocol, train_extra), "splits": list(splits), "metrics": metrics,
            "fps_frames": fps_frames}


def train_render_score(method: str, model: Path, subject: Path, flame: Path, protocol: str, threads: int, *,
                       metrics: str = "gaussian-avatars", splits: tuple = ("val", "test"), fresh: bool = False,
                       train_extra: list | None = None, fps_frames: int = 10) -> dict:
    """Train ``method`` (a key of :data:`METHODS`, with the demo schedule) into ``model`` (resumed
    where a run is there), render and score ``splits`` (with the FLAME region metrics), and time
    ``render.py --benchmark`` over ``fps_frames`` frames (0: not timed). Logs go to
    ``model.parent/logs``. Returns ``{"method", "results", "per_view", "splats", "train_seconds",
    "wall_seconds", "storage_bytes", "fps", "device"}`` (``fps``/``device`` None when not timed)."""
    if fresh and model.exists():
        shutil.rmtree(model)
    cmd = [sys.executable, "train.py", "-s", str(subject), "-m", str(model), "--flame", str(flame), "--quiet",
           *train_options(method, protocol, train_extra)]
    if (model / "checkpoints").is_dir():
        cmd.append("--resume")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    logs = model.parent / "logs"
    t0 = time.time()
    run(cmd, env, logs / f"{method}_train.log")
    wall = time.time() - t0
    run([sys.executable, "render.py", "-m", str(model), "--split", *splits, "--quiet"], env,
        logs / f"{method}_render.log")
    run([sys.executable, "evaluate.py", "-m", str(model), "--split", *splits, "--metrics", metrics],
        env, logs / f"{method}_evaluate.log")
    fps = device = None
    if fps_frames > 0:
        run([sys.executable, "render.py", "-m", str(model), "--benchmark", "--benchmark-frames", str(fps_frames),
             "--quiet"], env, logs / f"{method}_benchmark.log")
        bench = json.loads((model / "benchmark.json").read_text())
        fps, device = bench["fps"], bench["device"]
    results = json.loads((model / "results.json").read_text())
    per_view = json.loads((model / "per_view.json").read_text())
    summary = json.loads((model / "train_summary.json").read_text())
    storage = json.loads((model / "storage.json").read_text())
    return {"method": method, "results": results, "per_view": per_view, "splats": summary["splats"],
            "train_seconds": summary["train_seconds"], "wall_seconds": wall, "storage_bytes": storage["total_bytes"],
            "fps": fps, "device": device}


def kept_row(model: Path, spec: dict, fresh: bool = False) -> dict | None:
    """The row a finished run of ``model`` kept (:func:`keep_row`) with this ``spec``
    (:func:`run_spec`), or None when it is to be run: none kept, kept for another spec, or
    ``fresh``."""
    done = model / ROW_FILE
    if fresh or not done.is_file():
        return None
    row = json.loads(done.read_text())
    return row if row.get("spec") == spec else None


def keep_row(model: Path, row: dict, spec: dict) -> dict:
    """Write ``row`` beside ``model`` with its ``spec`` and the commit it was made at (a stopped
    bench never leaves half a row); returns the row as kept."""
    row = {**row, "spec": spec, "commit": repo_commit() or None}
    write_text_atomic(model / ROW_FILE, json.dumps(row, indent=2))
    return row


def train_and_score(method: str, seed: int, protocol: str, args, subject: Path, flame: Path, threads: int) -> dict:
    model = REPO / args.out / protocol / f"seed{seed}" / method
    extra = (["--iterations", str(args.iterations)] if args.iterations else []) + args.train_args
    splits = ("val", "test")
    spec = run_spec(method, protocol, extra, splits, args.metrics, args.fps_frames)
    kept = kept_row(model, spec, args.fresh)
    if kept is not None:
        return kept
    row = train_render_score(method, model, subject, flame, protocol, threads, metrics=args.metrics, splits=splits,
                             fresh=args.fresh, train_extra=extra, fps_frames=args.fps_frames)
    return keep_row(model, {**row, "seed": seed, "protocol": protocol}, spec)


def commits_line(rows: list[dict]) -> str:
    """Which commits the rows were trained at (and how many each): rows kept from an earlier
    invocation may come from an earlier commit."""
    counts = defaultdict(int)
    for r in rows:
        counts[(r.get("commit") or "unknown")[:12]] += 1
    return "Rows trained at commit " + ", ".join(f"{c} ({n})" for c, n in sorted(counts.items())) + "."


#: The CVPR 2025 paper's Table 1 (NeRSemble, 600k iterations, FPS on an RTX 4090): NVS and
#: self-reenactment PSNR / SSIM / LPIPS, storage, FPS.
PAPER_TABLE_1 = (
    ("GA", 31.4702, 0.9489, 0.05144, 27.2678, 0.9230, 0.06668, "21 MB", 330),
    ("GHA", 26.9932, 0.9347, 0.04905, 22.7397, 0.8895, 0.07995, "120 MB", 20),
    ("GBS", 28.8966, 0.9500, 0.06311, 25.9797, 0.9270, 0.08099, "2 GB", 370),
    ("Ours (tensorial)", 32.9688, 0.9506, 0.05940, 28.0688, 0.9259, 0.07724, "10 MB", 300),
)


def paper_table() -> str:
    out = ["The paper's Table 1, for reference (its data, schedule and GPU; not comparable figure for figure):", "",
           "| method | NVS PSNR | NVS SSIM | NVS LPIPS | self-reen. PSNR | self-reen. SSIM | self-reen. LPIPS | storage "
           "| FPS (RTX 4090) |", "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {m} | {a:.2f} | {b:.4f} | {c:.4f} | {d:.2f} | {e:.4f} | {f:.4f} | {s} | {fps} |"
            for m, a, b, c, d, e, f, s, fps in PAPER_TABLE_1]
    return "\n".join(out)


def fmt_row(label: str, r: dict) -> str:
    v, t = r["val"], r["test"]
    return (f"| {label} | {v['PSNR']:.2f} | {v['SSIM']:.4f} | {v['LPIPS']:.4f} | {t['PSNR']:.2f} | {t['SSIM']:.4f} | "
            f"{t['LPIPS']:.4f} | {r['splats']:.0f} | {r['storage_bytes'] / 1e6:.2f} | "
            f"{'-' if r['fps'] is None else format(r['fps'], '.1f')} | "
            f"{r['train_seconds']:.0f} |")


def table(rows: list[dict], protocol: str, metrics: str, device: str) -> str:
    out = [f"Protocol `{protocol}` (val = novel views, test = self-reenactment), metric set `{metrics}` (LPIPS vgg), "
           f"demo schedule; FPS on {device}.", "",
           "| method (seed) | NVS PSNR | NVS SSIM | NVS LPIPS | self-reen. PSNR | self-reen. SSIM | self-reen. LPIPS "
           "| splats | storage MB | FPS | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    for method, runs in by_method.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            flat = {"val": r["results"]["val"], "test": r["results"]["test"], "splats": r["splats"],
                    "storage_bytes": r["storage_bytes"], "train_seconds": r["train_seconds"], "fps": r["fps"]}
            out.append(fmt_row(f"{method} ({r['seed']})", flat))
        mean = {split: {k: float(np.mean([r["results"][split][k] for r in runs])) for k in ("PSNR", "SSIM", "LPIPS")}
                for split in ("val", "test")}
        mean.update({k: float(np.mean([r[k] for r in runs])) for k in ("splats", "storage_bytes", "train_seconds")})
        mean["fps"] = None if any(r["fps"] is None for r in runs) else float(np.mean([r["fps"] for r in runs]))
        out.append(fmt_row(f"**{method} (mean of {len(runs)})**", mean))
    return "\n".join(out)


def differences(rows: list[dict], a: str, b: str) -> str:
    """Per split: mean PSNR of ``a`` - ``b`` per seed, and per test timestep over seeds and cameras."""
    runs = {(r["method"], r["seed"]): r for r in rows}
    seeds = sorted({s for (m, s) in runs if m == a and (b, s) in runs})
    if not seeds:
        return ""
    out = [f"{a} - {b}, PSNR dB:", ""]
    for split in ("val", "test"):
        per_seed = [runs[(a, s)]["results"][split]["PSNR"] - runs[(b, s)]["results"][split]["PSNR"] for s in seeds]
        out.append(f"- {split}: " + ", ".join(f"seed {s} {d:+.2f}" for s, d in zip(seeds, per_seed))
                   + f"; mean {np.mean(per_seed):+.2f}")
    per_t = defaultdict(list)
    for s in seeds:
        va, vb = runs[(a, s)]["per_view"]["test"], runs[(b, s)]["per_view"]["test"]
        for name in va:
            if name in vb:
                per_t[int(name.split("_")[0])].append(va[name]["PSNR"] - vb[name]["PSNR"])
    out.append("- test per timestep (mean over cameras and seeds): " + ", ".join(
        f"{t}: {np.mean(d):+.2f}" for t, d in sorted(per_t.items())))
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="synthetic subjects (dataset seeds)")
    p.add_argument("--protocol", nargs="+", default=["ga"], choices=("ga", "paper"))
    p.add_argument("--methods", nargs="+", default=["tensorial", "gaussian_avatars"], choices=sorted(METHODS))
    p.add_argument("--data", default="data/bench", help="where the synthetic subjects go")
    p.add_argument("--out", default="output/bench_quality")
    p.add_argument("--iterations", type=int, help="override the demo schedule's iterations")
    p.add_argument("--metrics", default="gaussian-avatars", choices=("gaussian-avatars", "standard"))
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (each gets cores / jobs threads)")
    p.add_argument("--fresh", action="store_true", help="delete previous outputs of these runs first")
    p.add_argument("--fps-frames", type=int, default=10, help="frames render.py --benchmark times per model")
    p.add_argument("train_args", nargs="*", help="after --: extra train.py options")
    args = p.parse_args(argv)

    run([sys.executable, "scripts/fetch_lpips_weights.py"])
    subjects = {seed: dataset(seed, REPO / args.data) for seed in args.seeds}
    jobs = [(m, s, pr) for pr in args.protocol for s in args.seeds for m in args.methods]
    threads = max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        rows = list(pool.map(lambda j: train_and_score(j[0], j[1], j[2], args, *subjects[j[1]], threads), jobs))

    out_dir = REPO / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for protocol in args.protocol:
        mine = [r for r in rows if r["protocol"] == protocol]
        device = ", ".join(sorted({r["device"] for r in mine if r["device"]})) or "(not timed)"
        report += ["", table(mine, protocol, args.metrics, device), ""]
        for method in args.methods:
            if method != "gaussian_avatars" and "gaussian_avatars" in args.methods and not method.startswith("tensorial_"):
                report += [differences(mine, method, "gaussian_avatars"), ""]
            if method.startswith("tensorial_") and "tensorial" in args.methods:
                report += [differences(mine, method, "tensorial"), ""]
    report += [commits_line(rows), "", paper_table(), ""]
    text = "\n".join(report)
    print(text)
    write_text_atomic(out_dir / "quality.md", text + "\n")
    write_text_atomic(out_dir / "quality.json",
                      json.dumps([{k: v for k, v in r.items() if k != "per_view"} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
