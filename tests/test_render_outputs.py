"""render.py leaves no stale frames for evaluate.py to score.

A second render into the same output folder (same split, same iteration) with fewer frames must
not leave the first run's extra renders/gt/masks behind; files render.py does not write (not
``*.png``, or in other folders) stay.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import render
import train

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 5


@pytest.fixture(scope="module")
def model(synthetic_dataset, tmp_path_factory):
    """A tensorial avatar trained for a handful of iterations on the small synthetic subject."""
    out = tmp_path_factory.mktemp("render_outputs") / "avatar"
    args = ["-s", synthetic_dataset["subjects"]["s000"]["union"], "-m", out,
            "--flame", synthetic_dataset["flame_model"], "--config", REPO / "configs/tensorial.yaml",
            "--config", REPO / "configs/demo.yaml", "--iterations", ITERATIONS, "--eval", "--quiet"]
    assert train.main(list(map(str, args))) == 0
    return out


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_rerender_with_fewer_frames_leaves_no_stale_frames(model, lpips_weights):
    out = model / "test" / f"ours_{ITERATIONS}"
    assert render.main(["-m", str(model), "--split", "test", "--max-frames", "5", "--quiet"]) == 0
    first = pngs(out / "renders")
    assert len(first) == 5 and pngs(out / "gt") == first and pngs(out / "masks") == first
    # files render.py does not write stay
    (out / "renders" / "notes.txt").write_text("keep me")
    (out / "gt" / "extra").mkdir()
    (out / "gt" / "extra" / "keep.png").write_bytes((out / "gt" / first[0]).read_bytes())

    assert render.main(["-m", str(model), "--split", "test", "--max-frames", "2", "--quiet"]) == 0
    second = pngs(out / "renders")
    assert len(second) == 2 and pngs(out / "gt") == second and pngs(out / "masks") == second
    assert (out / "renders" / "notes.txt").read_text() == "keep me"
    assert (out / "gt" / "extra" / "keep.png").is_file()

    proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "-m", str(model), "--split", "test",
                           "--lpips", "alex"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((model / "results.json").read_text())
    assert results["test"]["n_images"] == 2
    assert sorted(json.loads((model / "per_view.json").read_text())["test"]) == second


def test_rerender_orbit_leaves_no_stale_frames(model):
    out = model / "orbit" / f"ours_{ITERATIONS}" / "renders"
    assert render.main(["-m", str(model), "--orbit", "--orbit-frames", "3", "--quiet"]) == 0
    assert len(pngs(out)) == 3
    assert render.main(["-m", str(model), "--orbit", "--orbit-frames", "2", "--quiet"]) == 0
    assert pngs(out) == ["00000.png", "00001.png"]
