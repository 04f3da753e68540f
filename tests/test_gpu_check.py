"""bench/gpu_check.py on the CPU, so the GPU check cannot rot between GPU runs: its plan (the
order and caps of its sections inside one budget), gsplat's skip without its build tools, the
quick run at tiny sizes, and the Triton-only figures in Triton's interpreter."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


def names(sections):
    return [s.name for s in sections]


def test_default_plan_runs_triton_first_and_fits_the_budget(tmp_path):
    args = gpu_check.parse_args(["--out", str(tmp_path)])
    assert args.backends == ["triton", "torch"] and args.budget == 350
    assert args.methods == list(gpu_check.METHOD_CONFIGS)
    sections = gpu_check.plan(args.backends, args.budget, args.tests)
    assert names(sections) == ["environment", "subject", "triton", "tests", "methods", "torch"]
    assert all(s.skipped is None and s.cap_s > 0 for s in sections)
    assert sum(s.cap_s for s in sections) <= 350
    # the headline goes first whatever order the backends are named in
    assert names(gpu_check.plan(["torch", "triton"], 350)) == names(sections)
    # every built-in method's config is one the check can build
    assert all((REPO / c).is_file() for c in gpu_check.METHOD_CONFIGS.values())
    no_methods = gpu_check.plan(args.backends, 350, methods=False)
    assert no_methods[4].name == "methods" and no_methods[4].skipped.startswith("not asked for")


def test_gsplat_is_last_and_does_not_fit_350_s(monkeypatch):
    monkeypatch.setattr(gpu_check, "gsplat_toolchain_problem", lambda timeout=10: None)  # as if ninja + nvcc matched
    sections = gpu_check.plan(["gsplat", "torch", "triton"], 350)
    assert names(sections) == ["environment", "subject", "triton", "tests", "methods", "torch", "gsplat"]
    assert sum(s.cap_s for s in sections) <= 350
    gsplat = sections[-1]
    assert gsplat.cap_s == 0 and "below its minimum" in gsplat.skipped and "--budget 540" in gsplat.skipped
    wide = gpu_check.plan(["triton", "torch", "gsplat"], 630)
    assert wide[-1].skipped is None and wide[-1].cap_s == gpu_check.CAPS["gsplat"]
    assert sum(s.cap_s for s in wide) <= 630


def test_caps_never_exceed_the_budget(monkeypatch):
    monkeypatch.setattr(gpu_check, "gsplat_toolchain_problem", lambda timeout=10: None)
    for backends in (["triton", "torch"], ["torch"], ["triton", "torch", "gsplat"]):
        for budget in (gpu_check.MIN_BUDGET, 100, 150, 209, 330, 481, 600, 1000):
            sections = gpu_check.plan(backends, budget)
            assert sum(s.cap_s for s in sections) <= budget, (backends, budget)
            for s in sections:  # a section runs with at least its minimum, or says why it does not
                assert (s.skipped is None) == (s.cap_s > 0)
                assert s.skipped or s.cap_s >= gpu_check.MINIMUM.get(s.name, gpu_check.MINIMUM["backend"])
    tight = gpu_check.plan(["triton", "torch"], 150)
    assert [s.name for s in tight if s.skipped] == ["tests", "methods", "torch"]  # the later, less valuable ones
    assert "--budget" in tight[-1].skipped


def test_gsplat_is_skipped_without_ninja_or_a_matching_nvcc(monkeypatch):
    import torch

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "ninja" else real_which(cmd, *a, **k))
    gsplat = gpu_check.plan(["triton", "gsplat"], 1000)[-1]
    assert gsplat.name == "gsplat" and gsplat.cap_s == 0 and gsplat.skipped.startswith("ninja is not on the PATH")

    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "nvcc" else "/usr/bin/" + cmd)
    assert gpu_check.plan(["gsplat"], 1000)[-1].skipped.startswith("nvcc is not on the PATH")

    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: "/usr/bin/" + cmd)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(gpu_check, "nvcc_cuda_version", lambda timeout=10: "13.0")
    assert "nvcc is CUDA 13.0 but torch is built for CUDA 12.8" in gpu_check.plan(["gsplat"], 1000)[-1].skipped
    monkeypatch.setattr(gpu_check, "nvcc_cuda_version", lambda timeout=10: "12.8")
    assert gpu_check.plan(["gsplat"], 1000)[-1].skipped is None


def test_bad_budget_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--out", str(tmp_path), "--budget", "20"])
    assert exc.value.code == 2 and "--budget must be at least" in capsys.readouterr().err


def test_gpu_check_runs_on_cpu_and_reports_every_section(tmp_path):
    """The quick run (torch: the Triton section runs its kernels in the interpreter for minutes
    on the CPU; its own figures are checked on a small scene below)."""
    out = tmp_path / "check"
    res = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py"), "--device", "cpu", "--quick",
                          "--out", str(out), "--data", str(tmp_path / "data"), "--backends", "torch", "gsplat"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    env = result["environment"]
    for key in ("torch", "torch_cuda", "nvcc", "nvcc_cuda", "ninja", "nvidia_smi", "gsplat", "triton"):
        assert key in env
    assert [s["section"] for s in result["sections"]] == [p["name"] for p in result["plan"]] == \
        ["environment", "subject", "tests", "methods", "torch", "gsplat"]
    assert sum(p["cap_s"] for p in result["plan"]) <= result["budget"] == 350
    assert all(s["seconds"] <= s["limit_s"] + 5 for s in result["sections"])
    assert result["subject"]["settings"]["downscale"] == 10
    tests = result["tests"]  # on the CPU the section runs the sync-free suite, whose CUDA tests skip
    assert tests["files"] == ["tests/test_sync_free_render.py"] and tests["exit_code"] == 0
    assert " passed" in tests["summary"] and " skipped" in tests["summary"] and tests["failures"] == []

    torch_part = result["backends"]["torch"]
    assert torch_part["available"] is True and "section_error" not in torch_part
    assert torch_part["parity"]["image_max_abs"] == 0.0  # the reference against itself
    assert set(torch_part["parity"]["grad_rel"]) >= {"means", "quats", "scales", "opacities", "colors"}
    render, train = torch_part["render"], torch_part["train"]
    assert render["fps"] > 0 and render["ms_decoders"] > 0 and render["ms_rasterization"] > 0
    assert (render["width"], render["height"]) == (55, 80) and render["splats"] > 1000
    assert render["sync_points_per_frame"]["count"] is None  # CUDA's sync debug mode: GPU only
    assert "fps_cuda_graph" not in render and "phases" not in torch_part  # triton (on CUDA) only
    assert torch_part["pairs"] > render["splats"]  # (tile, splat) pairs of the frame
    for kind in ("per_frame", "per_step"):  # the CPU stand-in for kernel launches, labelled so
        launches = torch_part["launches"][kind]
        assert launches["what"].startswith("CPU ATen operators") and launches["per_call"] > 100
        assert 0 < len(launches["top"]) <= gpu_check.TOP_NAMES
        assert all(name.startswith("aten::") and name not in gpu_check.NO_KERNEL_OPS for name, _ in launches["top"])
    assert torch_part["launches"]["per_step"]["per_call"] > torch_part["launches"]["per_frame"]["per_call"]
    assert train["iterations_per_second"] > 0 and train["steps_timed"] >= 1
    assert set(train["phases_ms"]) == {"data", "flame", "decoders", "rasterization", "loss", "backward",
                                       "optimisers", "densification"}
    assert train["phases_ms"]["backward"] > 0 and train["phases_ms"]["rasterization"] > 0

    methods = result["methods"]  # every method, untrained, on the first backend asked for
    assert methods["backend"] == "torch" and list(methods["methods"]) == list(gpu_check.METHOD_CONFIGS)
    measured = methods["methods"]
    for name, record in measured.items():
        assert "error" not in record and record["fps"] > 0 and record["ms_decoders"] > 0, name
        assert (record["width"], record["height"]) == (55, 80), name
    bound = measured["tensorial"]["splats"]
    assert bound == measured["gaussian_avatars"]["splats"] > 1000  # one splat per triangle
    for free in ("gaussian_head_avatar", "npga", "gaussianhead"):  # as many as the bound avatar
        assert measured[free]["splats"] == bound, free
    assert [n for n, r in measured.items() if r["screen_stage"]] == ["gaussian_head_avatar", "npga"]
    summary = (out / "gpu_check.md").read_text()
    assert "Render speed of every method" in summary and "| npga | " in summary

    gsplat_part = result["backends"]["gsplat"]  # a CPU torch: never built here
    assert gsplat_part["skipped"] and "available" not in gsplat_part
    assert "| torch | yes |" in summary and "| gsplat | skipped |" in summary
    assert f"- gsplat: skipped: {gsplat_part['skipped']}" in summary
    assert "Tests (tests/test_sync_free_render.py): " in summary and "| section | cap s |" in summary
    assert "Launches per frame of torch (CPU ATen operators" in summary


def test_a_requested_backend_that_cannot_run_says_why(tmp_path, monkeypatch):
    """gsplat with its build tools present (simulated) and a budget that fits it: its section runs
    and records why the backend is unavailable (no gsplat package here), in one line."""
    monkeypatch.setattr(gpu_check, "gsplat_toolchain_problem", lambda timeout=10: None)
    out = tmp_path / "check"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out), "--data", str(tmp_path / "data"),
                           "--backends", "gsplat", "--no-tests", "--methods", "--budget", "220"]) == 0
    result = json.loads((out / "gpu_check.json").read_text())
    assert [(p["name"], p["cap_s"]) for p in result["plan"]] == [("environment", 10), ("subject", 60), ("tests", 0),
                                                                 ("methods", 0), ("gsplat", 150)]
    assert result["tests"] == {"skipped": "not asked for (--no-tests)"}
    gsplat = result["backends"]["gsplat"]
    if not gsplat["available"]:  # gsplat is not installed with the CPU torch
        assert gsplat["why_not"] and "\n" not in gsplat["why_not"] and "parity" not in gsplat
    assert "| gsplat | " in (out / "gpu_check.md").read_text()


def test_a_method_that_fails_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    """The methods section: a method whose config cannot be built records its one-line error; the
    free method after it takes the first bound avatar's splat count, or its own without one."""
    monkeypatch.setitem(gpu_check.METHOD_CONFIGS, "broken", "configs/no_such_method.yaml")
    subject, err = gpu_check.make_subject(tmp_path / "data", "quick", 60)
    assert subject is not None, err
    saved = []
    out = gpu_check.check_methods(["broken", "npga", "gaussian_avatars", "gaussianhead"], "torch", "cpu",
                                  subject["union"], subject["flame"], gpu_check.SIZES["quick"], tmp_path / "scratch",
                                  120, lambda figures: saved.append(json.loads(json.dumps(figures))))
    methods = out["methods"]
    assert "no_such_method.yaml" in methods["broken"]["error"] and "\n" not in methods["broken"]["error"]
    assert "fps" not in methods["broken"] and methods["broken"]["seconds"] >= 0
    assert methods["npga"]["splats"] == 30000  # no bound avatar yet: its config's own count
    assert methods["gaussianhead"]["splats"] == methods["gaussian_avatars"]["splats"]
    assert all(methods[m]["fps"] > 0 for m in ("npga", "gaussian_avatars", "gaussianhead"))
    assert [list(figures["methods"]) for figures in saved] == [["broken"], ["broken", "npga"],
                                                               ["broken", "npga", "gaussian_avatars"],
                                                               ["broken", "npga", "gaussian_avatars", "gaussianhead"]]
    lines = "\n".join(gpu_check.methods_markdown(out))
    assert "- broken (error): " in lines and "| gaussianhead | " in lines


