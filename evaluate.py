#!/usr/bin/env python
"""Score rendered images against ground truth: PSNR, SSIM, LPIPS.

Model folders (the output of render.py)::

    python evaluate.py -m OUTPUT [OUTPUT ...] [--split val test ...] [--iteration N]
                       [--metrics gaussian-avatars|standard] [--lpips vgg|alex] [--mask fg]
                       [--out results_all.json]

reads ``MODEL/<split>/ours_<iteration>/{renders,gt,masks}/*.png`` (the latest iteration unless
``--iteration``; every split folder found unless ``--split``) and writes, per model folder,

- ``MODEL/results.json``:  ``{split: {"PSNR": float, "SSIM": float, "LPIPS": float, "n_images": int},
  "metrics": str, "lpips_net": str, "protocol": str | null}``: the per-split entries (dicts),
  and beside them three top-level strings naming how they were computed: the metric set, the
  LPIPS backbone and the evaluation protocol of the model (see below; ``null`` when unknown).
- ``MODEL/per_view.json``: ``{split: {image_name: {"PSNR": float, "SSIM": float, "LPIPS": float}}}``
- ``MODEL/per_view.csv``:  ``split,image,PSNR,SSIM,LPIPS``

(these files are rewritten by every run and hold the splits of that run). A Markdown table goes
to stdout, after one line naming the metric set, LPIPS backbone, image region and protocol: one
row per model and split, plus the mean over models per split when several are given (``--out
FILE`` also writes that combined table as JSON: ``{"models": {MODEL: results}, "mean": {split:
{..., "n_models": int}}, "metrics": str, "lpips_net": str}``).

Any two folders of same-named images (e.g. baselines from other codebases)::

    python evaluate.py --renders DIR --gt DIR [--masks DIR --mask fg] [--json FILE] [--metrics ...]

(``--json``: ``{"PSNR", "SSIM", "LPIPS", "n_images", "per_view", "metrics", "lpips_net"}``).

Common to both metric sets: images in [0, 1], full image, white background; the per-split number
is the mean over images of the per-image metric (per-image PSNR from the per-image MSE). SSIM:
11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, per channel, mean of the SSIM map.
LPIPS: v0.1 linear heads on VGG16 (default, as GaussianAvatars) or AlexNet. ``--metrics``:

- ``gaussian-avatars`` (default): what 3D Gaussian Splatting's and GaussianAvatars'
  ``metrics.py`` compute, so numbers compare with their published tables. SSIM of the zero-padded
  "same" convolution (padding 5: border windows see zeros; the map is H x W); LPIPS given the
  [0, 1] images as they are (no mapping to [-1, 1]).
- ``standard``: SSIM over the valid region (windows inside the image; identical to scikit-image's
  ``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``); LPIPS
  inputs mapped to [-1, 1] as the LPIPS authors specify (``lpips.LPIPS(...)(x, y, normalize=True)``).

PSNR is the same in both. The protocol comes from ``MODEL/config.yaml``: its top-level
``protocol`` entry when it has one, else ``ga (--eval)`` for a model trained with ``--eval``
(val = novel views, test = self-reenactment, held out) or ``none (trained without --eval: every
frame was trained on)``.

``--mask fg`` scores the foreground only: both the render and the GT are composited over the
background colour with the GT foreground matte (``masks/``), ``img * m + bg * (1 - m)``, and the
metrics are then computed on the full frame (so PSNR/SSIM/LPIPS stay on the scale of the
full-image numbers, with everything outside the matte counting as a perfect match). The
background colour is the one the model was trained with (``background`` in
``MODEL/config.yaml`` when present, else white); it is also used to flatten RGBA images.

Region metrics (``--regions``, default ``auto``): beside the full-frame numbers, PSNR/SSIM/LPIPS
over the pixels of each region of the head (``face``, ``hair_scalp``, ``neck``, ``other``, and
``head`` = face + hair_scalp): FLAME's region masks projected with each frame's own tracked FLAME
mesh and camera, the region of a pixel being that of the front-most triangle covering it, pixels
the mesh does not cover ``other`` (the table of masks per region and the rules:
scene/data/regions.py; how each metric is taken over a region: utils/region_metrics.py). Each
split entry of results.json then also holds ``"regions": {region: {"PSNR", "SSIM", "LPIPS",
"n_images"}}``, the mean over the images where the region has pixels (a region absent from an
image is skipped for it, not scored 0; ``n_images`` counts the others), per_view.json each image's
``"regions"``, and a second table follows the full-frame one. results.json's top-level
``region_metrics`` says what was done: ``"flame masks, tracked mesh"``, ``"off (--regions
none)"`` or ``"skipped: <why>"`` (``auto`` skips, with one line saying why, a model folder without
FLAME tracking or masks; ``flame`` makes that an error). The full-frame numbers are the same with
or without regions.

Identical images have infinite PSNR; it is written as ``null`` in JSON (``inf`` in tables).
A folder whose ``render.json`` (written by render.py) says its render did not finish (stopped or
crashed part-way: rerunning the same render.py command finishes it) is refused, not scored.
Errors a user can cause (no renders, missing GT, image size mismatch, missing LPIPS weights,
two files of one frame such as ``x.png`` beside ``x.jpg`` in a renders, GT or mask folder) print
one line naming the file(s) and the fix, and exit with status 2.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from utils.atomic import atomic_write, write_text_atomic  # noqa: E402
from utils.errors import InputFileError, MissingFileError, UserFacingError  # noqa: E402
from utils.render_manifest import unfinished_render  # noqa: E402

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
METRICS = ("PSNR", "SSIM", "LPIPS")
WHITE = (1.0, 1.0, 1.0)
_ITER_RE = re.compile(r"^ours_(\d+)$")
_SPLIT_ORDER = ("val", "test", "train")
RENDER_HINT = "run render.py on the trained model first"


@dataclass(frozen=True)
class MetricSet:
    """How SSIM and LPIPS are computed (PSNR is the same in every set)."""

    name: str
    ssim_padding: str        # utils.image_metrics.ssim padding: "same" (zero-padded) or "valid"
    lpips_normalize: bool    # utils.lpips.LPIPS.forward normalize: map [0, 1] inputs to [-1, 1]
    default_lpips_net: str
    description: str = field(default="", compare=False)


METRIC_SETS = {
    "gaussian-avatars": MetricSet(
        "gaussian-avatars", ssim_padding="same", lpips_normalize=False, default_lpips_net="vgg",
        description="as 3DGS/GaussianAvatars metrics.py: zero-padded SSIM, LPIPS on [0, 1] inputs"),
    "standard": MetricSet(
        "standard", ssim_padding="valid", lpips_normalize=True, default_lpips_net="vgg",
        description="valid-region SSIM (= scikit-image), LPIPS on inputs mapped to [-1, 1]"),
}
DEFAULT_METRICS = "gaussian-avatars"
# Top-level keys of results.json beside the per-split entries.
RESULT_META_KEYS = ("metrics", "lpips_net", "protocol", "region_metrics")
REGION_MODES = ("auto", "flame", "none")


# ----------------------------------------------------------------------------------------------
# Image loading
# ----------------------------------------------------------------------------------------------
def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise MissingFileError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable image ({exc}); re-render or re-export "
                             "it") from None
    return img


def _pixels(img) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image -> (colour (H, W, C) float64 in [0, 1], alpha (H, W) or None)."""
    mode = img.mode
    if mode in ("P", "PA"):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGB", "RGBA", "L", "LA"):
        a = np.asarray(img, dtype=np.float64) / 255.0
        if a.ndim == 2:
            return a[..., None], None
        if mode in ("RGBA", "LA"):
            return a[..., :-1], a[..., -1]
        return a, None
    if mode == "1":
        return np.asarray(img, dtype=np.float64)[..., None], None
    if mode.startswith("I;16") or mode == "I":
        return np.clip(np.asarray(img, dtype=np.float64) / 65535.0, 0, 1)[..., None], None
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float64), 0, 1)[..., None], None
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0, None


