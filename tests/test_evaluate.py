"""evaluate.py end to end on folder trees built here (run as a subprocess, like a user would).

Every score is checked against an independent computation (tests/metric_reference.py: numpy
PSNR, scipy zero-padded-convolution SSIM for ``--metrics gaussian-avatars``, scikit-image SSIM
for ``standard``; LPIPS through our network one image at a time, for gaussian-avatars on inputs
``(x + 1) / 2`` with the default [-1, 1] mapping, which is the network fed ``x`` as it is).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.metric_reference import ga_ssim, standard_ssim

REPO = Path(__file__).resolve().parent.parent
FETCH = REPO / "scripts" / "fetch_lpips_weights.py"
H, W = 48, 40


@pytest.fixture(scope="module")
def lpips_alex(lpips_weights):
    from utils.lpips import LPIPS
    return LPIPS(net="alex")


def run_eval(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=600, env=env)


def _img(rng):
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 4 * yy)], axis=-1)
    return np.clip(base + 0.15 * rng.standard_normal((H, W, 3)), 0, 1)


def _save(path: Path, arr: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path)


def make_split(folder: Path, names, seed, noise=0.08, masks=True):
    rng = np.random.default_rng(seed)
    for name in names:
        gt = _img(rng)
        _save(folder / "gt" / name, gt)
        _save(folder / "renders" / name, gt + noise * rng.standard_normal(gt.shape))
        if masks:
            yy, xx = np.mgrid[:H, :W]
            r2 = (yy - H / 2) ** 2 / (H / 3) ** 2 + (xx - W / 2) ** 2 / (W / 3) ** 2
            _save(folder / "masks" / name, np.clip((1 - r2) * 4, 0, 1))  # soft grey matte


def make_model(root: Path, seed=0, config: str | None = None) -> Path:
    model = root
    make_split(model / "val" / "ours_500", ["00000_08.png", "00001_08.png"], seed + 1, noise=0.2)
    make_split(model / "val" / "ours_1000", ["00000_08.png", "00001_08.png", "00002_08.png"],
               seed + 2)
    make_split(model / "test" / "ours_1000", ["00010_00.png", "00010_01.png"], seed + 3)
    if config is not None:
        (model / "config.yaml").write_text(config)
    return model


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def direct_metrics(folder: Path, lpips_model, mask_bg=None, metrics="gaussian-avatars") -> dict:
    """Independent computation: numpy PSNR; SSIM by scipy's zero-padded convolution
    (gaussian-avatars) or scikit-image (standard); our LPIPS one image at a time, given
    ``(x + 1) / 2`` for gaussian-avatars so that its ``2 u - 1`` mapping hands the network x."""
    out = {}
    for r_path in sorted((folder / "renders").glob("*.png")):
        r, g = _load(r_path), _load(folder / "gt" / r_path.name)
        if mask_bg is not None:
            m = _load(folder / "masks" / r_path.name)[..., None]
            bg = np.asarray(mask_bg, dtype=np.float64).reshape(1, 1, 3)
            r, g = r * m + bg * (1 - m), g * m + bg * (1 - m)
        with np.errstate(divide="ignore"):
            p = 10 * np.log10(1.0 / np.mean((r - g) ** 2))
        if metrics == "gaussian-avatars":
            s = ga_ssim(r, g)
            lr, lg = (r + 1) / 2, (g + 1) / 2
        else:
            s = standard_ssim(r, g)
            lr, lg = r, g
        with torch.no_grad():
            lp = float(lpips_model(torch.from_numpy(lr).permute(2, 0, 1)[None].float(),
                                   torch.from_numpy(lg).permute(2, 0, 1)[None].float())[0])
        out[r_path.name] = {"PSNR": p, "SSIM": s, "LPIPS": lp}
    return out


def splits_of(results: dict) -> dict:
    """The per-split entries of results.json (without its metrics/lpips_net/protocol keys)."""
    return {k: v for k, v in results.items() if k not in ("metrics", "lpips_net", "protocol", "region_metrics")}


def assert_views_close(ours: dict, ref: dict):
    assert sorted(ours) == sorted(ref)
    for name in ref:
        assert set(ours[name]) == {"PSNR", "SSIM", "LPIPS"}
        assert ours[name]["PSNR"] == pytest.approx(ref[name]["PSNR"], abs=1e-8)
        assert ours[name]["SSIM"] == pytest.approx(ref[name]["SSIM"], abs=1e-6)
        assert ours[name]["LPIPS"] == pytest.approx(ref[name]["LPIPS"], abs=1e-5)


def assert_summary(summary: dict, views: dict):
    assert set(summary) == {"PSNR", "SSIM", "LPIPS", "n_images"}
    assert summary["n_images"] == len(views) and isinstance(summary["n_images"], int)
    for k in ("PSNR", "SSIM", "LPIPS"):
        assert isinstance(summary[k], float)
        assert summary[k] == pytest.approx(np.mean([v[k] for v in views.values()]), abs=1e-8)


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert last.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in last, (needle, last)


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metrics", [None, "gaussian-avatars", "standard"])
def test_model_mode_latest_iteration_all_splits(tmp_path, lpips_alex, metrics):
    model = make_model(tmp_path / "subject_a", config="config: {}\neval: true\n")
    proc = run_eval("-m", model, "--lpips", "alex", *(["--metrics", metrics] if metrics else []))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    metrics = metrics or "gaussian-avatars"  # the default

    results = json.loads((model / "results.json").read_text())
    per_view = json.loads((model / "per_view.json").read_text())
    assert list(results) == ["val", "test", "metrics", "lpips_net", "protocol", "region_metrics"]
    assert (results["metrics"], results["lpips_net"]) == (metrics, "alex")
    assert results["protocol"] == "ga (--eval)"
    assert list(per_view) == ["val", "test"]
    for split in ("val", "test"):
        ref = direct_metrics(model / split / "ours_1000", lpips_alex, metrics=metrics)
        assert_views_close(per_view[split], ref)
        assert_summary(results[split], per_view[split])
    assert results["val"]["n_images"] == 3 and results["test"]["n_images"] == 2

    with open(model / "per_view.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["val"] * 3 + ["test"] * 2
    for r in rows:
        v = per_view[r["split"]][r["image"]]
        assert all(float(r[k]) == pytest.approx(v[k], abs=1e-12) for k in ("PSNR", "SSIM", "LPIPS"))

    # Markdown table on stdout, after a line naming the metric set and the protocol
    assert f"metrics: {metrics} (" in proc.stdout and "LPIPS alex" in proc.stdout
    assert "protocol: ga (--eval)" in proc.stdout
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    assert table[0].startswith("| model | split | PSNR")
    assert len(table) == 2 + 2
    val_row = next(ln for ln in table if "| val |" in ln)
    assert f"{results['val']['PSNR']:.2f}" in val_row and f"{results['val']['SSIM']:.4f}" in val_row


def test_iteration_and_split_selection(tmp_path, lpips_alex):
    model = make_model(tmp_path / "subject_a")
    proc = run_eval("-m", model, "--lpips", "alex", "--split", "val", "--iteration", 500)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((model / "results.json").read_text())
    per_view = json.loads((model / "per_view.json").read_text())
    assert list(splits_of(results)) == ["val"]
    assert results["protocol"] is None and "protocol: unknown" in proc.stdout  # no config.yaml
    assert_views_close(per_view["val"], direct_metrics(model / "val" / "ours_500", lpips_alex))
    assert results["val"]["n_images"] == 2


def test_several_models_mean_and_out(tmp_path):
    a = make_model(tmp_path / "a", seed=0)
    b = make_model(tmp_path / "b", seed=10)
    out = tmp_path / "results_all.json"
    proc = run_eval("-m", a, b, "--lpips", "alex", "--out", out)
    assert proc.returncode == 0, proc.stderr
    combined = json.loads(out.read_text())
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    assert combined["models"] == {str(a): ra, str(b): rb}
    assert (combined["metrics"], combined["lpips_net"]) == ("gaussian-avatars", "alex")
    for split in ("val", "test"):
        mean = combined["mean"][split]
        for k in ("PSNR", "SSIM", "LPIPS"):
            assert mean[k] == pytest.approx((ra[split][k] + rb[split][k]) / 2, abs=1e-12)
        assert mean["n_models"] == 2
        assert mean["n_images"] == ra[split]["n_images"] + rb[split]["n_images"]
    assert sum("**mean**" in ln for ln in proc.stdout.splitlines()) == 2


def test_mask_fg_uses_gt_matte_and_config_background(tmp_path, lpips_alex):
    config = "config:\n  run:\n    background: [0.0, 0.0, 0.0]\n    seed: 0\n"
    model = make_model(tmp_path / "subject_a", config=config)
    proc = run_eval("-m", model, "--lpips", "alex", "--mask", "fg", "--split", "test",
                    "--metrics", "standard")
    assert proc.returncode == 0, proc.stderr
    per_view = json.loads((model / "per_view.json").read_text())
    folder = model / "test" / "ours_1000"
    assert_views_close(per_view["test"], direct_metrics(folder, lpips_alex, mask_bg=(0, 0, 0),
                                                         metrics="standard"))
    # differs from the full-image score and from compositing over white
    full = direct_metrics(folder, lpips_alex, metrics="standard")
    white = direct_metrics(folder, lpips_alex, mask_bg=(1, 1, 1), metrics="standard")
    name = "00010_00.png"
    assert per_view["test"][name]["PSNR"] != pytest.approx(full[name]["PSNR"], abs=1e-3)
    assert per_view["test"][name]["SSIM"] != pytest.approx(white[name]["SSIM"], abs=1e-6)
    # no config.yaml: white
    (model / "config.yaml").unlink()
    proc = run_eval("-m", model, "--lpips", "alex", "--mask", "fg", "--split", "test",
                    "--metrics", "standard")
    assert proc.returncode == 0, proc.stderr
    assert_views_close(json.loads((model / "per_view.json").read_text())["test"], white)
    # the gaussian-avatars set composites the same way
    proc = run_eval("-m", model, "--lpips", "alex", "--mask", "fg", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    assert_views_close(json.loads((model / "per_view.json").read_text())["test"],
                       direct_metrics(folder, lpips_alex, mask_bg=(1, 1, 1)))


def test_empty_split_is_reported_not_fatal(tmp_path):
    model = make_model(tmp_path / "subject_a")
    (model / "free" / "ours_1000" / "renders").mkdir(parents=True)
    (model / "free" / "ours_1000" / "gt").mkdir(parents=True)
    proc = run_eval("-m", model, "--lpips", "alex")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((model / "results.json").read_text())
    assert results["free"] == {"PSNR": None, "SSIM": None, "LPIPS": None, "n_images": 0}
    assert "holds no images" in proc.stderr


@pytest.mark.parametrize("metrics", ["gaussian-avatars", "standard"])
def test_folder_mode(tmp_path, lpips_alex, metrics):
    folder = tmp_path / "baseline"
    make_split(folder, ["a.png", "b.png", "c.png"], seed=5, masks=False)
    # an identical pair: infinite PSNR is written as null
    Image.open(folder / "gt" / "c.png").save(folder / "renders" / "c.png")
    _save(folder / "gt" / "extra.png", np.zeros((H, W, 3)))  # GT without render: noted, skipped
    out = tmp_path / "scores.json"
    proc = run_eval("--renders", folder / "renders", "--gt", folder / "gt", "--json", out,
                    "--lpips", "alex", "--metrics", metrics)
    assert proc.returncode == 0, proc.stderr
    assert "have no render" in proc.stderr
    data = json.loads(out.read_text())
    assert set(data) == {"PSNR", "SSIM", "LPIPS", "n_images", "per_view", "metrics", "lpips_net"}
    assert (data["metrics"], data["lpips_net"]) == (metrics, "alex")
    assert f"metrics: {metrics} (" in proc.stdout
    assert data["n_images"] == 3
    ref = direct_metrics(folder, lpips_alex, metrics=metrics)
    assert data["per_view"]["c.png"]["PSNR"] is None and np.isinf(ref["c.png"]["PSNR"])
    assert data["PSNR"] is None  # mean of per-image PSNR with an infinite term
    ref["c.png"]["PSNR"] = None
    for name in ("a.png", "b.png"):
        assert data["per_view"][name]["PSNR"] == pytest.approx(ref[name]["PSNR"], abs=1e-8)
    for name in ref:
        assert data["per_view"][name]["SSIM"] == pytest.approx(ref[name]["SSIM"], abs=1e-6)
        assert data["per_view"][name]["LPIPS"] == pytest.approx(ref[name]["LPIPS"], abs=1e-5)
    assert data["SSIM"] == pytest.approx(np.mean([ref[n]["SSIM"] for n in ref]), abs=1e-6)
    assert "| renders | split |" in proc.stdout and "inf" in proc.stdout


def test_defaults_are_gaussian_avatars_with_vgg(tmp_path, lpips_weights):
    from utils.lpips import LPIPS

    folder = tmp_path / "f"
    make_split(folder, ["a.png"], seed=9, masks=False)
    vgg = LPIPS(net="vgg")
    for extra, metrics in (((), "gaussian-avatars"), (("--metrics", "standard"), "standard")):
        proc = run_eval("--renders", folder / "renders", "--gt", folder / "gt", "--json",
                        tmp_path / "s.json", *extra)
        assert proc.returncode == 0, proc.stderr
        assert "LPIPS vgg" in proc.stdout and f"metrics: {metrics}" in proc.stdout
        data = json.loads((tmp_path / "s.json").read_text())
        assert (data["metrics"], data["lpips_net"]) == (metrics, "vgg")
        ref = direct_metrics(folder, vgg, metrics=metrics)
        assert data["LPIPS"] == pytest.approx(ref["a.png"]["LPIPS"], abs=1e-5)
        assert data["SSIM"] == pytest.approx(ref["a.png"]["SSIM"], abs=1e-6)


def test_protocol_from_config(tmp_path, lpips_weights):
    """results.json and the table name the protocol: config.yaml's top-level ``protocol`` entry
    (not one nested in a section), else ga (--eval) from ``eval: true``."""
    model = make_model(tmp_path / "m", config="config:\n  protocol: nested\neval: true\n"
                                               "protocol: nersemble-v2-benchmark\n")
    proc = run_eval("-m", model, "--lpips", "alex", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((model / "results.json").read_text())["protocol"] == "nersemble-v2-benchmark"
    assert "protocol: nersemble-v2-benchmark" in proc.stdout
    (model / "config.yaml").write_text("config:\n  protocol: nested\neval: false\n")
    proc = run_eval("-m", model, "--lpips", "alex", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    protocol = json.loads((model / "results.json").read_text())["protocol"]
    assert protocol.startswith("none (trained without --eval") and protocol in proc.stdout


@pytest.mark.parametrize("sub", ["renders", "gt"])
def test_error_ambiguous_image_names(tmp_path, lpips_weights, sub):
    """x.png beside x.jpg would be scored twice (or against the wrong file): one error line
    naming both files and the folder, in model and folder mode."""
    model = make_model(tmp_path / "m")
    folder = model / "test" / "ours_1000"
    Image.open(folder / sub / "00010_00.png").save(folder / sub / "00010_00.jpg")
    assert_user_error(run_eval("-m", model, "--lpips", "alex"), "ambiguous",
                      str(folder / sub), "00010_00.png", "00010_00.jpg")
    assert_user_error(run_eval("--renders", folder / "renders", "--gt", folder / "gt",
                               "--lpips", "alex"), "ambiguous", str(folder / sub),
                      "00010_00.png", "00010_00.jpg")


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the fix, exit code 2, no traceback.
# ---------------------------------------------------------------------------------------------
def test_error_no_renders(tmp_path, lpips_weights):
    model = tmp_path / "untrained"
    model.mkdir()
    assert_user_error(run_eval("-m", model, "--lpips", "alex"), str(model), "render.py")
    (model / "val" / "ours_1000" / "gt").mkdir(parents=True)
    assert_user_error(run_eval("-m", model, "--lpips", "alex"),
                      str(model / "val" / "ours_1000" / "renders"), "render.py")
    assert_user_error(run_eval("-m", tmp_path / "nope", "--lpips", "alex"),
                      str(tmp_path / "nope"))


def test_error_missing_split_or_iteration(tmp_path, lpips_weights):
    model = make_model(tmp_path / "m")
    assert_user_error(run_eval("-m", model, "--lpips", "alex", "--split", "train"),
                      str(model / "train"), "render.py")
    assert_user_error(run_eval("-m", model, "--lpips", "alex", "--iteration", 7),
                      "ours_7", "500, 1000")


def test_error_missing_gt(tmp_path, lpips_weights):
    model = make_model(tmp_path / "m")
    gt = model / "val" / "ours_1000" / "gt" / "00001_08.png"
    gt.unlink()
    assert_user_error(run_eval("-m", model, "--lpips", "alex"), str(gt),
                      "no ground truth for render")
    # folder mode too
    folder = model / "val" / "ours_1000"
    assert_user_error(run_eval("--renders", folder / "renders", "--gt", folder / "gt",
                               "--lpips", "alex"), str(gt), "--gt")


def test_error_size_mismatch(tmp_path, lpips_weights):
    model = make_model(tmp_path / "m")
    render = model / "test" / "ours_1000" / "renders" / "00010_01.png"
    _save(render, np.zeros((H + 2, W, 3)))
    assert_user_error(run_eval("-m", model, "--lpips", "alex"), "size mismatch", str(render),
                      f"{W}x{H + 2}", f"{W}x{H}")


def test_error_missing_masks(tmp_path, lpips_weights):
    model = tmp_path / "m"
    make_split(model / "val" / "ours_1", ["x.png"], seed=1, masks=False)
    assert_user_error(run_eval("-m", model, "--lpips", "alex", "--mask", "fg"),
                      str(model / "val" / "ours_1" / "masks"), "without --mask")


def test_error_missing_lpips_weights(tmp_path):
    model = make_model(tmp_path / "m")
    proc = run_eval("-m", model, "--lpips", "vgg",
                    env_extra={"AVATAR_CACHE_DIR": str(tmp_path / "empty_cache")})
    assert_user_error(proc, str(tmp_path / "empty_cache" / "lpips" / "vgg.pth"),
                      "python scripts/fetch_lpips_weights.py")


def test_error_bad_arguments(tmp_path):
    assert_user_error(run_eval("--renders", tmp_path), "--gt")
    assert_user_error(run_eval(), "nothing to evaluate")
    proc = run_eval("-m", tmp_path, "--lpips", "squeeze")  # argparse: usage + exit 2
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
