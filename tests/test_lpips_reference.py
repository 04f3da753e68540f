"""Our torchvision-free LPIPS against the reference `lpips==0.1.4` package.

The reference runs in a separate, test-only virtual environment (torchvision must never enter the
product environment): ``scripts/make_lpips_reference_env.sh`` creates it once under
``${AVATAR_CACHE_DIR:-<repo>/.cache}/lpips-ref-venv`` (about a minute; cached afterwards). The
reference model is built with ``pnet_rand=True`` (no ImageNet download) and then given the
backbone and linear-head weights of our converted state dict, so the comparison checks the
architecture and the arithmetic; the linear heads are additionally compared with the v0.1
weights shipped inside the lpips package (an independent source).

Both input conventions are checked: ``normalize=True`` (inputs mapped to [-1, 1], evaluate.py's
``standard`` metric set) and ``normalize=False`` on the same [0, 1] images (fed as they are, what
3DGS's and GaussianAvatars' ``metrics.py`` do: evaluate.py's ``gaussian-avatars`` set).

If the reference environment cannot be built (pip cannot fetch a package), the tests FAIL with
pip's reason: they never skip silently.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
FETCH = REPO / "scripts" / "fetch_lpips_weights.py"
MAKE_ENV = REPO / "scripts" / "make_lpips_reference_env.sh"


def _cache_root() -> Path:
    root = os.environ.get("AVATAR_CACHE_DIR")
    return Path(root) if root else REPO / ".cache"


@pytest.fixture(scope="session")
def ref_python() -> Path:
    venv = _cache_root() / "lpips-ref-venv"
    start = time.time()
    proc = subprocess.run(["bash", str(MAKE_ENV)], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable})
    if proc.returncode != 0:
        pytest.fail("could not build the LPIPS reference environment with "
                    f"scripts/make_lpips_reference_env.sh (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    elapsed = time.time() - start
    if elapsed > 5:
        print(f"\n[lpips-ref] reference environment built in {elapsed:.0f} s", file=sys.stderr)
    return venv / "bin" / "python"


# Runs inside the reference venv: argv = net, weights .pth, inputs .npz, output .json.
REFERENCE_SCRIPT = r"""
import json, os, sys, types
# The registry's torchvision is a CUDA build: its operator registrations fail beside the CPU
# torch. lpips only needs the model classes, which work without them.
for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules[name] = types.ModuleType(name)
import numpy as np
import torch
import lpips

net, weights, inputs, output = sys.argv[1:5]
ours = torch.load(weights, map_location="cpu", weights_only=True)
ref = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()

# Linear heads shipped with the package (v0.1), before we overwrite them.
shipped = [ref.lins[i].model[1].weight.detach().clone() for i in range(5)]
lin_diff = max(float((shipped[i] - ours[f"lins.{i}.weight"]).abs().max()) for i in range(5))

# torchvision feature indices of our convolutions, and the lpips slice that holds each.
if net == "alex":
    ours_keys = [f"net.conv{i}" for i in range(1, 6)]
    tv_index = [0, 3, 6, 8, 10]
    bounds = [2, 5, 8, 10, 12]
else:
    ours_keys = [f"net.convs.{i}" for i in range(13)]
    tv_index = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    bounds = [4, 9, 16, 23, 30]
net_sd = {}
for key, idx in zip(ours_keys, tv_index):
    slice_no = next(s for s, b in enumerate(bounds) if idx < b) + 1
    for p in ("weight", "bias"):
        net_sd[f"slice{slice_no}.{idx}.{p}"] = ours[f"{key}.{p}"]
ref.net.load_state_dict(net_sd, strict=True)
with torch.no_grad():
    for i in range(5):
        ref.lins[i].model[1].weight.copy_(ours[f"lins.{i}.weight"])

data = np.load(inputs)
result = {"lin_diff_vs_shipped": lin_diff, "torch": torch.__version__}
with torch.no_grad():
    for key in sorted(k for k in data.files if k.startswith("x_")):
        x = torch.from_numpy(data[key])
        y = torch.from_numpy(data["y_" + key[2:]])
        result[key[2:]] = ref(x, y, normalize=True).flatten().tolist()
        result["raw_" + key[2:]] = ref(x, y, normalize=False).flatten().tolist()
with open(output, "w") as f:
    json.dump(result, f)
"""


def _structured_pair(rng, b, h, w):
    """Smooth colour fields with edges, and a perturbed copy (blur/noise/shift/colour)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    xs, ys = [], []
    for _ in range(b):
        f = rng.uniform(1, 6, size=3)
        img = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * (f[c] * xx + rng.uniform() * yy))
                        for c in range(3)])
        img[:, h // 3: 2 * h // 3, w // 4: w // 2] = rng.uniform(size=(3, 1, 1))
        pert = np.roll(img, 1, axis=2) * 0.9 + 0.05 + 0.03 * rng.standard_normal(img.shape)
        xs.append(img)
        ys.append(np.clip(pert, 0, 1))
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


CASES = {
    "alex": {"rand_64x96": (2, 64, 96), "rand_67x101": (1, 67, 101), "struct_110x160": (2, 110, 160)},
    "vgg": {"rand_48x64": (2, 48, 64), "rand_37x53": (1, 37, 53), "struct_80x96": (1, 80, 96)},
}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_reference_package(net, lpips_weights, ref_python, tmp_path):
    from utils.lpips import LPIPS

    rng = np.random.default_rng(1234 if net == "alex" else 4321)
    arrays = {}
    for name, (b, h, w) in CASES[net].items():
        if name.startswith("rand"):
            x = rng.random((b, 3, h, w), dtype=np.float32)
            y = np.clip(x + 0.25 * rng.standard_normal(x.shape).astype(np.float32), 0, 1)
            # one fully independent pair too
            y[0] = rng.random((3, h, w), dtype=np.float32)
        else:
            x, y = _structured_pair(rng, b, h, w)
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x, y
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **arrays)
    script = tmp_path / "reference.py"
    script.write_text(REFERENCE_SCRIPT)
    out = tmp_path / "ref.json"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home")}  # nothing to reuse/download
    proc = subprocess.run([str(ref_python), str(script), net, str(lpips_weights / f"{net}.pth"),
                           str(inputs), str(out)], capture_output=True, text=True, timeout=900,
                          env=env)
    assert proc.returncode == 0, f"reference lpips failed:\n{proc.stdout}\n{proc.stderr}"
    ref = json.loads(out.read_text())

    # The v0.1 linear heads we converted are exactly the ones shipped with the lpips package.
    assert ref["lin_diff_vs_shipped"] == 0.0

    from evaluate import METRIC_SETS

    model = LPIPS(net=net)
    conventions = {"standard": "", "gaussian-avatars": "raw_"}
    with torch.no_grad():
        for name in CASES[net]:
            for metric_set, prefix in conventions.items():
                ours = model(torch.from_numpy(arrays[f"x_{name}"]),
                             torch.from_numpy(arrays[f"y_{name}"]),
                             normalize=METRIC_SETS[metric_set].lpips_normalize).numpy()
                theirs = np.asarray(ref[prefix + name])
                assert ours.shape == theirs.shape
                assert (theirs > 1e-3).all(), f"{name}: degenerate reference distances {theirs}"
                print(f"{net}/{name} ({metric_set}): max |ours - ref| = "
                      f"{np.abs(ours - theirs).max():.2e}")
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5,
                                           err_msg=f"{net}/{name} ({metric_set})")
            # the two conventions are different numbers on the same images
            assert np.abs(np.asarray(ref[name]) - np.asarray(ref["raw_" + name])).min() > 1e-4