def load_rgb(path: Path, background: Sequence[float] = WHITE) -> np.ndarray:
    """``(H, W, 3)`` float64 in [0, 1]; an alpha channel is composited over ``background``."""
    with _open_image(path) as img:
        colour, alpha = _pixels(img)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if alpha is not None:
        bg = np.asarray(background, dtype=np.float64).reshape(1, 1, 3)
        colour = colour * alpha[..., None] + bg * (1.0 - alpha[..., None])
    return colour


def load_matte(path: Path) -> np.ndarray:
    """Foreground matte ``(H, W)`` in [0, 1]: grey value, the alpha of an RGBA cut-out, or the
    max over the colour channels of an RGB mask."""
    with _open_image(path) as img:
        colour, alpha = _pixels(img)
    if alpha is not None and float(alpha.min()) < 1.0:
        return alpha
    return colour.max(axis=2)


# ----------------------------------------------------------------------------------------------
# Folder discovery
# ----------------------------------------------------------------------------------------------
def list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder keyed by file name (sorted).

    Two images that differ only in their extension (``x.png`` and ``x.jpg``) are refused: both
    would be matched by name stem and the frame scored twice, or against the wrong file.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise InputFileError(
                f"ambiguous images in {folder}: {by_stem[p.stem].name} and {p.name} are the same "
                f"frame ('{p.stem}') with different extensions; delete or move one of them")
        by_stem[p.stem] = p
    return {p.name: p for p in files}


