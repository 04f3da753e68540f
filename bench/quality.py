"""Quality benchmark: the tensorial model against GaussianAvatars on the synthetic subject.

Trains each method at the demo schedule (configs/demo.yaml) through train.py, renders val (novel
views) and test (self-reenactment) through render.py, scores them with evaluate.py, and prints
one Markdown table: PSNR/SSIM/LPIPS per split, splat count, storage and training time.

    python bench/quality.py [--out output/bench_quality] [--methods tensorial gaussian_avatars]
                            [--iterations N] [-- extra train.py options]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "tensorial": ["configs/tensorial.yaml"],
    "gaussian_avatars": ["configs/gaussian_avatars.yaml"],
    "no_triplane": ["configs/tensorial.yaml", "configs/ablation_no_triplane.yaml"],
    "no_feature_lines": ["configs/tensorial.yaml", "configs/ablation_no_feature_lines.yaml"],
    "no_penalty": ["configs/tensorial.yaml", "configs/ablation_no_penalty.yaml"],
    "no_resampling": ["configs/tensorial.yaml", "configs/ablation_no_resampling.yaml"],
}


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic", help="synthetic dataset folder (generated if missing)")
    p.add_argument("--identity", default="s000")
    p.add_argument("--out", default="output/bench_quality")
    p.add_argument("--methods", nargs="+", default=["tensorial", "gaussian_avatars"], choices=sorted(METHODS))
    p.add_argument("--iterations", type=int, help="override the demo schedule's iterations")
    p.add_argument("--lpips", default="vgg", choices=("alex", "vgg"))
    p.add_argument("--fresh", action="store_true", help="delete previous outputs of these methods first")
    p.add_argument("train_args", nargs="*", help="after --: extra train.py options")
    args = p.parse_args(argv)

    py = sys.executable
    run([py, "scripts/make_synthetic_subject.py", "--out", args.data, "--identities", "2"])
    run([py, "scripts/fetch_lpips_weights.py"])
    subject = next((REPO / args.data / args.identity).glob(f"UNION_{args.identity}_*"))
    flame = REPO / args.data / "flame" / "flame2023.pkl"
    rows = {}
    for method in args.methods:
        model = REPO / args.out / method
        if args.fresh and model.exists():
            import shutil
            shutil.rmtree(model)
        configs = [c for cfg in METHODS[method] + ["configs/demo.yaml"] for c in ("--config", cfg)]
        extra = (["--iterations", str(args.iterations)] if args.iterations else []) + args.train_args
        resume = ["--resume"] if (model / "config.yaml").is_file() else []
        t0 = time.time()
        run([py, "train.py", "-s", str(subject), "-m", str(model), "--flame", str(flame), *configs, "--eval", *resume, *extra])
        wall = time.time() - t0
        run([py, "render.py", "-m", str(model), "--split", "val", "test", "--quiet"])
        run([py, "evaluate.py", "-m", str(model), "--split", "val", "test", "--lpips", args.lpips])
        results = json.loads((model / "results.json").read_text())
        storage = json.loads((model / "storage.json").read_text())
        summary = json.loads((model / "train_summary.json").read_text())
        rows[method] = {"results": results, "storage_bytes": storage["total_bytes"], "splats": summary["splats"],
                        "train_seconds": summary["train_seconds"] if not resume else summary["train_seconds"],
                        "wall_seconds": wall}

    header = ("| method | val PSNR | val SSIM | val LPIPS | test PSNR | test SSIM | test LPIPS | splats | storage MB | train s |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
    print("\n" + header)
    for method, r in rows.items():
        v, t = r["results"]["val"], r["results"]["test"]
        print(f"| {method} | {v['PSNR']:.2f} | {v['SSIM']:.4f} | {v['LPIPS']:.4f} | {t['PSNR']:.2f} | {t['SSIM']:.4f} | "
              f"{t['LPIPS']:.4f} | {r['splats']} | {r['storage_bytes'] / 1e6:.2f} | {r['train_seconds']:.0f} |")
    (REPO / args.out).mkdir(parents=True, exist_ok=True)
    (REPO / args.out / "quality.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
