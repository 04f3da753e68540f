"""launch.py with submitit's local executor: two tiny subjects end to end (outputs and the table
over both), jobs stopped mid-run and requeued (SIGUSR1 to the job, as SLURM's time-limit warning;
SIGTERM to train.py, as a preemption) that end bit-identical to a straight run, --status, and
bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flame_fixtures import write_small_flame  # noqa: E402
from subject_fixtures import write_fake_subject  # noqa: E402
from test_train import SMALL_SCHEDULE, assert_same_checkpoint  # noqa: E402

CONFIGS = SMALL_SCHEDULE[:4]  # --config tensorial.yaml --config demo.yaml
TRAIN_OPTIONS = [*SMALL_SCHEDULE[4:], "--iterations", "60", "--set", "run.save_interval=10"]
FINAL = "iteration_0000060"
# subject -> (what is signalled, signal): the job itself gets SLURM's time-limit warning
# (submitit's checkpoint passes it on to train.py); train.py gets a preemption's SIGTERM.
STOPS = {"subjA": ("job", signal.SIGUSR1), "subjB": ("train.py", signal.SIGTERM)}


def run_launch(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)


def make_subjects(root: Path) -> dict:
    """A tiny FLAME-layout model and two fake subjects (different images), named subjA / subjB."""
    flame_path, n_vertices = write_small_flame(root / "flame")
    subjects = {}
    for seed, name in enumerate(STOPS):
        fake = write_fake_subject(root / name, n_cameras=4, n_timesteps=3, width=48, height=64,
                                  n_vertices=n_vertices, distance=0.6, seed=seed)
        subjects[name] = fake.union.rename(root / name / name)  # the union's frame paths are ../SEQ_*
    return {"flame": flame_path, "subjects": subjects}


def train_process(model_dir: Path) -> int | None:
    """The pid of the train.py writing to ``model_dir``, if one runs."""
    for proc in Path("/proc").iterdir():
        try:
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if any(a.endswith("train.py") for a in argv) and str(model_dir) in argv:
            return int(proc.name)
    return None


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def stop_mid_run(model_dir: Path, target: str, sig: int, launcher: subprocess.Popen) -> None:
    """Once ``model_dir`` has its first checkpoint (iteration 10 of 60), send ``sig`` to its
    train.py or to the job running it."""
    deadline = time.time() + 300
    while time.time() < deadline and launcher.poll() is None:
        pid = train_process(model_dir)
        if pid is not None and (model_dir / "checkpoints" / "iteration_0000010").is_dir():
            os.kill(parent_of(pid) if target == "job" else pid, sig)
            return
        time.sleep(0.02)
    pytest.fail(f"{model_dir}: train.py never reached its first checkpoint")


@pytest.fixture(scope="module")
def launched(tmp_path_factory, lpips_weights):
    """One local launch of both subjects, each job stopped once mid-training (see STOPS)."""
    root = tmp_path_factory.mktemp("launch")
    data = make_subjects(root)
    out = root / "out"
    log = open(root / "launch.log", "w")
    cmd = [sys.executable, str(REPO / "launch.py"), *map(str, data["subjects"].values()), "--launcher", "local",
           "--gpus", "0", "--output-root", str(out), *CONFIGS, "--flame", str(data["flame"]), "--protocol", "ga",
           "--", *TRAIN_OPTIONS]  # the tiny subjects have no FREE sequence; TRAIN_OPTIONS hold --eval
    start = time.time()
    launcher = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        for name, (target, sig) in STOPS.items():
            stop_mid_run(out / name, target, sig, launcher)
        code = launcher.wait(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        log.close()
    print(f"launch took {time.time() - start:.0f} s")
    return {**data, "out": out, "code": code, "log": (root / "launch.log").read_text()}


@pytest.mark.slow
def test_two_subjects_end_to_end_with_one_table(launched):
    assert launched["code"] == 0, launched["log"]
    out = launched["out"]
    for name in STOPS:
        assert (out / name / "checkpoints" / FINAL).is_dir()
        assert {"val", "test"} <= set(json.loads((out / name / "results.json").read_text()))
        assert (out / name / "slurm" / "stages.log").is_file()
    table = json.loads((out / "results_all.json").read_text())
    assert set(table["models"]) == {str(out / name) for name in STOPS}
    assert {"val", "test"} <= set(table["mean"]) and table["mean"]["val"]["n_models"] == 2
    assert "**mean**" in launched["log"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STOPS))
def test_stopped_job_is_requeued_and_resumes_bit_exact(launched, name, tmp_path):
    assert launched["code"] == 0, launched["log"]
    model = launched["out"] / name
    stages = (model / "slurm" / "stages.log").read_text()
    # train.py saved at the signal (exit code 3), submitit requeued the job, and it went on with --resume.
    assert "exited with 3" in stages or "stopped for a requeue, exit code 3" in stages, stages
    attempts = [line for line in stages.splitlines() if line.startswith("== ") and ": train: " in line]
    assert len(attempts) == 2 and "attempt 2" in attempts[1] and attempts[1].endswith("--resume"), attempts
    progress = json.loads((model / "slurm" / "progress.json").read_text())
    assert progress["state"] == "done" and progress["attempt"] == 2
    # The same schedule straight through, without a stop, ends with the same checkpoint.
    import train
    args = ["-s", launched["subjects"][name], "-m", tmp_path / "straight", "--flame", launched["flame"],
            *CONFIGS, *TRAIN_OPTIONS]
    assert train.main(list(map(str, args))) == 0
    assert_same_checkpoint(tmp_path / "straight" / "checkpoints" / FINAL, model / "checkpoints" / FINAL)


@pytest.mark.slow
def test_status_shows_each_subject(launched):
    result = run_launch("--status", "--output-root", launched["out"])
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    rows = {words[0]: words for words in lines if words and words[0] in STOPS}
    assert set(rows) == set(STOPS)
    record = json.loads((launched["out"] / "launch.json").read_text())
    for name, row in rows.items():
        assert row[1] == record["subjects"][name]["job_id"] and row[2] == "done", result.stdout


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def stub_subject(folder: Path) -> Path:
    """A folder with the files launch.py checks before it submits (no frames: never trained)."""
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"transforms_{split}.json").write_text('{"frames": []}')
    return folder


def test_missing_subject_folder_is_one_error(tmp_path):
    stub_subject(tmp_path / "here")
    line = one_error_line(run_launch(tmp_path / "here", tmp_path / "nowhere", "--launcher", "local",
                                     "--output-root", tmp_path / "out"))
    assert str(tmp_path / "nowhere") in line and "not found" in line and "command line" in line
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_subject_is_one_error_before_anything_runs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "transforms_train.json").write_text('{"frames": []}')
    line = one_error_line(run_launch(tmp_path / "images", "--launcher", "local", "--output-root", tmp_path / "out"))
    assert "not a subject folder" in line and "transforms_val.json" in line and "transforms_test.json" in line
    assert not (tmp_path / "out").exists()


def test_a_bad_line_of_a_subjects_file_names_the_file_and_line(tmp_path):
    stub_subject(tmp_path / "a")
    listing = tmp_path / "subjects.txt"
    listing.write_text(f"# two subjects\n{tmp_path / 'a'}\n\n{tmp_path / 'typo'}  # the second\n")
    line = one_error_line(run_launch("--subjects", listing, "--launcher", "local", "--output-root", tmp_path / "out"))
    assert f"--subjects {listing}, line 4: {tmp_path / 'typo'}: subject folder not found" in line


def test_missing_lpips_weights_fail_before_any_job(tmp_path):
    stub_subject(tmp_path / "a")
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "empty_cache")}
    line = one_error_line(run_launch(tmp_path / "a", "--launcher", "local", "--output-root", tmp_path / "out", env=env))
    assert "LPIPS weights" in line and "fetch_lpips_weights.py" in line and "evaluate.py" in line
    assert not (tmp_path / "out").exists()


def test_a_training_config_that_does_not_resolve_fails_before_any_job(tmp_path):
    stub_subject(tmp_path / "a")
    line = one_error_line(run_launch(tmp_path / "a", "--launcher", "local", "--output-root", tmp_path / "out",
                                     "--config", REPO / "configs/npga.yaml", "--", "--set", "model.geometry.knnn=3"))
    assert "train.py configuration does not resolve" in line and "'model.geometry.knnn'" in line and "knn" in line
    assert not (tmp_path / "out").exists()


def test_each_method_resolves_for_the_jobs(tmp_path):
    """Any method's configs pass the check (train.py --check-config) and reach every job."""
    import launch
    stub_subject(tmp_path / "a")
    for configs in (["gaussian_head_avatar.yaml", "gaussian_head_avatar_demo.yaml"], ["gaussian_blendshapes.yaml"],
                    ["npga.yaml", "npga_demo.yaml"], ["gaussianhead.yaml"], ["gaussian_avatars.yaml"]):
        args = launch.parse_args([str(tmp_path / "a"), "--launcher", "local",
                                  *[a for c in configs for a in ("--config", str(REPO / "configs" / c))]])
        job, = launch.make_jobs(args, tmp_path / "out")
        launch.check_train_config(job)
        train = job.command("train")
        assert [train[i + 1] for i, a in enumerate(train) if a == "--config"] == [
            str(REPO / "configs" / c) for c in configs]


