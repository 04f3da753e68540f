"""bench/gpu_check.py at tiny sizes on the CPU, so the GPU check cannot rot between GPU runs."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_and_reports_every_section(tmp_path):
    out = tmp_path / "check"
    res = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py"), "--device", "cpu", "--quick",
                          "--out", str(out), "--data", str(tmp_path / "data"), "--backends", "torch", "gsplat"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    env = result["environment"]
    for key in ("torch", "torch_cuda", "nvcc", "nvidia_smi", "gsplat", "triton"):
        assert key in env
    assert result["subject"]["settings"]["downscale"] == 10
    tests = result["tests"]  # on the CPU the section runs its first file, whose CUDA tests skip
    assert tests["files"] == ["tests/test_sync_free_render.py"] and tests["exit_code"] == 0
    assert " passed" in tests["summary"] and " skipped" in tests["summary"] and tests["failures"] == []

    torch_part = result["backends"]["torch"]
    assert torch_part["available"] is True
    assert torch_part["parity"]["image_max_abs"] == 0.0  # the reference against itself
    assert set(torch_part["parity"]["grad_rel"]) >= {"means", "quats", "scales", "opacities", "colors"}
    render, train = torch_part["render"], torch_part["train"]
    assert render["fps"] > 0 and render["ms_decoders"] > 0 and render["ms_rasterization"] > 0
    assert (render["width"], render["height"]) == (55, 80) and render["splats"] > 1000
    assert render["sync_points_per_frame"]["count"] is None  # CUDA's sync debug mode: GPU only
    assert "fps_cuda_graph" not in render  # CUDA graphs: triton on CUDA only
    assert train["iterations_per_second"] > 0
    assert set(train["phases_ms"]) == {"data", "flame", "decoders", "rasterization", "loss", "backward",
                                       "optimisers", "densification"}
    assert train["phases_ms"]["backward"] > 0 and train["phases_ms"]["rasterization"] > 0

    gsplat_part = result["backends"]["gsplat"]
    if not gsplat_part.get("available"):
        assert gsplat_part["why_not"]  # the first line of why not, recorded
    summary = (out / "gpu_check.md").read_text()
    assert "| torch | yes |" in summary and "| gsplat |" in summary
    assert "Tests (tests/test_sync_free_render.py): " in summary


def test_the_tests_section_reports_failures(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    (tmp_path / "test_two.py").write_text("def test_ok():\n    pass\n\n\ndef test_broken():\n    assert 1 == 2\n")
    part = gpu_check.run_cuda_tests([str(tmp_path / "test_two.py")], 120)
    assert part["exit_code"] == 1 and "1 failed" in part["summary"] and "1 passed" in part["summary"]
    assert len(part["failures"]) == 1 and part["failures"][0].startswith("FAILED") and "test_broken" in part["failures"][0]


def test_the_backend_list_is_the_registry(tmp_path):
    """--backends defaults to, and accepts only, the registered backends (a new one included)."""
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    from gaussian_renderer import Backend, backend_names, backend_registered
    from gaussian_renderer.torch_backend import rasterize_torch

    assert gpu_check.parse_args(["--out", str(tmp_path)]).backends == list(backend_names()) == ["torch", "triton",
                                                                                               "gsplat"]
    toy = Backend(name="toy", rasterize=rasterize_torch, import_error=lambda: None, fix="-")
    with backend_registered(toy):
        assert gpu_check.parse_args(["--out", str(tmp_path), "--backends", "toy"]).backends == ["toy"]
    try:
        gpu_check.parse_args(["--out", str(tmp_path), "--backends", "toy"])
    except SystemExit as exc:
        assert exc.code == 2  # argparse: invalid choice
    else:
        raise AssertionError("an unregistered backend was accepted")
