"""Runs that survive: every way a run ends leaves a state it resumes from exactly, bad values are
stopped before they reach the parameters, checkpoints load without running code, and refused
commands never block the folder."""
import copy
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import REPO, SMALL_SCHEDULE, assert_same_checkpoint, checkpoint_tensors, run_cli  # noqa: E402

import train  # noqa: E402
from utils.checkpoint import CheckpointWriteError, write_checkpoint  # noqa: E402


def _common(tiny, model):
    return list(map(str, ["-s", tiny["subject"], "-m", model, "--flame", tiny["flame"], *SMALL_SCHEDULE]))


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """A straight 30-iteration run, the reference for every interrupted one."""
    model = tmp_path_factory.mktemp("straight") / "m"
    assert train.main(_common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]) == 0
    return model / "checkpoints/iteration_0000030"


def _run_with_event(argv, at_step, event):
    """train.main(argv) with ``event(trainer)`` called right after step ``at_step`` completes."""
    original = train.Trainer.training_step

    def step(self, n):
        out = original(self, n)
        if n == at_step:
            event(self)
        return out

    train.Trainer.training_step = step
    try:
        return train.main(argv)
    finally:
        train.Trainer.training_step = original


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 3), (signal.SIGUSR1, 3)])
def test_stop_signal_saves_at_the_step_boundary_and_resume_is_bit_exact(tiny, straight, tmp_path, sig, code):
    model = tmp_path / "m"
    argv = _common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]
    assert _run_with_event(argv, 13, lambda t: os.kill(os.getpid(), sig)) == code
    assert (model / "checkpoints/iteration_0000013").is_dir()
    assert train.main(["-m", str(model), "--resume", "--quiet"]) == 0
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")