TRITON_FIGURES = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "bench")
    import torch
    import gpu_check
    from gaussian_renderer import rasterize
    from gaussian_renderer.parity import probe_scene

    scene = probe_scene(torch.device("cpu"))
    def frame(timer):
        with timer("decoders"):
            means = scene["means"] * 1.0
        return rasterize(**{**scene, "means": means}, backend="triton")
    split = gpu_check.triton_phase_split_eager(frame, torch.device("cpu"), frames=2)
    from gaussian_renderer import torch_backend, triton_backend
    restored = triton_backend.prepare_splats is torch_backend.prepare_splats
    print(json.dumps({"split": split, "resources": gpu_check.triton_kernel_resources(), "restored": restored}))
""")


def test_triton_figures_in_the_interpreter():
    """The Triton section's own figures on the probe scene: ms per phase of the eager frame (the
    rasterizer's parts charged through charge_triton_phases) and, in the interpreter, the
    explicit record that there are no compiled kernels to read registers from."""
    res = subprocess.run([sys.executable, "-c", TRITON_FIGURES], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, TRITON_INTERPRET="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    split = figures["split"]
    assert split["frames"] == 2 and "synchronised" in split["how"]
    assert set(split["ms"]) == {"decoders", "projection_binning", "compositing", "other"}
    assert split["ms"]["projection_binning"] > 0 and split["ms"]["compositing"] > 0
    assert sum(split["ms"].values()) == pytest.approx(split["ms_frame"], rel=1e-6)
    assert figures["resources"]["status"].startswith("interpreted: ")
    assert figures["restored"]  # the rasterizer is left as it was


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs triton.jit to make JITFunctions")
def test_kernel_registers_are_read_from_the_jit_caches():
    """What the check reads on CUDA, on a JITFunction whose cache holds stand-ins of compiled
    kernels (triton 3.x: device_caches {device: (kernel_cache, ...)}); a kernel that cannot say
    is recorded as unavailable, and so is a cache that cannot be read."""
    triton = pytest.importorskip("triton")

    @triton.jit
    def toy_kernel(x_ptr):
        pass

    compiled = SimpleNamespace(name="toy_kernel", n_regs=40, n_spills=2, src=None,
                               metadata=SimpleNamespace(num_warps=4, num_stages=3, shared=1024))
    toy_kernel.device_caches = {0: ({"key": compiled, "other": object()}, {}, None, None, None)}
    got = gpu_check.triton_kernel_resources(SimpleNamespace(toy_kernel=toy_kernel, INTERPRETED=False))
    assert got["status"] == "compiled"
    good, broken = got["kernels"]
    assert good == {"function": "toy_kernel", "name": "toy_kernel", "n_regs": 40, "n_spills": 2, "num_warps": 4,
                    "num_stages": 3, "shared_bytes": 1024, "constexprs": {}}
    assert broken["function"] == "toy_kernel" and broken["unavailable"].startswith("AttributeError")
    toy_kernel.device_caches = {0: None}  # not a cache triton ever made
    assert gpu_check.triton_kernel_resources(SimpleNamespace(k=toy_kernel))["status"].startswith("unavailable: ")
    toy_kernel.device_caches = {}
    assert "no compiled kernel" in gpu_check.triton_kernel_resources(SimpleNamespace(k=toy_kernel))["status"]


def test_a_section_past_its_limit_is_killed_with_its_children():
    """A section's subprocess and everything it started stop at its limit (else a subject's
    workers or a gsplat build would run on into the next section's time)."""
    child = ("import subprocess, sys, time\n"
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
             "print(p.pid, flush=True)\n"
             "time.sleep(60)\n")
    start = time.perf_counter()
    code, stdout, _ = gpu_check._run_group([sys.executable, "-c", child], 2)
    assert code is None and time.perf_counter() - start < 15
    grandchild = Path(f"/proc/{int(stdout.split()[0])}/status")
    for _ in range(40):  # gone, or a zombie waiting for init to reap it
        if not grandchild.exists() or "\nState:\tZ" in grandchild.read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the section's child outlived it")