def _find_by_stem(folder_images: dict[str, Path], name: str) -> Path | None:
    if name in folder_images:
        return folder_images[name]
    stem = Path(name).stem
    matches = [p for p in folder_images.values() if p.stem == stem]
    return matches[0] if len(matches) == 1 else None


@dataclass
class Pair:
    name: str
    render: Path
    gt: Path
    mask: Path | None = None


def match_pairs(renders_dir: Path, gt_dir: Path, masks_dir: Path | None,
                strict_gt: bool, gt_hint: str) -> list[Pair]:
    """Pair every render with the GT (and matte) of the same name (or, failing that, stem)."""
    if not renders_dir.is_dir():
        raise MissingFileError(f"renders folder not found: {renders_dir}: {RENDER_HINT}")
    if not gt_dir.is_dir():
        raise MissingFileError(f"ground-truth folder not found: {gt_dir}: {gt_hint}")
    renders = list_images(renders_dir)
    gts = list_images(gt_dir)
    masks = None
    if masks_dir is not None:
        if not masks_dir.is_dir():
            raise MissingFileError(
                f"mask folder not found: {masks_dir}: --mask fg needs the GT foreground mattes "
                "(render data that has fg masks, or evaluate without --mask)")
        masks = list_images(masks_dir)
    pairs = []
    used_gt = set()
    for name, render in renders.items():
        gt = _find_by_stem(gts, name)
        if gt is None:
            raise MissingFileError(f"no ground truth for render {render}: expected "
                                   f"{gt_dir / name}; {gt_hint}")
        used_gt.add(gt.name)
        mask = None
        if masks is not None:
            mask = _find_by_stem(masks, name)
            if mask is None:
                raise MissingFileError(f"no foreground mask for render {render}: expected "
                                       f"{masks_dir / name}; evaluate without --mask or "
                                       "re-render with masks")
        pairs.append(Pair(name, render, gt, mask))
    extra = sorted(set(gts) - used_gt)
    if extra:
        if strict_gt:
            raise MissingFileError(
                f"{len(extra)} GT image(s) without a render, e.g. {gt_dir / extra[0]} has no "
                f"{renders_dir / extra[0]}: rendering was interrupted; {RENDER_HINT} again")
        print(f"note: {len(extra)} image(s) in {gt_dir} have no render and are not scored "
              f"(e.g. {extra[0]})", file=sys.stderr)
    return pairs


def find_iteration_dir(split_dir: Path, iteration: int | None) -> Path:
    found = {}
    if split_dir.is_dir():
        for d in split_dir.iterdir():
            m = _ITER_RE.match(d.name)
            if m and d.is_dir():
                found[int(m.group(1))] = d
    if not found:
        raise MissingFileError(f"no rendered iteration in {split_dir} (expected "
                               f"{split_dir}/ours_<iteration>/renders): {RENDER_HINT}")
    if iteration is None:
        return found[max(found)]
    if iteration not in found:
        raise MissingFileError(f"{split_dir / f'ours_{iteration}'} not found (rendered iterations: "
                               f"{', '.join(map(str, sorted(found)))}): pick one of them with "
                               f"--iteration or render iteration {iteration} first")
    return found[iteration]


def discover_splits(model: Path) -> list[str]:
    splits = [d.name for d in model.iterdir()
              if d.is_dir() and any(_ITER_RE.match(c.name) and c.is_dir() for c in d.iterdir())]
    order = {s: i for i, s in enumerate(_SPLIT_ORDER)}
    return sorted(splits, key=lambda s: (order.get(s, len(order)), s))


