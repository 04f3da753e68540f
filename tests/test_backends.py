"""Backend choice: the parity probe, fallback with one warning line, one-line errors, the gsplat
adapter's per-camera opacities, and the GPU-visible-but-unusable check.

gsplat cannot run here (no CUDA), so a stand-in module named ``gsplat`` plays it: one that fails
the way a first-use CUDA compile fails, one that renders wrongly, and one that renders correctly
(it delegates to our torch backend with gsplat 1.5's call signature and meta layout).
"""
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gaussian_renderer import BackendUnavailableError, rasterize, select_backend  # noqa: E402
from gaussian_renderer import backends, gsplat_backend  # noqa: E402
from gaussian_renderer.torch_backend import rasterize_torch  # noqa: E402
from utils.cli_common import pick_device  # noqa: E402
from utils.errors import InputFileError  # noqa: E402

CPU = torch.device("cpu")


def _correct_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, near_plane,
                           far_plane, eps2d, sh_degree, packed, tile_size, backgrounds, render_mode, rasterize_mode,
                           radius_clip, absgrad, opacity_scale=1.0):
    """gsplat 1.5's ``rasterization`` as far as our adapter uses it: (N,) opacities only."""
    assert opacities.dim() == 1, "gsplat 1.5 rejects per-camera (C, N) opacities"
    assert not packed and rasterize_mode == "classic" and radius_clip == 0.0 and not absgrad
    render, alphas, meta = rasterize_torch(
        means, quats, scales, opacities * opacity_scale, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, eps2d=eps2d,
        tile_size=tile_size)
    return render, alphas, {"means2d": meta["means2d"], "radii": meta["radii_xy"], "depths": meta["depths"],
                            "conics": meta["conics"], "opacities": meta["opacities"]}


def _failing_rasterization(*args, **kwargs):
    raise RuntimeError("Error building extension 'gsplat_cuda': nvcc fatal : cuda/std/cmath: No such file\n"
                       "ninja: build stopped: subcommand failed.")


def _wrong_rasterization(*args, **kwargs):
    return _correct_rasterization(*args, **kwargs, opacity_scale=0.5)


@pytest.fixture
def stand_in_gsplat(monkeypatch):
    """Install a stand-in ``gsplat`` module; returns a function choosing its ``rasterization``."""
    module = types.ModuleType("gsplat")
    module.__version__ = "0.0-stand-in"
    monkeypatch.setitem(sys.modules, "gsplat", module)
    monkeypatch.setattr(gsplat_backend, "_cache", {})
    monkeypatch.setattr(gsplat_backend, "SUPPORTED_DEVICE_TYPES", ("cuda", "cpu"))
    backends.clear_probe_cache()

    def use(fn):
        module.rasterization = fn
        backends.clear_probe_cache()
        return module

    yield use
    backends.clear_probe_cache()


def test_auto_falls_back_with_one_warning_line_when_gsplat_imports_but_cannot_render(stand_in_gsplat):
    stand_in_gsplat(_failing_rasterization)
    lines = []
    choice = select_backend("auto", CPU, candidates=("gsplat", "torch"), warn=lines.append)
    assert choice.name == "torch"
    assert "no faster backend passed" in choice.reason
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "gsplat" in lines[0] and "nvcc fatal" in lines[0] and "Fix:" in lines[0] and "--backend torch" in lines[0]
    assert "ninja" not in lines[0]  # only the first line of the captured error


def test_auto_warns_once_however_often_it_is_asked(stand_in_gsplat):
    """rasterize(backend="auto") asks for the choice on every call: the warning is said once."""
    stand_in_gsplat(_failing_rasterization)
    lines = []
    for _ in range(3):
        assert select_backend("auto", CPU, candidates=("gsplat", "torch"), warn=lines.append).name == "torch"
    assert len(lines) == 1


def test_auto_rejects_a_backend_that_renders_wrongly(stand_in_gsplat):
    stand_in_gsplat(_wrong_rasterization)
    lines = []
    assert select_backend("auto", CPU, candidates=("gsplat", "torch"), warn=lines.append).name == "torch"
    assert len(lines) == 1 and "image differs from the torch backend" in lines[0]


