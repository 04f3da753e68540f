"""Backend choice: the parity probe, fallback with one warning line, one-line errors, the gsplat
adapter's per-camera opacities, and the GPU-visible-but-unusable check; the backend registry (one
list of backends that dispatch, ``auto``, errors and help texts read) and the package's import
graph (no cycles).

gsplat cannot run here (no CUDA), so a stand-in module named ``gsplat`` plays it: one that fails
the way a first-use CUDA compile fails, one that renders wrongly, and one that renders correctly
(it delegates to our torch backend with gsplat 1.5's call signature and meta layout).
"""
import ast
import inspect
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gaussian_renderer  # noqa: E402
from gaussian_renderer import (  # noqa: E402
    Backend,
    BackendUnavailableError,
    RasterizerArgumentError,
    UnknownBackendError,
    backend_choices,
    backend_choices_text,
    backend_names,
    backend_registered,
    check_backend_name,
    rasterize,
    register_backend,
    select_backend,
    unregister_backend,
)
from gaussian_renderer import backends, gsplat_backend, parity, registry  # noqa: E402
from gaussian_renderer.torch_backend import rasterize_torch  # noqa: E402
from utils.cli_common import pick_device  # noqa: E402
from utils.errors import InputFileError, UserFacingError  # noqa: E402

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
    scene = parity.probe_scene(CPU, n=N, seed=seed)
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


# ---------------------------------------------------------------------------------------------
# the backend registry


BUILT_IN = ("torch", "triton", "gsplat")


def test_the_registry_lists_the_built_in_backends_once():
    assert backend_names() == BUILT_IN
    assert backend_choices() == ("auto", *BUILT_IN) == gaussian_renderer.BACKENDS
    assert backend_choices_text() == "auto | torch | triton | gsplat"
    assert registry.auto_order(CPU) == ("torch",)
    assert registry.auto_order("cuda") == ("triton", "gsplat", "torch")
    assert registry.auto_order("cuda", torch.float64) == ("torch",)  # the accelerated backends are float32-only
    assert registry.isect_capacity_backends() == ("triton",)
    for name in BUILT_IN:
        b = registry.get_backend(name)
        assert b.name == name and b.fix and callable(b.rasterize)
    assert registry.get_backend("torch").import_error() is None


def test_check_backend_name_accepts_registered_names_and_auto():
    for name in ("auto", *BUILT_IN):
        check_backend_name(name, "run.backend")
    with pytest.raises(UnknownBackendError) as exc:
        check_backend_name("cuda", "run.backend")
    msg = str(exc.value)
    assert msg == "run.backend must be one of auto, torch, triton, gsplat, got 'cuda'"
    # a ValueError for config validation, a UserFacingError for the CLIs' one-line errors, and the
    # BackendUnavailableError that select_backend raised for unknown names before the registry
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, UserFacingError)
    assert isinstance(exc.value, BackendUnavailableError)
    with pytest.raises(UnknownBackendError, match="must be one of torch, triton, gsplat, got 'auto'"):
        check_backend_name("auto", "--backends", allow_auto=False)
    assert registry.unknown_backend_message("torch", "x") is None
    assert registry.unknown_backend_message(None, "x") == "x must be one of auto, torch, triton, gsplat, got None"


def test_unknown_backend_names_are_one_line_errors_listing_the_registered_ones():
    with pytest.raises(UnknownBackendError) as exc:
        select_backend("cuda", CPU)
    assert str(exc.value) == "rasterizer backend must be one of auto, torch, triton, gsplat, got 'cuda'"
    with pytest.raises(UnknownBackendError, match="must be one of torch, triton, gsplat, got 'nope'"):
        backends.probe_backend("nope", CPU)
    s = parity.probe_scene(CPU, n=8)
    with pytest.raises(RasterizerArgumentError) as exc:
        rasterize(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"],
                  s["width"], s["height"], backend="nope")
    assert str(exc.value) == "rasterize(): `backend` must be one of auto, torch, triton, gsplat, got 'nope'"


def test_register_backend_refuses_bad_and_duplicate_names():
    record = registry.get_backend("torch")
    with pytest.raises(ValueError, match="already registered"):
        register_backend(record)
    for bad in ("auto", "", "two words", "a|b"):
        with pytest.raises(ValueError, match="non-empty word"):
            register_backend(Backend(name=bad, rasterize=rasterize_torch, import_error=lambda: None, fix="-"))
    assert backend_names() == BUILT_IN


