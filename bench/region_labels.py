#!/usr/bin/env python
"""Cost of evaluate.py's region labels (scene/data/regions.py) per image, beside the LPIPS it sits next to.

    python bench/region_labels.py [--subject DIR] [--flame PKL] [--frames N] [--scale S] [--lpips vgg|alex]

For N frames of the subject (default: the demo subject run.sh trains on), times the labelling of
each frame (the tracked FLAME mesh of its timestep, then one z-buffer rasterization at the frame's
size times ``--scale``: 5 turns the demo's 110x160 into the full 550x802), and one LPIPS
evaluation of an image pair of that size (what evaluate.py computes per image anyway), on the CPU.
Prints ms/image for both and the pixel share of each region.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flame_model import FLAME  # noqa: E402
from scene.data.datasets import load_subject  # noqa: E402
from scene.data.regions import REGIONS, FrameRegions, region_labels  # noqa: E402
from utils.lpips import LPIPS  # noqa: E402

DEMO = "data/synthetic/s000/UNION_s000_v16_DS5_whiteBg_staticOffset"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subject", default=DEMO)
    p.add_argument("--flame", default="data/synthetic/flame/flame2023.pkl")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--scale", type=float, default=5.0)
    p.add_argument("--lpips", default="vgg")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    subject = load_subject(args.subject)
    flame = FLAME(args.flame, n_expr=100, add_teeth=False)
    regions = FrameRegions(flame, {})
    frames = (subject.frames["val"] + subject.frames["test"])
    frames = frames[:: max(1, len(frames) // args.frames)][:args.frames]
    h, w = round(frames[0].height * args.scale), round(frames[0].width * args.scale)
    counts = torch.zeros(len(REGIONS), dtype=torch.int64)
    start = time.perf_counter()
    for frame in frames:
        verts = regions._vertices(subject, frame.timestep)
        cam = verts @ frame.viewmat[:3, :3].T + frame.viewmat[:3, 3]
        K = frame.K.clone()
        K[:2] *= args.scale
        counts += torch.bincount(region_labels(cam, regions.faces, regions.face_region, K, h, w).flatten(),
                                 minlength=len(REGIONS))
    label_ms = 1000 * (time.perf_counter() - start) / len(frames)

    lpips = LPIPS(net=args.lpips)
    x, y = torch.rand(1, 3, h, w), torch.rand(1, 3, h, w)
    with torch.no_grad():
        lpips(x, y)
        start = time.perf_counter()
        lpips.layer_maps(x, y)
        lpips_ms = 1000 * (time.perf_counter() - start)

    share = ", ".join(f"{name} {100 * float(c) / float(counts.sum()):.1f}%" for name, c in zip(REGIONS, counts))
    print(f"{len(frames)} frames at {w}x{h}, {args.threads} thread(s): region labels {label_ms:.1f} ms/image "
          f"(FLAME mesh + rasterization); LPIPS {args.lpips} {lpips_ms:.0f} ms/image; pixels: {share}")


if __name__ == "__main__":
    main()
