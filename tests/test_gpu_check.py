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