def _toy_backend(calls: list, **fields) -> Backend:
    """A backend named "toy" that wraps the torch backend (so its probe passes) and counts calls."""

    def rasterize_toy(*args, **kwargs):
        calls.append(dict(kwargs))
        kwargs.pop("isect_capacity", None)  # given when registered with takes_isect_capacity; torch sizes exactly
        render, alphas, meta = rasterize_torch(*args, **kwargs)
        meta["backend"] = "toy"
        return render, alphas, meta

    return Backend(name="toy", rasterize=rasterize_toy, import_error=lambda: None, fix="nothing to install",
                   **fields)


def _probe_scene_args(s: dict) -> tuple:
    return (s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"],
            s["width"], s["height"])


def test_a_registered_backend_is_dispatched_listed_probed_and_removed_again():
    calls = []
    s = parity.probe_scene(CPU, n=24)
    ref, ref_alpha, _ = rasterize(*_probe_scene_args(s), backgrounds=s["backgrounds"], backend="torch")
    with backend_registered(_toy_backend(calls, devices=("cpu",), auto_rank=0)) as toy:
        assert registry.get_backend("toy") is toy
        assert backend_names() == (*BUILT_IN, "toy") and "toy" in gaussian_renderer.BACKENDS
        assert backend_choices_text() == "auto | torch | triton | gsplat | toy"
        check_backend_name("toy", "run.backend")

        img, alpha, meta = rasterize(*_probe_scene_args(s), backgrounds=s["backgrounds"], backend="toy")
        assert meta["backend"] == "toy" and len(calls) == 1 and "isect_capacity" not in calls[0]
        assert torch.equal(img, ref) and torch.equal(alpha, ref_alpha)

        choice = select_backend("toy", CPU)  # the parity probe renders it against the torch reference
        assert (choice.name, choice.reason) == ("toy", "requested, probe passed")
        assert registry.auto_order(CPU) == ("toy", "torch")
        lines = []
        assert select_backend("auto", CPU, warn=lines.append).name == "toy" and lines == []
        _, _, meta = rasterize(*_probe_scene_args(s), backend="auto")  # auto on the CPU: the toy goes first
        assert meta["backend"] == "toy"

    assert "toy" not in backend_names() and backend_names() == BUILT_IN
    assert registry.auto_order(CPU) == ("torch",)
    assert select_backend("auto", CPU).name == "torch"
    with pytest.raises(RasterizerArgumentError, match=r"`backend` must be one of auto, torch, triton, gsplat, got 'toy'"):
        rasterize(*_probe_scene_args(s), backend="toy")
    with pytest.raises(UnknownBackendError):
        select_backend("toy", CPU)


def test_a_backend_registered_again_under_the_same_name_is_probed_afresh():
    """The probe cache is keyed by the registered record: a stand-in that renders wrongly under a
    name that earlier passed is caught."""
    with backend_registered(_toy_backend([])):
        assert backends.probe_backend("toy", CPU) is None

    def wrong(*args, **kwargs):
        render, alphas, meta = rasterize_torch(*args, **kwargs)
        return render * 0.5, alphas, meta

    with backend_registered(Backend(name="toy", rasterize=wrong, import_error=lambda: None, fix="-")):
        assert "image differs from the torch backend" in backends.probe_backend("toy", CPU)
        with pytest.raises(BackendUnavailableError, match="cannot run on cpu: its image differs.*Fix: -"):
            select_backend("toy", CPU)


def test_an_unavailable_registered_backend_is_skipped_by_auto_with_its_fix():
    with backend_registered(Backend(name="toy", rasterize=rasterize_torch, import_error=lambda: "toy does not import",
                                    fix="pip install toy", devices=("cpu",), auto_rank=0)):
        lines = []
        choice = select_backend("auto", CPU, warn=lines.append)
        assert choice.name == "torch" and "no faster backend" in choice.reason
        assert lines == ["[rasterizer] warning: skipping backend toy on cpu: toy does not import. Fix: pip install toy"]