def _parse_colour(value, source: str) -> tuple[float, float, float]:
    names = {"white": WHITE, "black": (0.0, 0.0, 0.0)}
    if isinstance(value, str) and value.lower() in names:
        return names[value.lower()]
    if isinstance(value, bool):
        return WHITE if value else (0.0, 0.0, 0.0)
    if isinstance(value, (int, float)):
        value = [value] * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        vals = [float(v) for v in value]
        if max(vals) > 1.0:  # 0..255 convention
            vals = [v / 255.0 for v in vals]
        if all(0.0 <= v <= 1.0 for v in vals):
            return tuple(vals)
    raise InputFileError(f"{source}: 'background' must be three numbers in [0, 1] (or 'white'/"
                         f"'black'), got {value!r}; fix or remove the key")


def read_model_config(model: Path):
    """The parsed ``MODEL/config.yaml`` (any YAML value), or ``None`` when there is none."""
    path = model / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not readable YAML ({type(exc).__name__}); fix it or "
                             "remove it (the background then defaults to white)") from None


def read_protocol(model: Path) -> str | None:
    """The evaluation protocol of a model: ``config.yaml``'s top-level ``protocol`` entry, else
    ``ga (--eval)`` / ``none (...)`` from its top-level ``eval`` flag, else ``None``."""
    data = read_model_config(model)
    if not isinstance(data, dict):
        return None
    if "protocol" in data:
        value = data["protocol"]
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if data.get("eval") is True:
        return "ga (--eval)"
    if data.get("eval") is False:
        return "none (trained without --eval: every frame was trained on)"
    return None