@pytest.fixture
def stops():
    """train.py's handlers for stop signals outside the loop, as its command line installs them."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield train.StopSignals().install()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_a_stop_while_the_run_starts_saves_at_the_first_step(tiny, straight, tmp_path, stops, monkeypatch):
    model = tmp_path / "m"
    argv = _common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]
    original_init = train.Trainer.__init__

    def init(self, request):
        original_init(self, request)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop before train() has its handlers up

    monkeypatch.setattr(train.Trainer, "__init__", init)
    assert train.main(argv, stops=stops) == 3
    assert sorted(p.name for p in (model / "checkpoints").iterdir()) == ["iteration_0000001"]
    monkeypatch.undo()
    assert train.main(["-m", str(model), "--resume", "--quiet"]) == 0
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")


def test_a_stop_after_the_last_step_ends_the_run_as_done(tiny, straight, tmp_path, stops, monkeypatch):
    """The signal lands when training is over: nothing to save, so exit 0 (not killed by it, which
    a job would take for a preemption and requeue for nothing)."""
    model = tmp_path / "m"
    argv = _common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]
    original_train = train.Trainer.train

    def run(self):
        summary = original_train(self)
        os.kill(os.getpid(), signal.SIGUSR1)
        return summary

    monkeypatch.setattr(train.Trainer, "train", run)
    assert train.main(argv, stops=stops) == 0
    assert stops.received == "SIGUSR1"
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")


def test_a_stop_during_the_last_step_ends_the_run_as_done(tiny, straight, tmp_path):
    model = tmp_path / "m"
    argv = _common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]
    assert _run_with_event(argv, 30, lambda t: os.kill(os.getpid(), signal.SIGUSR1)) == 0
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")


def test_sigusr1_to_a_running_process_exits_3_with_a_checkpoint(tiny, tmp_path):
    model = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *_common(tiny, model), "--iterations", "100000",
                             "--set", "run.save_interval=5"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (model / "checkpoints/iteration_0000005").is_dir():
            assert time.time() < deadline and proc.poll() is None, "training did not reach iteration 5"
            time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert "stopped by SIGUSR1" in err and "--resume" in err and "Traceback" not in err
    saved = sorted(p.name for p in (model / "checkpoints").iterdir())
    assert saved[-1] >= "iteration_0000005" and not any(p.endswith(".tmp") for p in saved)


def test_error_mid_run_saves_the_last_consistent_state(tiny, straight, tmp_path):
    """A file that breaks at iteration 12 (after the pre-flight passed): one clear error, and the
    state of iteration 11 is saved so that, once fixed, the resumed run equals the straight one."""
    model = tmp_path / "m"
    argv = _common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10",
                                   "--set", "run.image_cache_gb=0", "--set", "run.loader_workers=0"]
    broken = {}

    def break_next_image(trainer):
        frame = trainer.train_frames[copy.deepcopy(trainer.sampler).next()]  # what step 12 will draw
        broken["path"] = Path(frame.image_path)
        broken["bytes"] = broken["path"].read_bytes()
        broken["path"].write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    try:
        code = _run_with_event(argv, 11, break_next_image)
    finally:
        broken["path"].write_bytes(broken["bytes"])
    assert code == 2
    assert (model / "checkpoints/iteration_0000011").is_dir() and not (model / "checkpoints/iteration_0000012").exists()
    assert train.main(["-m", str(model), "--resume", "--quiet"]) == 0
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")


def test_non_finite_loss_stops_before_the_update_and_keeps_a_good_state(tiny, tmp_path):
    model = tmp_path / "m"
    result = run_cli(_common(tiny, model) + ["--iterations", "30", "--set", "model.color.grid_lr=1e30", "--set", "model.opacity.grid_lr=1e30",
                                             "--set", "model.opacity.warmup=0"])
    assert result.returncode == 4, result.stderr
    assert "non-finite" in result.stderr and "iteration" in result.stderr and "the update was not applied" in result.stderr
    assert "Traceback" not in result.stderr and "loss" in result.stderr
    saved = sorted((model / "checkpoints").iterdir())
    assert saved, "the last good state was not saved"
    for value in checkpoint_tensors(saved[-1]).values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all()


def test_non_finite_config_values_are_refused(tiny, tmp_path):
    result = run_cli(_common(tiny, tmp_path / "m") + ["--iterations", "3", "--set", "optim.lambda_dssim=nan"])
    assert result.returncode == 2 and "finite" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(_common(tiny, tmp_path / "m") + ["--iterations", "3", "--set", "sampling.n_classes=0"])
    assert result.returncode == 2 and "n_classes" in result.stderr


def test_list_settings_are_typed_and_a_refused_command_never_blocks_the_folder(tiny, tmp_path):
    model = tmp_path / "m"
    bad = run_cli(_common(tiny, model) + ["--iterations", "3", "--set", "run.background=0,0"])
    assert bad.returncode == 2 and "run.background" in bad.stderr and "3 values" in bad.stderr
    assert train.main(_common(tiny, model) + ["--iterations", "3", "--set", "run.background=0,0,0"]) == 0
    import yaml
    saved = yaml.safe_load((model / "config.yaml").read_text())
    assert saved["config"]["run"]["background"] == [0.0, 0.0, 0.0]


def test_a_start_that_never_saved_does_not_block_the_corrected_command(tiny, tmp_path):
    """A run that wrote its config.yaml but stopped before its first checkpoint leaves nothing to
    resume: a command with another config may start afresh in that folder."""
    model = tmp_path / "m"
    ga = ["--config", str(REPO / "configs/gaussian_avatars.yaml")]
    train.Trainer(train.request_from_args(train.parse_args(_common(tiny, model) + ga + ["--iterations", "3"])))  # built, never trained
    assert (model / "config.yaml").is_file() and not (model / "checkpoints").exists()
    assert train.main(_common(tiny, model) + ["--iterations", "3"]) == 0
    assert (model / "checkpoints/iteration_0000003/triplane.pt").is_file()


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny, straight, tmp_path, capsys):
    model = tmp_path / "m"
    assert train.main(_common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]) == 0
    state = model / "checkpoints/iteration_0000030/training_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated, as a crash during a copy leaves it
    capsys.readouterr()
    assert train.main(["-m", str(model), "--resume", "--quiet"]) == 0  # continues from 20, redoes 21..30
    err = capsys.readouterr().err
    assert "iteration 30 cannot be read" in err and "previous" in err
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")


class _Payload:
    """A pickle that would create a file when unpickled by a trusting loader."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_crafted_checkpoint_never_runs_code(tiny, tmp_path, capsys):
    model = tmp_path / "m"
    assert train.main(_common(tiny, model) + ["--iterations", "10", "--set", "run.save_interval=5"]) == 0
    marker = tmp_path / "pwned"
    with open(model / "checkpoints/iteration_0000010/training_state.pt", "wb") as fh:
        pickle.dump({"iteration": 10, "payload": _Payload(marker)}, fh)
    assert train.main(["-m", str(model), "--resume", "--quiet", "--iterations", "12"]) == 0
    assert not marker.exists()
    assert "iteration 10 cannot be read" in capsys.readouterr().err