def test_render_and_evaluation_settings_reach_each_job(tmp_path):
    import launch
    stub_subject(tmp_path / "a")
    args = launch.parse_args([str(tmp_path / "a"), "--launcher", "local", "--max-frames", "7", "--lpips", "alex",
                              "--metrics", "standard", "--mask", "fg", "--video"])
    job, = launch.make_jobs(args, tmp_path / "out")
    render, evaluate = job.command("render"), job.command("evaluate")
    assert render[-3:] == ["--video", "--max-frames", "7"], render
    assert evaluate[-6:] == ["--metrics", "standard", "--lpips", "alex", "--mask", "fg"], evaluate
    assert launch.evaluate_arguments(args) == evaluate[-6:]  # the final table is scored the same way


def test_slurm_without_sbatch_is_one_error(tmp_path):
    stub_subject(tmp_path / "subject")
    (tmp_path / "bin").mkdir()  # a PATH with no sbatch/srun on it
    env = {**os.environ, "PATH": str(tmp_path / "bin")}
    line = one_error_line(run_launch(tmp_path / "subject", "--launcher", "slurm", "--output-root", tmp_path / "out",
                                     env=env))
    assert "sbatch" in line and "--launcher local" in line


def test_status_without_a_launch_is_one_error(tmp_path):
    line = one_error_line(run_launch("--status", "--output-root", tmp_path))
    assert "launch.json" in line