def read_background(model: Path) -> tuple[float, float, float]:
    """Background colour from ``MODEL/config.yaml`` (key ``background`` at any depth, first
    found breadth-first; GaussianAvatars' ``white_background`` also understood), else white."""
    path = model / "config.yaml"
    data = read_model_config(model)
    if data is None:
        return WHITE
    queue = [data]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            if "background" in node:
                return _parse_colour(node["background"], str(path))
            if "white_background" in node:
                return _parse_colour(bool(node["white_background"]), str(path))
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return WHITE


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------
class Scorer:
    """Per-image PSNR (float64), SSIM and LPIPS (float32) of one metric set (``METRIC_SETS``
    key), batched, under ``torch.no_grad``. ``lpips_net=None``: the set's default backbone."""

    def __init__(self, metrics: str = DEFAULT_METRICS, lpips_net: str | None = None,
                 batch_size: int = 2, device: str = "auto"):
        import torch

        from utils.lpips import LPIPS

        if metrics not in METRIC_SETS:
            raise UserFacingError(f"--metrics must be one of {', '.join(METRIC_SETS)}, "
                                  f"got {metrics!r}")
        self.metric_set = METRIC_SETS[metrics]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.lpips_net = lpips_net or self.metric_set.default_lpips_net
        self.lpips = LPIPS(net=self.lpips_net).to(self.device)
        self.region_seconds, self.region_images = 0.0, 0  # time spent labelling regions

    def describe(self) -> dict[str, str]:
        """``{"metrics": set name, "lpips_net": backbone}``, written beside the scores."""
        return {"metrics": self.metric_set.name, "lpips_net": self.lpips_net}

    def _load(self, pair: Pair, background, use_mask: bool) -> tuple[np.ndarray, np.ndarray]:
        render = load_rgb(pair.render, background)
        gt = load_rgb(pair.gt, background)
        if render.shape != gt.shape:
            raise InputFileError(
                f"size mismatch: render {pair.render} is {render.shape[1]}x{render.shape[0]} but "
                f"GT {pair.gt} is {gt.shape[1]}x{gt.shape[0]} (w x h): render at the GT "
                "resolution")
        if use_mask:
            m = load_matte(pair.mask)
            if m.shape != gt.shape[:2]:
                raise InputFileError(
                    f"size mismatch: mask {pair.mask} is {m.shape[1]}x{m.shape[0]} but GT "
                    f"{pair.gt} is {gt.shape[1]}x{gt.shape[0]} (w x h)")
            m = m[..., None]
            bg = np.asarray(background, dtype=np.float64).reshape(1, 1, 3)
            render = render * m + bg * (1.0 - m)
            gt = gt * m + bg * (1.0 - m)
        return render, gt

    def score(self, pairs: list[Pair], background=WHITE, use_mask: bool = False,
              desc: str = "", regions=None) -> dict[str, dict[str, float]]:
        """``{image name: {"PSNR", "SSIM", "LPIPS"}}``; with ``regions`` (a ``FrameRegions``),
        each image whose frame it knows also gets ``"regions": {region: {"PSNR", "SSIM",
        "LPIPS"}}`` for the regions present in it."""
        import time

        import torch
        from tqdm import tqdm

        from utils.image_metrics import psnr, ssim_map
        from utils.lpips import LPIPS

        out: dict[str, dict[str, float]] = {}
        with torch.no_grad(), tqdm(total=len(pairs), desc=desc, unit="img",
                                   file=sys.stderr, leave=False) as bar:
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                images = [self._load(p, background, use_mask) for p in chunk]
                # LPIPS batches need equal sizes: group consecutive same-sized images.
                groups: list[list[int]] = []
                for i, (r, _) in enumerate(images):
                    if groups and images[groups[-1][0]][0].shape == r.shape:
                        groups[-1].append(i)
                    else:
                        groups.append([i])
                for g in groups:
                    r64 = torch.from_numpy(np.stack([images[i][0] for i in g])).permute(0, 3, 1, 2)
                    g64 = torch.from_numpy(np.stack([images[i][1] for i in g])).permute(0, 3, 1, 2)
                    r64, g64 = r64.to(self.device), g64.to(self.device)
                    r32, g32 = r64.float(), g64.float()
                    p = psnr(r64, g64, reduction="none")
                    # float32 SSIM: 7x faster, error < 1e-6. The maps are kept for the region
                    # metrics; reduced here exactly as ssim() and LPIPS.forward() reduce them.
                    s_map = ssim_map(r32, g32, padding=self.metric_set.ssim_padding)
                    s = s_map.flatten(1).mean(dim=1)
                    lp_maps = self.lpips.layer_maps(r32, g32, normalize=self.metric_set.lpips_normalize)
                    lp = LPIPS.reduce(lp_maps)
                    for j, i in enumerate(g):
                        out[chunk[i].name] = {"PSNR": float(p[j]), "SSIM": float(s[j]),
                                              "LPIPS": float(lp[j])}
                        if regions is not None:
                            t0 = time.perf_counter()
                            labels = regions.labels(chunk[i].name, tuple(r64.shape[-2:]))
                            self.region_seconds += time.perf_counter() - t0
                            if labels is not None:
                                self.region_images += 1
                                out[chunk[i].name]["regions"] = _region_scores(
                                    labels.to(self.device), r64[j:j + 1], g64[j:j + 1],
                                    s_map[j:j + 1], [m[j:j + 1] for m in lp_maps])
                bar.update(len(chunk))
        return out


def _region_scores(labels, render, gt, s_map, lp_maps) -> dict[str, dict[str, float]]:
    """One image's metrics per region present in it (``labels`` (H, W); the rest (1, ...))."""
    from scene.data.regions import region_pixel_masks
    from utils.region_metrics import region_lpips, region_psnr, region_ssim

    scores = {}
    for name, mask in region_pixel_masks(labels).items():
        if not bool(mask.any()):
            continue  # absent from this image: skipped, not scored
        m = mask[None]
        scores[name] = {"PSNR": float(region_psnr(render, gt, m)[0]),
                        "SSIM": float(region_ssim(s_map, m)[0]),
                        "LPIPS": float(region_lpips(lp_maps, m)[0])}
    return scores


def _mean_or_none(values: list[float]) -> float | None:
    """Mean of the finite-or-inf values (NaN: undefined for that image, left out)."""
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else None


def summarize_regions(per_view: dict[str, dict]) -> dict[str, dict] | None:
    """Per region, the mean over the images where it is present, with their count; None when no
    image has region scores."""
    from scene.data.regions import HEAD, REGIONS

    views = [v["regions"] for v in per_view.values() if "regions" in v]
    if not views:
        return None
    out = {}
    for name in (HEAD, *REGIONS):
        present = [v[name] for v in views if name in v]
        out[name] = {k: _mean_or_none([p[k] for p in present]) for k in METRICS}
        out[name]["n_images"] = len(present)
    return out