def test_resume_refuses_another_subject_unless_allowed_and_records_it(tiny, tmp_path):
    from subject_fixtures import write_fake_subject
    from flame_model import FLAME
    other_root = tmp_path / "other"
    write_fake_subject(other_root, n_cameras=4, n_timesteps=3, width=48, height=64,
                       n_vertices=FLAME(tiny["flame"]).num_vertices, distance=0.6, seed=7)
    model = tmp_path / "m"
    assert train.main(_common(tiny, model) + ["--iterations", "5"]) == 0
    refused = run_cli(["-m", model, "-s", other_root / "UNION", "--resume", "--iterations", "8", "--quiet"])
    assert refused.returncode == 2 and "another setup" in refused.stderr and "subject" in refused.stderr
    assert "--allow-changes" in refused.stderr
    assert not (model / "checkpoints/iteration_0000008").exists()
    allowed = run_cli(["-m", model, "-s", other_root / "UNION", "--resume", "--allow-changes", "--iterations", "8",
                       "--quiet"])
    assert allowed.returncode == 0, allowed.stderr
    import yaml
    saved = yaml.safe_load((model / "config.yaml").read_text())
    assert saved["resume_history"][-1]["iteration"] == 5
    assert any("subject" in c for c in saved["resume_history"][-1]["changes"])


def test_resume_with_more_iterations_keeps_the_planned_schedule(tiny, straight, tmp_path):
    """30 planned, stopped at 13, resumed with --iterations 40: steps 1..30 are those of the
    straight 30-step run; later steps run at the schedule's final rates."""
    model = tmp_path / "m"
    argv = _common(tiny, model) + ["--iterations", "30", "--set", "run.save_interval=10"]
    assert _run_with_event(argv, 13, lambda t: os.kill(os.getpid(), signal.SIGTERM)) == 3
    args = train.parse_args(["-m", str(model), "--resume", "--quiet", "--iterations", "40"])
    trainer = train.Trainer(train.request_from_args(args))
    assert trainer.schedule_iterations == 30
    trainer.train()
    assert_same_checkpoint(straight, model / "checkpoints/iteration_0000030")
    final_lr = trainer.cfg.optim.position_lr_final * trainer.extent
    assert trainer.optimizers["xyz"].param_groups[0]["lr"] == pytest.approx(final_lr)


def test_disk_full_is_one_clear_error_and_leaves_no_partial_file(tmp_path):
    def writer(folder):
        (folder / "a.pt").write_bytes(b"x" * 10)
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointWriteError) as exc:
        write_checkpoint(tmp_path, 7, writer)
    assert "No space left on device" in str(exc.value) and "--resume" in str(exc.value)
    assert not list((tmp_path / "checkpoints").iterdir())


def test_wrong_size_image_is_named_before_training(tiny, tmp_path):
    import shutil
    from PIL import Image
    subject = tmp_path / "data"
    shutil.copytree(tiny["subject"].parent, subject)
    victim = sorted((subject).rglob("images/*.png"))[-1]
    Image.new("RGB", (10, 10)).save(victim)
    result = run_cli(["-s", subject / "UNION", "-m", tmp_path / "m", "--flame", tiny["flame"], "--iterations", "3",
                      "--quiet", *SMALL_SCHEDULE])
    assert result.returncode == 2 and victim.name in result.stderr and "10x10" in result.stderr
    assert not (tmp_path / "m/checkpoints").exists()


def test_missing_flame_masks_is_one_clear_error(tiny, tmp_path):
    import shutil
    flame_dir = tmp_path / "flame"
    flame_dir.mkdir()
    shutil.copy(tiny["flame"], flame_dir / "flame2023.pkl")  # no FLAME_masks.pkl beside it
    # Without teeth: the small test model's lip rings live in its masks file (real FLAME's are built in).
    result = run_cli(["-s", tiny["subject"], "-m", tmp_path / "m", "--flame", flame_dir / "flame2023.pkl",
                      "--iterations", "3", "--quiet", *SMALL_SCHEDULE, "--set", "model.add_teeth=false"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "FLAME_masks.pkl" in result.stderr and "flame.is.tue.mpg.de" in result.stderr
    assert "--flame-masks" in result.stderr