def stand_in_slurm(tmp_path: Path, monkeypatch, job_id: int) -> Path:
    """sbatch and srun stand-ins on the PATH: sbatch keeps the script it is given (returned path)
    and answers ``job_id``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job {job_id}"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # what launch.py sets; restored afterwards
    return tmp_path / "submitted.sh"


def test_slurm_job_array_asks_for_a_gpu_requeue_and_the_warning_signal(tmp_path, monkeypatch):
    """The submission through submitit, with stand-ins for sbatch and srun."""
    stand_in_slurm(tmp_path, monkeypatch, 4242)
    for name in ("s1", "s2"):
        stub_subject(tmp_path / name)
    import launch
    root = tmp_path / "out"
    args = launch.parse_args([str(tmp_path / "s1"), str(tmp_path / "s2"), "--launcher", "slurm", "--gpus", "1",
                              "--slurm-partition", "gpu", "--slurm-time", "90", "--slurm-account", "acc",
                              "--slurm-qos", "high", "--output-root", str(root)])
    jobs = launch.make_jobs(args, root)
    record = launch.launch_record(args, root, jobs)
    subs = launch.submit_slurm(jobs, args, root, record)
    script = (tmp_path / "submitted.sh").read_text()
    for flag in ("--array=0-1%1", "--gpus-per-node=1", f"--signal=USR1@{launch.SIGNAL_DELAY_S}", "--requeue",
                 "--partition=gpu", "--time=90", "--account=acc", "--qos=high"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert [sub.job_id for sub in subs] == ["4242_0", "4242_1"]
    saved = json.loads((root / "launch.json").read_text())
    assert [saved["subjects"][n]["job_id"] for n in ("s1", "s2")] == ["4242_0", "4242_1"]
    assert (root / "s2" / "slurm" / "4242_1_0_log.out").is_symlink()


def test_slurm_cpu_jobs_ask_for_no_gpu(tmp_path, monkeypatch):
    """--gpus 0 (a partition without GPUs): no GPU in the request, and no limit on tasks at once."""
    stand_in_slurm(tmp_path, monkeypatch, 7)
    import launch
    stub_subject(tmp_path / "s1")
    root = tmp_path / "out"
    args = launch.parse_args([str(tmp_path / "s1"), "--launcher", "slurm", "--gpus", "0", "--output-root", str(root)])
    jobs = launch.make_jobs(args, root)
    launch.submit_slurm(jobs, args, root, launch.launch_record(args, root, jobs))
    script = (tmp_path / "submitted.sh").read_text()
    assert "gpu" not in script and "#SBATCH --cpus-per-task=8\n" in script, script