def summarize(per_view: dict[str, dict[str, float]]) -> dict:
    n = len(per_view)
    summary = {k: (float(np.mean([v[k] for v in per_view.values()])) if n else None)
               for k in METRICS}
    summary["n_images"] = n
    regions = summarize_regions(per_view)
    if regions is not None:
        summary["regions"] = regions
    return summary


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, per_view_by_split: dict[str, dict[str, dict[str, float]]]) -> None:
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "image", *METRICS])
        for split, views in per_view_by_split.items():
            for name, v in views.items():
                w.writerow([split, name, *(repr(v[k]) for k in METRICS)])


def _fmt(value, digits: int) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf" if value > 0 else "nan"
    return f"{value:.{digits}f}"


def markdown_table(rows: Iterable[tuple[str, str, dict]], first_header: str = "model") -> str:
    lines = [f"| {first_header} | split | PSNR ↑ | SSIM ↑ | LPIPS ↓ | images |",
             "|---|---|---:|---:|---:|---:|"]
    for name, split, r in rows:
        count = str(r.get("n_images", ""))
        if "n_models" in r:
            count = f"{count} ({r['n_models']} models)"
        lines.append(f"| {name} | {split} | {_fmt(r['PSNR'], 2)} | {_fmt(r['SSIM'], 4)} | "
                     f"{_fmt(r['LPIPS'], 4)} | {count} |")
    return "\n".join(lines)


def region_table(rows: Iterable[tuple[str, str, dict]], first_header: str = "model") -> str:
    """The region metrics of ``rows`` (whose summaries have ``regions``): one row per region."""
    lines = [f"| {first_header} | split | region | PSNR ↑ | SSIM ↑ | LPIPS ↓ | images |",
             "|---|---|---|---:|---:|---:|---:|"]
    for name, split, r in rows:
        for region, v in (r.get("regions") or {}).items():
            count = str(v["n_images"])
            if "n_models" in v:
                count = f"{count} ({v['n_models']} models)"
            lines.append(f"| {name} | {split} | {region} | {_fmt(v['PSNR'], 2)} | "
                         f"{_fmt(v['SSIM'], 4)} | {_fmt(v['LPIPS'], 4)} | {count} |")
    return "\n".join(lines)


