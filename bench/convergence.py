"""Convergence study: the tensorial method against GaussianAvatars and the ablations, by schedule length.

Which part of the flagship costs it against GaussianAvatars, and when? For every synthetic
capture preset (``scripts/make_synthetic_subject.py --preset``: ``realistic`` = multi-view with
tracking error, blur, JPEG and a torso; ``monocular`` = one camera, one 200-timestep talking take,
the first 160 training and the last 40 scored), every schedule length, every method (the keys of
``bench/quality.py``'s METHODS: the tensorial method, ``gaussian_avatars``, the paper's ablations
``no_triplane no_feature_lines no_penalty no_resampling``, the sampler half-way
``tensorial_balance_half``, and the demo schedule's departures from the paper undone one at a time
``tensorial_head_box tensorial_paper_penalty tensorial_paper_decoder_lr``) and every dataset
seed, it trains through ``train.py`` under protocol ``ga``, renders and scores the held-out splits
through ``render.py`` / ``evaluate.py`` (full frame and the FLAME head region: face + hair/scalp),
and prints per preset a table of PSNR by length (each cell ``full frame / head region``, mean
over seeds, then each seed), each method's difference to GaussianAvatars and to the tensorial
method, and the expression classes the sampler balanced (count, sizes, how much more often a
frame of the smallest class is drawn than one of the largest).

    python bench/convergence.py [--presets realistic monocular] [--lengths 2000 10000 30000]
                                [--methods tensorial gaussian_avatars no_resampling ...] [--seeds 0 1 2]
                                [--out output/bench_convergence] [--jobs 2]

The schedule of length L is ``configs/demo.yaml`` stretched by L / 2000: densification from 20% to
80% of the schedule (the demo's 400 to 1600), the feature lines on after the first 10% (the
config's fraction) and the position learning rate decaying over the whole schedule; the
densification interval stays 200 iterations (3DGS and GA densify at a fixed interval, whatever the
length). Each finished run is kept (``row.json`` beside it) and reused by a later invocation of the
same run, so that a study can be stopped and continued, or widened by adding lengths, methods or
seeds; runs train in order of length, shortest first, and the report is rewritten after every run
(``convergence.md`` / ``convergence.json`` in ``--out``).

Cost: one training of length L costs about L / 2000 times a demo training (on this 2-core CPU,
~7 min for the tensorial method and ~11 min for GaussianAvatars at 2000 iterations, one thread).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality  # noqa: E402  (bench/quality.py: its methods, data and train-render-score)
from utils.atomic import write_text_atomic  # noqa: E402

REPO = quality.REPO
DEMO_LENGTH = 2000
DEMO_DENSIFY = (400, 1600)  # configs/demo.yaml's densify_from_iter, densify_until_iter
DEFAULT_METHODS = ["tensorial", "gaussian_avatars", "no_triplane", "no_feature_lines", "no_penalty", "no_resampling",
                   "tensorial_balance_half"]
#: Presets whose subject has a single camera: no novel-view (val) split.
MONOCULAR_PRESETS = ("monocular",)


def schedule_args(length: int) -> list[str]:
    """train.py options that stretch the demo schedule to ``length`` iterations."""
    f = length / DEMO_LENGTH
    start, stop = (round(x * f) for x in DEMO_DENSIFY)
    return ["--iterations", str(length), "--set", f"densify.densify_from_iter={start}",
            "--set", f"densify.densify_until_iter={stop}",
            "--set", f"run.eval_interval={max(length // 4, 1)}", "--set", f"run.save_interval={max(length // 2, 1)}"]


def class_sizes(model: Path) -> list[int] | None:
    """Sizes of the expression classes the run's sampler balanced (its clusters.json), largest first."""
    path = model / "clusters.json"
    if not path.is_file():
        return None
    labels = json.loads(path.read_text()).get("labels")
    return sorted(Counter(labels).values(), reverse=True) if labels else None


def scores(row: dict, split: str) -> tuple[float, float] | None:
    """(full-frame PSNR, head-region PSNR) of ``split`` in a run's results, or None."""
    r = row["results"].get(split)
    if not r:
        return None
    head = (r.get("regions") or {}).get("head", {}).get("PSNR", float("nan"))
    return r["PSNR"], head


def study_table(rows: list[dict], preset: str, split: str, lengths: list[int], methods: list[str]) -> list[str]:
    """Markdown: one line per method (mean over seeds) and per method and seed, a column per length."""
    by = {(r["method"], r["length"], r["seed"]): r for r in rows if r["preset"] == preset}
    seeds = sorted({s for (_, _, s) in by})
    head = "| method | " + " | ".join(f"{n // 1000}k" if n % 1000 == 0 else str(n) for n in lengths) + " |"
    out = [head, "|---" * (len(lengths) + 1) + "|"]

    def cell(pairs):
        pairs = [p for p in pairs if p is not None]
        if not pairs:
            return ""
        full, reg = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        return f"{full:.2f} / {reg:.2f}" + (f" ({len(pairs)})" if len(pairs) < len(seeds) else "")

    for method in methods:
        cells = [cell([scores(by[k], split) for s in seeds if (k := (method, n, s)) in by]) for n in lengths]
        if any(cells):
            out.append(f"| **{method}** | " + " | ".join(cells) + " |")
    for method in methods:
        for s in seeds:
            cells = [cell([scores(by[(method, n, s)], split)]) if (method, n, s) in by else "" for n in lengths]
            if any(cells):
                out.append(f"| {method} (seed {s}) | " + " | ".join(cells) + " |")
    return out