def test_auto_uses_gsplat_when_its_probe_passes_and_caches_the_probe(stand_in_gsplat):
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return _correct_rasterization(*args, **kwargs)

    stand_in_gsplat(counting)
    lines = []
    choice = select_backend("auto", CPU, candidates=("gsplat", "torch"), warn=lines.append)
    assert (choice.name, lines) == ("gsplat", [])
    n = len(calls)
    assert select_backend("auto", CPU, candidates=("gsplat", "torch"), warn=lines.append).name == "gsplat"
    assert len(calls) == n  # the probe ran once in this process


def test_explicit_backend_that_cannot_run_is_one_clear_error(stand_in_gsplat):
    stand_in_gsplat(_failing_rasterization)
    with pytest.raises(BackendUnavailableError) as exc:
        select_backend("gsplat", CPU)
    msg = str(exc.value)
    assert "\n" not in msg and "nvcc fatal" in msg and "Fix:" in msg


def test_train_with_unavailable_backend_prints_one_line(tmp_path, capsys, monkeypatch):
    """The real situation here: gsplat is not installed (or cannot run on the CPU)."""
    import train
    backends.clear_probe_cache()
    code = train.main(["-s", str(tmp_path), "-m", str(tmp_path / "out"), "--backend", "gsplat", "--device", "cpu",
                       "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: rasterizer backend 'gsplat' cannot run on cpu")


def _scene(C=2, N=40, seed=3):
    scene = backends.probe_scene(CPU, n=N, seed=seed)
    g = torch.Generator().manual_seed(seed)
    view2 = torch.eye(4)
    view2[0, 3] = 0.05
    scene["viewmats"] = torch.stack([scene["viewmats"][0], view2])[:C]
    scene["Ks"] = scene["Ks"].expand(C, 3, 3).clone()
    scene["opacities"] = (0.2 + 0.7 * torch.rand(C, N, generator=g)).requires_grad_(True)
    scene["backgrounds"] = torch.rand(C, 3, generator=g)
    return scene


@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED"])
def test_gsplat_adapter_takes_per_camera_opacities(stand_in_gsplat, render_mode):
    """(C, N) opacities, which gsplat 1.5 rejects, give the torch backend's images, gradients and
    densification signal (means2d.grad) through the adapter."""
    stand_in_gsplat(_correct_rasterization)
    out = {}
    for backend in ("torch", "gsplat"):
        s = _scene()
        leaves = {k: s[k].detach().clone().requires_grad_(True) for k in ("means", "opacities", "colors")}
        img, alpha, meta = rasterize(leaves["means"], s["quats"], s["scales"], leaves["opacities"], leaves["colors"],
                                     s["viewmats"], s["Ks"], s["width"], s["height"], backgrounds=s["backgrounds"],
                                     render_mode=render_mode, backend=backend)
        (img.square().sum() + alpha.sum()).backward()
        out[backend] = (img, alpha, meta, leaves)
    (ti, ta, tm, tl), (gi, ga, gm, gl) = out["torch"], out["gsplat"]
    assert gm["backend"] == "gsplat" and gi.shape == ti.shape == (2, 32, 40, 4 if render_mode == "RGB+ED" else 3)
    torch.testing.assert_close(gi, ti, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ga, ta, atol=1e-6, rtol=1e-6)
    for k in ("means", "opacities", "colors"):
        torch.testing.assert_close(gl[k].grad, tl[k].grad, atol=1e-6, rtol=1e-5)
    assert gm["means2d"].shape == (2, 40, 2) and gm["radii"].shape == (2, 40)
    torch.testing.assert_close(gm["means2d"].grad, tm["means2d"].grad, atol=1e-6, rtol=1e-5)
    assert torch.equal(gm["radii"], tm["radii"])


def _fake_nvidia_smi(folder: Path) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch can use the GPU, so nothing is refused")
def test_auto_device_refuses_a_gpu_that_torch_cannot_use(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(InputFileError) as exc:
        pick_device("auto")
    msg = str(exc.value)
    assert "NVIDIA H200" in msg and "install the torch build for your driver" in msg and "--device cpu" in msg
    assert pick_device("cpu") == CPU  # asking for the CPU on purpose still works


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch can use the GPU, so nothing is refused")
def test_setup_warns_about_a_gpu_that_torch_cannot_use(tmp_path):
    import subprocess
    _fake_nvidia_smi(tmp_path)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(Path(sys.prefix)))
    res = subprocess.run(["bash", "-c", "source scripts/setup_env.sh"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    warning = [line for line in res.stderr.splitlines() if "nvidia-smi sees a GPU" in line]
    assert res.returncode == 0 and len(warning) == 1
    assert "install the torch build for your driver first" in warning[0]