def mean_over_models(results: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per split, the unweighted mean over models of their per-split means."""
    splits: list[str] = []
    for res in results.values():
        splits += [s for s in res if s not in splits]
    mean = {}
    for split in splits:
        entries = [res[split] for res in results.values()
                   if split in res and res[split]["n_images"] > 0]
        mean[split] = {k: (float(np.mean([e[k] for e in entries])) if entries else None)
                       for k in METRICS}
        mean[split]["n_images"] = int(sum(e["n_images"] for e in entries))
        mean[split]["n_models"] = len(entries)
        region_entries = [e["regions"] for e in entries if e.get("regions")]
        if region_entries:
            mean[split]["regions"] = {}
            for region in region_entries[0]:
                present = [e[region] for e in region_entries if e[region]["n_images"] > 0]
                mean[split]["regions"][region] = {
                    **{k: _mean_or_none([p[k] for p in present if p[k] is not None])
                       for k in METRICS},
                    "n_images": int(sum(p["n_images"] for p in present)), "n_models": len(present)}
    return mean


# ----------------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------------
def model_regions(model: Path, mode: str) -> tuple[dict | None, str]:
    """``({split: FrameRegions}, region_metrics string)`` for ``--regions mode``; None when off or
    not possible (``auto``: one line on stderr says why; ``flame``: an error)."""
    if mode == "none":
        return None, "off (--regions none)"
    from scene.data.regions import model_frame_regions

    sources, why = model_frame_regions(model)
    if sources is None:
        if mode == "flame":
            raise UserFacingError(f"--regions flame: no region metrics for {model}: {why}; "
                                  "evaluate with --regions auto or none")
        print(f"note: region metrics skipped for {model}: {why}", file=sys.stderr)
        return None, f"skipped: {why}"
    return sources, "flame masks, tracked mesh"


def evaluate_model(model: Path, scorer: Scorer, splits: list[str] | None,
                   iteration: int | None, use_mask: bool, regions: str = "auto"
                   ) -> tuple[dict[str, dict], str]:
    """Score a model folder; returns ``({split: summary}, region_metrics)`` and writes
    results.json (the summaries plus ``metrics``, ``lpips_net``, ``protocol``,
    ``region_metrics``), per_view.json and per_view.csv. ``regions``: ``--regions`` (auto,
    flame, none)."""
    if not model.is_dir():
        raise MissingFileError(f"model folder not found: {model}")
    region_sources, region_note = model_regions(model, regions)
    background = read_background(model)
    if splits is None:
        splits = discover_splits(model)
        if not splits:
            raise MissingFileError(
                f"no rendered splits in {model} (expected {model}/<split>/ours_<iteration>/"
                f"renders/*.png): {RENDER_HINT}")
    results: dict[str, dict] = {}
    per_view: dict[str, dict] = {}
    for split in splits:
        if split in RESULT_META_KEYS:
            raise UserFacingError(f"{model / split}: a split may not be named '{split}' (a key of "
                                  "results.json); rename the folder")
        split_dir = model / split
        if not split_dir.is_dir():
            raise MissingFileError(f"split folder not found: {split_dir}: {RENDER_HINT} "
                                   f"(for split '{split}'); where render.py said the split has no frames (the "
                                   f"novel views of a one-camera subject), there is nothing to score: leave "
                                   f"'{split}' out of --split")
        it_dir = find_iteration_dir(split_dir, iteration)
        unfinished = unfinished_render(it_dir)
        if unfinished:
            raise UserFacingError(unfinished)
        pairs = match_pairs(it_dir / "renders", it_dir / "gt",
                            it_dir / "masks" if use_mask else None, strict_gt=True,
                            gt_hint="re-run render.py for this model (it writes gt/ beside renders/)")
        if not pairs:
            print(f"note: {it_dir / 'renders'} holds no images; split '{split}' has no score",
                  file=sys.stderr)
        split_regions = None if region_sources is None else region_sources.get(split)
        views = scorer.score(pairs, background, use_mask, desc=f"{model.name}/{split}",
                             regions=split_regions)
        unlabelled = sum("regions" not in v for v in views.values())
        if region_sources is not None and unlabelled:
            print(f"note: {unlabelled} of {len(views)} image(s) of {model / split} are not frames of "
                  "the training subject (at its resolution): no region metrics for them",
                  file=sys.stderr)
        per_view[split] = views
        results[split] = summarize(views)
    write_json(model / "results.json",
               {**results, **scorer.describe(), "protocol": read_protocol(model),
                "region_metrics": region_note})
    write_json(model / "per_view.json", per_view)
    write_csv(model / "per_view.csv", per_view)
    return results, region_note


def evaluate_folders(renders: Path, gt: Path, masks: Path | None, scorer: Scorer,
                     use_mask: bool) -> tuple[dict, dict]:
    pairs = match_pairs(renders, gt, masks if use_mask else None, strict_gt=False,
                        gt_hint="--gt must hold an image of the same name for every render")
    if not pairs:
        raise MissingFileError(f"no images (*.png, *.jpg) in {renders}: nothing to score")
    views = scorer.score(pairs, WHITE, use_mask, desc=renders.name)
    return summarize(views), views


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="PSNR / SSIM / LPIPS of rendered images against ground truth.",
        epilog="Exit status: 0 ok, 2 bad input (one line on stderr says what to fix).")
    p.add_argument("-m", "--model_paths", "--model-paths", nargs="+", type=Path, default=None,
                   metavar="MODEL", help="model folders written by train.py / render.py")
    p.add_argument("--split", nargs="+", default=None,
                   help="splits to score (default: every MODEL/<split>/ours_* found)")
    p.add_argument("--iteration", type=int, default=None,
                   help="score MODEL/<split>/ours_<N> (default: the latest)")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the table over all models (and their mean) as JSON")
    p.add_argument("--renders", type=Path, default=None, help="folder of rendered images")
    p.add_argument("--gt", type=Path, default=None, help="folder of same-named GT images")
    p.add_argument("--masks", type=Path, default=None,
                   help="folder of same-named GT foreground mattes (with --renders, --mask fg)")
    p.add_argument("--json", type=Path, default=None,
                   help="with --renders/--gt: write {PSNR, SSIM, LPIPS, n_images, per_view, "
                        "metrics, lpips_net}")
    p.add_argument("--metrics", choices=list(METRIC_SETS), default=DEFAULT_METRICS,
                   help="metric set: gaussian-avatars (default; as 3DGS/GaussianAvatars "
                        "metrics.py: zero-padded SSIM, LPIPS fed [0, 1] images) or standard "
                        "(scikit-image SSIM, LPIPS inputs mapped to [-1, 1])")
    p.add_argument("--lpips", choices=["vgg", "alex"], default=None,
                   help="LPIPS backbone (default: the metric set's, vgg for both, as "
                        "GaussianAvatars; alex is ~10x faster)")
    p.add_argument("--mask", choices=["none", "fg"], default="none",
                   help="fg: composite render and GT over the background with the GT matte")
    p.add_argument("--batch-size", type=int, default=2,
                   help="images per batch (default 2; VGG at 550x802 needs ~0.7 GB per image)")
    p.add_argument("--regions", choices=list(REGION_MODES), default="auto",
                   help="region metrics (face, hair_scalp, neck, other, head) from the FLAME masks "
                        "projected with each frame's tracked mesh: auto (default: where the model "
                        "folder has FLAME tracking and masks, else skipped with a note), flame "
                        "(required: an error where unavailable), none")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return p


def run(args: argparse.Namespace) -> None:
    use_mask = args.mask == "fg"
    folder_mode = args.renders is not None or args.gt is not None
    if folder_mode and args.model_paths:
        raise UserFacingError("give either -m MODEL ... or --renders DIR --gt DIR, not both")
    if folder_mode and (args.renders is None or args.gt is None):
        raise UserFacingError("--renders and --gt go together: give both folders")
    if not folder_mode and not args.model_paths:
        raise UserFacingError("nothing to evaluate: give -m MODEL [MODEL ...] or "
                              "--renders DIR --gt DIR")
    if folder_mode and use_mask and args.masks is None:
        raise UserFacingError("--mask fg with --renders/--gt needs --masks DIR (GT mattes)")
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        raise UserFacingError(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")

    # fails early without weights
    scorer = Scorer(args.metrics, args.lpips, args.batch_size, args.device)
    setting = (f"metrics: {scorer.metric_set.name} ({scorer.metric_set.description}); "
               f"LPIPS {scorer.lpips_net}; "
               f"{'foreground (GT matte)' if use_mask else 'full image'}")

    if folder_mode and args.regions == "flame":
        raise UserFacingError("--regions flame needs -m MODEL (the FLAME tracking of its subject); "
                              "--renders/--gt folders have none")
    if folder_mode:
        summary, views = evaluate_folders(args.renders, args.gt, args.masks, scorer, use_mask)
        if args.json is not None:
            write_json(args.json, {**summary, "per_view": views, **scorer.describe()})
        print(setting)
        print()
        print(markdown_table([(str(args.renders), "-", summary)], first_header="renders"))
        return

    all_results: dict[str, dict] = {}
    region_notes: dict[str, str] = {}
    for model in args.model_paths:
        all_results[str(model)], region_notes[str(model)] = evaluate_model(
            model, scorer, args.split, args.iteration, use_mask, args.regions)
    rows = [(m, s, r) for m, res in all_results.items() for s, r in res.items()]
    mean = mean_over_models(all_results) if len(all_results) > 1 else None
    if mean:
        rows += [("**mean**", s, r) for s, r in mean.items()]
    protocols = {str(m): read_protocol(m) for m in args.model_paths}
    if len(set(protocols.values())) == 1:
        protocol = next(iter(protocols.values())) or "unknown"
    else:
        protocol = "; ".join(f"{m}: {p or 'unknown'}" for m, p in protocols.items())
    print(f"{setting}; protocol: {protocol}")
    print()
    print("full frame:")
    print(markdown_table(rows))
    if any(r.get("regions") for _, _, r in rows):
        print()
        print("regions (FLAME masks projected with each frame's tracked mesh; head = face + "
              "hair_scalp; scene/data/regions.py):")
        print(region_table(rows))
        if scorer.region_images:
            print(f"note: region labels took {1000 * scorer.region_seconds / scorer.region_images:.1f} "
                  f"ms/image ({scorer.region_images} images)", file=sys.stderr)
    if args.out is not None:
        models = {m: {**res, **scorer.describe(), "protocol": protocols[m],
                      "region_metrics": region_notes[m]} for m, res in all_results.items()}
        write_json(args.out, {"models": models,
                              "mean": mean if mean is not None else mean_over_models(all_results),
                              **scorer.describe()})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