def test_the_tests_section_reports_failures(tmp_path):
    (tmp_path / "test_two.py").write_text("def test_ok():\n    pass\n\n\ndef test_broken():\n    assert 1 == 2\n")
    part = gpu_check.run_cuda_tests([str(tmp_path / "test_two.py")], 120)
    assert part["exit_code"] == 1 and "1 failed" in part["summary"] and "1 passed" in part["summary"]
    assert len(part["failures"]) == 1 and part["failures"][0].startswith("FAILED") and "test_broken" in part["failures"][0]


def test_the_backend_list_is_the_registry(tmp_path):
    """--backends defaults to triton and torch, and accepts only the registered backends (a new one
    included), which the plan places between triton and gsplat."""
    from gaussian_renderer import Backend, backend_names, backend_registered
    from gaussian_renderer.torch_backend import rasterize_torch

    assert list(backend_names()) == ["torch", "triton", "gsplat"]
    assert gpu_check.parse_args(["--out", str(tmp_path)]).backends == ["triton", "torch"]
    assert gpu_check.parse_args(["--out", str(tmp_path), "--backends", "gsplat"]).backends == ["gsplat"]
    toy = Backend(name="toy", rasterize=rasterize_torch, import_error=lambda: None, fix="-")
    with backend_registered(toy):
        assert gpu_check.parse_args(["--out", str(tmp_path), "--backends", "toy"]).backends == ["toy"]
        assert gpu_check.backend_order(["toy", "triton", "torch"]) == ["triton", "torch", "toy"]
    try:
        gpu_check.parse_args(["--out", str(tmp_path), "--backends", "toy"])
    except SystemExit as exc:
        assert exc.code == 2  # argparse: invalid choice
    else:
        raise AssertionError("an unregistered backend was accepted")