def test_isect_capacity_goes_to_the_backends_that_take_it():
    calls = []
    s = parity.probe_scene(CPU, n=8)
    with backend_registered(_toy_backend(calls)):
        with pytest.raises(RasterizerArgumentError) as exc:
            rasterize(*_probe_scene_args(s), backend="toy", isect_capacity=64)
        assert str(exc.value) == ("rasterize(): `isect_capacity` (a sync-free, CUDA-graph-capturable call) needs "
                                  "backend='triton', got backend 'toy'; leave it None for the other backends")
    with backend_registered(_toy_backend(calls, takes_isect_capacity=True)):
        assert registry.isect_capacity_backends() == ("triton", "toy")
        calls.clear()
        _, _, meta = rasterize(*_probe_scene_args(s), backend="toy", isect_capacity=64)
        assert meta["backend"] == "toy" and calls[0]["isect_capacity"] == 64


def test_unregister_backend_and_a_failing_with_block_leave_the_registry_clean():
    with pytest.raises(RuntimeError, match="inside"):
        with backend_registered(_toy_backend([])):
            raise RuntimeError("inside")
    assert backend_names() == BUILT_IN
    register_backend(_toy_backend([]))
    try:
        assert "toy" in backend_names()
    finally:
        assert unregister_backend("toy").name == "toy"
    assert backend_names() == BUILT_IN
    with pytest.raises(UnknownBackendError):
        unregister_backend("toy")


