"""render.py leaves no stale frames for evaluate.py to score.

A second render into the same output folder (same split, same iteration) with fewer frames must
not leave the first run's extra renders/gt/masks behind; files render.py does not write (not
``*.png``, or in other folders) stay.
"""
import json
import shutil
import signal
import subprocess
import sys
import time
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


# -- resuming a stopped render ---------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def inodes(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (inode, mtime in ns) of every PNG: a kept file keeps both; a rewritten one
    (written beside and renamed over) has a new mtime, even where the file system hands the freed
    inode number to it again."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*.png")}


@pytest.fixture(scope="module")
def straight(model, tmp_path_factory):
    """The files of a straight render of the test split: all frames, and --max-frames 10."""
    out = {}
    for key, extra in (("all", []), ("max10", ["--max-frames", "10"])):
        shutil.rmtree(model / "test", ignore_errors=True)
        assert render.main(["-m", str(model), "--split", "test", "--quiet", *extra]) == 0
        out[key] = snapshot(model / "test" / f"ours_{ITERATIONS}")
    shutil.rmtree(model / "test")
    return out


def start_render(model: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "render.py"), "-m", str(model), "--split", "test",
                             "--write-workers", "2", *map(str, extra)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_after(proc: subprocess.Popen, renders: Path, k: int, sig: int) -> tuple[int, str]:
    """Send ``sig`` once ``k`` renders of the test split exist; the exit code and stderr."""
    deadline = time.time() + 300
    while len(list(renders.glob("*.png"))) < k:
        assert proc.poll() is None, f"render ended before {k} frames: {proc.communicate()}"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 3), (signal.SIGUSR1, 3), (signal.SIGINT, 130),
                                      (signal.SIGKILL, -9)])
def test_a_stopped_render_resumes_and_ends_with_the_files_of_a_straight_one(model, straight, lpips_weights, sig, code):
    test_out = model / "test" / f"ours_{ITERATIONS}"
    shutil.rmtree(model / "test", ignore_errors=True)
    code_seen, err = stop_after(start_render(model), test_out / "renders", 3, sig)
    assert code_seen == code, err
    written = inodes(test_out)
    assert 3 <= len(list((test_out / "renders").glob("*.png"))) < 48, "the render was not stopped part-way"
    if sig != signal.SIGKILL:
        assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
        assert "run the same command again" in err
    if sig == signal.SIGTERM:  # unfinished: evaluate.py refuses to score it (one line)
        proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "-m", str(model), "--split", "test",
                               "--lpips", "alex"], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and "stopped after" in proc.stderr and "Traceback" not in proc.stderr

    assert render.main(["-m", str(model), "--split", "test", "--quiet"]) == 0
    assert snapshot(test_out) == straight["all"]
    after = inodes(test_out)
    kept = [name for name, ino in written.items() if after.get(name) == ino]
    # what the stopped run wrote (every frame whose render was on disk) was kept, not rewritten
    assert len(kept) >= 3 and all(name in kept for name in written if name.startswith("renders/"))


def test_max_frames_composes_with_resume(model, straight):
    test_out = model / "test" / f"ours_{ITERATIONS}"
    shutil.rmtree(model / "test", ignore_errors=True)
    # stopped and resumed with the same --max-frames: the straight --max-frames render
    code, err = stop_after(start_render(model, "--max-frames", 10), test_out / "renders", 2, signal.SIGTERM)
    assert code == 3, err
    assert render.main(["-m", str(model), "--split", "test", "--max-frames", "10", "--quiet"]) == 0
    assert snapshot(test_out) == straight["max10"]
    # then every frame: the 10 are kept, the other 38 rendered, as a straight render of all
    before = inodes(test_out)
    assert render.main(["-m", str(model), "--split", "test", "--quiet"]) == 0
    assert snapshot(test_out) == straight["all"]
    after = inodes(test_out)
    assert all(after[name] == ino for name, ino in before.items())


def test_another_model_or_settings_clears_the_folder_with_a_line_saying_why(model, capsys):
    test_out = model / "test" / f"ours_{ITERATIONS}"
    shutil.rmtree(model / "test", ignore_errors=True)
    assert render.main(["-m", str(model), "--split", "test", "--max-frames", "4", "--quiet"]) == 0
    manifest = json.loads((test_out / "render.json").read_text())
    manifest["model"]["checkpoint_sha256"] = "0" * 64  # as another checkpoint with the same iteration
    (test_out / "render.json").write_text(json.dumps(manifest))
    before = inodes(test_out)
    assert render.main(["-m", str(model), "--split", "test", "--max-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "removed 12 file(s) of an earlier run" in out and "model checkpoint_sha256" in out
    after = inodes(test_out)
    assert sorted(after) == sorted(before) and all(after[n] != before[n] for n in before)  # all rendered again


def test_a_frame_that_cannot_be_written_is_one_clear_error(model):
    test_out = model / "test" / f"ours_{ITERATIONS}"
    shutil.rmtree(model / "test", ignore_errors=True)
    (test_out / "renders" / "00008_00.png").mkdir(parents=True)  # a folder where a frame goes
    (test_out / "render.json").write_text("{}")  # unreadable: the folder is cleared of PNGs, the folder stays
    proc = subprocess.run([sys.executable, str(REPO / "render.py"), "-m", str(model), "--split", "test",
                           "--write-workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stderr and "00008_00.png" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()[-1]) > 0 and proc.stderr.count("error:") == 1
    shutil.rmtree(model / "test")