def difference_lines(rows: list[dict], preset: str, split: str, lengths: list[int], methods: list[str],
                     reference: str) -> list[str]:
    """Per method and length: mean over the seeds both have of (method - reference), full / head."""
    by = {(r["method"], r["length"], r["seed"]): r for r in rows if r["preset"] == preset}
    out = []
    for method in methods:
        if method == reference:
            continue
        parts = []
        for n in lengths:
            pairs = [(scores(by[(method, n, s)], split), scores(by[(reference, n, s)], split))
                     for (m, length, s) in by if m == method and length == n and (reference, n, s) in by]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                d_full = [a[0] - b[0] for a, b in pairs]
                d_head = [a[1] - b[1] for a, b in pairs]
                per_seed = ", ".join(f"{x:+.2f}" for x in d_head)
                parts.append(f"{n}: {np.mean(d_full):+.2f} / {np.mean(d_head):+.2f} (head per seed {per_seed})")
        if parts:
            out.append(f"- {method} - {reference}: " + "; ".join(parts))
    return out


def report(rows: list[dict], presets: list[str], lengths: list[int], methods: list[str], clusters: dict) -> str:
    out = ["PSNR dB, each cell `full frame / head region` (face + hair/scalp), protocol `ga`, the demo schedule "
           "stretched to each length; a count in brackets = seeds finished so far.", ""]
    for preset in presets:
        splits = ["test"] if preset in MONOCULAR_PRESETS else ["test", "val"]
        for split in splits:
            what = "self-reenactment (test)" if split == "test" else "novel views (val)"
            out += [f"### {preset}: {what}", ""] + study_table(rows, preset, split, lengths, methods) + [""]
            for reference in ("gaussian_avatars", "tensorial"):
                if reference in methods:
                    lines = difference_lines(rows, preset, split, lengths,
                                             [m for m in methods if reference == "gaussian_avatars" or m != "gaussian_avatars"],
                                             reference)
                    if lines:
                        out += [f"Differences to {reference} ({what}), `full / head`:", ""] + lines + [""]
        for seed, sizes in sorted(clusters.get(preset, {}).items()):
            ratio = sizes[0] / sizes[-1]
            out.append(f"- {preset} seed {seed}: {len(sizes)} expression classes of {min(sizes)} to {max(sizes)} "
                       f"training timesteps ({', '.join(map(str, sizes))}); class-uniform sampling draws a frame of "
                       f"the smallest class {ratio:.1f}x as often as one of the largest")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["realistic", "monocular"], choices=("realistic", "monocular", "demo"))
    p.add_argument("--lengths", nargs="+", type=int, default=[2000, 10000, 30000], help="schedule lengths (iterations)")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=sorted(quality.METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="synthetic subjects (dataset seeds)")
    p.add_argument("--data", default="data", help="the subjects go to DATA/bench_<preset>/seed<N>")
    p.add_argument("--out", default="output/bench_convergence")
    p.add_argument("--metrics", default="gaussian-avatars", choices=("gaussian-avatars", "standard"))
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (each gets cores / jobs threads)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that are already there")
    args = p.parse_args(argv)
    bad = [n for n in args.lengths if n < 100]
    if bad:
        p.error(f"--lengths {bad}: a schedule needs at least 100 iterations")

    quality.run([sys.executable, "scripts/fetch_lpips_weights.py"])
    subjects = {(preset, seed): quality.dataset(seed, REPO / args.data / f"bench_{preset}", preset)
                for preset in args.presets for seed in args.seeds}
    out_dir = REPO / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(n, preset, seed, method) for n in sorted(args.lengths) for preset in args.presets
            for seed in args.seeds for method in args.methods]
    threads = max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    rows: list[dict] = []
    clusters: dict = defaultdict(dict)
    lock = threading.Lock()

    def one(job) -> dict:
        length, preset, seed, method = job
        model = out_dir / preset / f"{length}" / f"seed{seed}" / method
        splits = ("test",) if preset in MONOCULAR_PRESETS else ("val", "test")
        spec = quality.run_spec(method, "ga", schedule_args(length), splits, args.metrics, 0)
        kept = quality.kept_row(model, spec, args.fresh)
        if kept is not None:
            return kept
        row = quality.train_render_score(method, model, *subjects[(preset, seed)], "ga", threads,
                                         metrics=args.metrics, splits=splits, fresh=args.fresh,
                                         train_extra=schedule_args(length), fps_frames=0)
        return quality.keep_row(model, {**{k: v for k, v in row.items() if k != "per_view"}, "preset": preset,
                                        "length": length, "seed": seed, "class_sizes": class_sizes(model)}, spec)

    def write_report() -> str:
        text = report(rows, args.presets, sorted(args.lengths), args.methods, clusters)
        write_text_atomic(out_dir / "convergence.md", text + "\n")
        write_text_atomic(out_dir / "convergence.json", json.dumps(rows, indent=2))
        return text

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        futures = {pool.submit(one, job): job for job in jobs}
        for future in as_completed(futures):
            row = future.result()
            with lock:
                rows.append(row)
                if row.get("class_sizes"):
                    clusters[row["preset"]].setdefault(row["seed"], row["class_sizes"])
                write_report()
                length, preset, seed, method = futures[future]
                print(f"[convergence] {len(rows)}/{len(jobs)} done: {preset} {length} seed {seed} {method}", flush=True)
    print(write_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