def test_probe_settings_are_rasterize_defaults():
    """The probe renders through validation and dispatch directly (``api`` cannot be imported
    below it); its settings must stay rasterize()'s defaults."""
    defaults = {k: p.default for k, p in inspect.signature(rasterize).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert parity.PROBE_SETTINGS == {k: defaults[k] for k in parity.PROBE_SETTINGS}
    assert set(defaults) - set(parity.PROBE_SETTINGS) == {"backgrounds", "render_mode", "backend"}


def test_public_api():
    from gaussian_renderer import (  # noqa: F401
        BACKENDS,
        RENDER_MODES,
        BackendChoice,
        BackendUnavailableError,
        RasterizerArgumentError,
        eval_sh,
        gsplat_available,
        num_sh_bases,
        probe_backend,
        rasterize,
        select_backend,
    )
    assert BACKENDS == ("auto", "torch", "triton", "gsplat")
    assert RENDER_MODES == ("RGB", "D", "ED", "RGB+D", "RGB+ED")
    for name in gaussian_renderer.__all__:
        assert getattr(gaussian_renderer, name) is not None


def _package_import_graph() -> dict:
    """gaussian_renderer module -> the package modules it imports, from every import statement
    anywhere in its file (inside functions and ``if TYPE_CHECKING:`` blocks too)."""
    package = REPO / "gaussian_renderer"
    modules = {p.stem for p in package.glob("*.py")}
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from .x import y, from . import x
                    base = node.module
                elif node.level == 0 and (node.module or "").split(".")[0] == "gaussian_renderer":
                    base = node.module.partition(".")[2]  # from gaussian_renderer[.x] import y
                else:
                    continue  # another package
                if base:
                    deps.add(base.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("gaussian_renderer."))
        graph[path.stem] = deps & modules - {path.stem}
    return graph


def test_the_package_import_graph_has_no_cycles():
    graph = _package_import_graph()
    assert "registry" in graph["api"] or "registry" in graph["dispatch"]  # the parser sees relative imports
    assert graph["registry"] == {"errors"} and graph["errors"] == set()
    state = {}

    def visit(module, path):
        state[module] = "active"
        for dep in sorted(graph[module]):
            assert state.get(dep) != "active", "import cycle: " + " -> ".join(path + [module, dep])
            if dep not in state:
                visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


# ---------------------------------------------------------------------------------------------
# parity tolerances: a correct GPU build passes, a wrong one fails (parity.py derives them)


@pytest.fixture(scope="module")
def probe_reference():
    """The probe scene's reference, on one thread for the module's tests (the thread count is put
    back after them: later tests in this process compare bits with other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield parity.render_with_grads("torch", parity.probe_scene(CPU, opaque=parity.PROBE_OPAQUE))
    finally:
        torch.set_num_threads(threads)


def _render_with_thresholds(monkeypatch, t_threshold, alpha_min):
    """The probe scene through the torch backend with other skip / stop thresholds."""
    from gaussian_renderer import compositing

    with monkeypatch.context() as m:
        m.setattr(compositing, "T_THRESHOLD", t_threshold)
        m.setattr(compositing, "ALPHA_MIN", alpha_min)
        return parity.render_with_grads("torch", parity.probe_scene(CPU, opaque=parity.PROBE_OPAQUE))


def test_probe_scene_exercises_the_stop_the_clamp_and_the_skip(probe_reference):
    T = 1 - probe_reference["alpha"].double()
    assert (T < 1e-3).any() and (T > 0.5).any()  # the opaque splats reach towards the stop, elsewhere not
    scene = parity.probe_scene(CPU, opaque=parity.PROBE_OPAQUE)
    assert scene["opacities"].max() > 0.99 and scene["opacities"].shape == (96,)


@pytest.mark.parametrize("scale", [1 + 1e-3, 1 - 1e-3])
def test_tolerances_pass_a_build_whose_decisions_flip(monkeypatch, probe_reference, scale):
    """A correct GPU build flips a skip or stop decision where a value lies within ~1e-5 of the
    threshold. Moving both thresholds by 1e-3 (~100x) flips more of them: the verdict passes."""
    got = _render_with_thresholds(monkeypatch, 1e-4 * scale, scale / 255.0)
    result = parity.compare_renders(got, probe_reference)
    assert parity.parity_failure(result) is None, result
    if scale < 1:  # these thresholds do flip decisions here: values beyond the tight bound
        assert result["image_share_above_tight"] > 0 and result["image_max_abs"] > 1e-4


def test_tolerances_pass_worst_case_flips_and_rounding(probe_reference):
    """The derived worst case of a correct build: rounding noise of 3e-5 x V on every value, a
    full skip + stop flip (0.0138 V) at 0.5 % of the values, 1e-3 relative gradient noise."""
    ref = probe_reference
    g = torch.Generator().manual_seed(0)
    got = dict(ref)
    scale = max(1.0, float(ref["image"].abs().max()))
    noise = (torch.rand(ref["image"].shape, generator=g) * 2 - 1) * 3e-5 * scale
    flips = torch.rand(ref["image"].shape, generator=g) < 0.005
    got["image"] = ref["image"] + noise + flips * (0.0138 * scale)
    got["alpha"] = ref["alpha"] + (torch.rand(ref["alpha"].shape, generator=g) < 0.005) * 0.0099
    for k in [k for k in ref if k.startswith("grad_")]:
        got[k] = ref[k] * (1 + 1e-3 * torch.randn(ref[k].shape, generator=g))
    result = parity.compare_renders(got, ref)
    assert 0 < result["image_share_above_tight"] <= 0.01
    assert parity.parity_failure(result) is None, result


def _wrong(ref, change):
    got = dict(ref)
    change(got)
    return parity.parity_failure(parity.compare_renders(got, ref))


def test_tolerances_fail_wrong_builds(monkeypatch, probe_reference):
    ref = probe_reference
    # no 1/255 skip: a faint veil over most pixels (each value off by well under the max bound)
    no_skip = parity.compare_renders(_render_with_thresholds(monkeypatch, 1e-4, 0.0), ref)
    assert no_skip["image_max_abs"] < 0.02
    assert "more than" in parity.parity_failure(no_skip) and "of the values (> 1%)" in parity.parity_failure(no_skip)
    # the skip at 2/255: rims wrong by more than any flip can be
    assert "image differs from the torch backend by" in parity.parity_failure(
        parity.compare_renders(_render_with_thresholds(monkeypatch, 1e-4, 2 / 255.0), ref))
    # a small systematic error: 3e-4 on every covered value
    covered = (ref["alpha"] > 0.1).expand_as(ref["image"])

    def biased(got):
        got["image"] = ref["image"] + 3e-4 * covered

    assert "of the values" in _wrong(ref, biased)

    def one_bad_pixel(got):
        got["image"] = ref["image"].clone()
        got["image"][0, 5, 7, 1] += 0.05

    assert "by 0.05 (>" in _wrong(ref, one_bad_pixel)

    def not_a_number(got):
        got["alpha"] = ref["alpha"].clone()
        got["alpha"][0, 3, 3, 0] = float("nan")

    assert "its alpha differs" in _wrong(ref, not_a_number)

    def scaled_gradient(got):
        got["grad_means"] = ref["grad_means"] * 1.03

    assert _wrong(ref, scaled_gradient).startswith("its gradient of means differs from the torch backend by 0.03")
