"""train.py end to end: exact resume, clear errors, and learning on the synthetic subject."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from subject_fixtures import write_fake_subject  # noqa: E402

import train  # noqa: E402
from scene.model.components import SplatGeometry  # noqa: E402

SMALL_SCHEDULE = ["--config", str(REPO / "configs/tensorial.yaml"), "--config", str(REPO / "configs/demo.yaml"),
                  "--set", "run.eval_interval=1000", "--set", "densify.densify_from_iter=5",
                  "--set", "densify.densification_interval=10", "--set", "model.opacity.feature_lines.warmup=0.2",
                  "--set", "sampling.n_classes=2", "--eval", "--quiet"]


def run_cli(args, **kw):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, args)], cwd=REPO, capture_output=True, text=True, **kw)


def checkpoint_tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == ".pt" and f.name != "training_state.pt":
            value = torch.load(f, weights_only=True)
            items = value.items() if isinstance(value, dict) else [("", value)]
            out.update({f"{f.name}:{k}": v for k, v in items if torch.is_tensor(v)})
    out["splats.ply"] = (folder / "splats.ply").read_bytes()
    return out


def assert_same_checkpoint(a_dir: Path, b_dir: Path) -> None:
    """Every tensor and the PLY of two checkpoint folders equal, bit for bit."""
    a, b = checkpoint_tensors(a_dir), checkpoint_tensors(b_dir)
    assert a.keys() == b.keys()
    for key in a:
        same = a[key] == b[key] if isinstance(a[key], bytes) else torch.equal(a[key], b[key])
        assert same, key


def assert_resume_reproduces(args: list, steps: int, straight_checkpoint: Path) -> None:
    """Train ``steps`` iterations of the train.py command line ``args`` in this process, save, and
    let ``train.py -m <its -m> --resume`` finish the run: its checkpoint of the straight run's
    iteration equals ``straight_checkpoint`` bit for bit."""
    trainer = train.Trainer(train.request_from_args(train.parse_args(list(map(str, args)))))
    model = trainer.model_dir
    for _ in range(steps):
        trainer.step += 1
        trainer.training_step(trainer.step)
    trainer.save(trainer.step)
    del trainer
    assert train.main(["-m", str(model), "--resume", "--quiet"]) == 0
    assert_same_checkpoint(straight_checkpoint, model / "checkpoints" / straight_checkpoint.name)


def test_resume_continues_bit_exact(tiny, tmp_path):
    common = ["-s", tiny["subject"], "--flame", tiny["flame"], *SMALL_SCHEDULE, "--set", "run.save_interval=15"]
    assert train.main(list(map(str, ["-m", tmp_path / "straight", *common, "--iterations", "30"]))) == 0
    # The same run, interrupted after its checkpoint at 15 and resumed.
    args = train.parse_args(list(map(str, ["-m", tmp_path / "resumed", *common, "--iterations", "30"])))
    trainer = train.Trainer(train.request_from_args(args))
    for _ in range(15):
        trainer.step += 1
        trainer.training_step(trainer.step)
    trainer.save(trainer.step)
    del trainer
    assert train.main(list(map(str, ["-m", tmp_path / "resumed", "--resume", "--quiet"]))) == 0
    a = checkpoint_tensors(tmp_path / "straight/checkpoints/iteration_0000030")
    b = checkpoint_tensors(tmp_path / "resumed/checkpoints/iteration_0000030")
    assert a.keys() == b.keys()
    for key in a:
        same = a[key] == b[key] if isinstance(a[key], bytes) else torch.equal(a[key], b[key])
        assert same, key
    # Densification happened, so the resume restored the strategy and optimiser rows too.
    assert len(a["splats.ply"]) > 0
    saved = (tmp_path / "resumed/config.yaml").read_text()
    assert "source_path" in saved and "flame_model" in saved


def test_training_seconds_count_every_process_of_a_resumed_run(tiny, tmp_path):
    common = ["-s", tiny["subject"], "--flame", tiny["flame"], *SMALL_SCHEDULE, "--set", "run.save_interval=4"]
    model = tmp_path / "m"
    assert train.main(list(map(str, ["-m", model, *common, "--iterations", "8"]))) == 0
    times = json.loads((model / "train_time.json").read_text())
    first = json.loads((model / "train_summary.json").read_text())
    assert set(times) == {"4", "8"} and 0 < times["4"] < times["8"]
    assert first["train_seconds"] == pytest.approx(times["8"], abs=0.5)
    assert first["train_seconds"] == pytest.approx(first["train_seconds_this_process"])
    assert train.main(list(map(str, ["-m", model, "--resume", "--iterations", "12", "--quiet"]))) == 0
    second = json.loads((model / "train_summary.json").read_text())
    assert second["train_seconds"] == pytest.approx(times["8"] + second["train_seconds_this_process"])
    assert "train_seconds_counted_from_iteration" not in second
    # A checkpoint without a recorded time (written before the file existed): counted from it, said so.
    (model / "train_time.json").unlink()
    assert train.main(list(map(str, ["-m", model, "--resume", "--iterations", "16", "--quiet"]))) == 0
    third = json.loads((model / "train_summary.json").read_text())
    assert third["train_seconds"] == third["train_seconds_this_process"]
    assert third["train_seconds_counted_from_iteration"] == 12


def test_check_config_prints_the_resolved_config_and_writes_nothing(tmp_path):
    model = tmp_path / "never_written"
    ok = run_cli(["-m", model, "--config", REPO / "configs/npga.yaml", "--iterations", "77", "--check-config"])
    assert ok.returncode == 0 and not model.exists()
    printed = yaml.safe_load(ok.stdout)
    assert printed["optim"]["iterations"] == 77 and printed["model"]["geometry"]["type"] == "npga"
    bad = run_cli(["-m", model, "--config", REPO / "configs/npga.yaml", "--set", "densify.grad_power=0.5",
                   "--check-config"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "densify.grad_power" in bad.stderr
    assert not model.exists()


def test_missing_flame_model_is_one_clear_error(tiny, tmp_path):
    result = run_cli(["-s", tiny["subject"], "-m", tmp_path / "m", "--flame", tmp_path / "nowhere/flame2023.pkl", "--quiet"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "flame.is.tue.mpg.de" in result.stderr and str(tmp_path / "nowhere/flame2023.pkl") in result.stderr


def test_folder_that_is_not_a_subject(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli(["-s", tmp_path / "empty", "-m", tmp_path / "m", "--flame", tiny["flame"], "--quiet"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "transforms_train.json" in result.stderr


def test_output_folder_from_another_config(tiny, tmp_path):
    common = ["-s", tiny["subject"], "-m", tmp_path / "m", "--flame", tiny["flame"]]
    assert train.main(list(map(str, [*common, *SMALL_SCHEDULE, "--iterations", "3"]))) == 0
    result = run_cli([*common, "--config", REPO / "configs/gaussian_avatars.yaml", "--iterations", "3", "--quiet"])
    assert result.returncode == 2 and "already holds a checkpoint" in result.stderr and "Traceback" not in result.stderr
    resumed = run_cli([*common, "--config", REPO / "configs/gaussian_avatars.yaml", "--iterations", "3", "--quiet",
                       "--resume"])
    assert resumed.returncode == 2 and "another setup" in resumed.stderr and "model.color: type 'triplane' -> 'sh'" in resumed.stderr
    assert "--allow-changes" in resumed.stderr and "Traceback" not in resumed.stderr
    again = run_cli([*common, *SMALL_SCHEDULE, "--iterations", "3"])
    assert again.returncode == 2 and "--resume" in again.stderr


def test_gaussian_avatars_config_trains_with_sh(tiny, tmp_path):
    args = ["-s", tiny["subject"], "-m", tmp_path / "ga", "--flame", tiny["flame"], "--config",
            REPO / "configs/gaussian_avatars.yaml", "--config", REPO / "configs/demo.yaml", "--iterations", "5", "--quiet", "--eval"]
    assert train.main(list(map(str, args))) == 0
    ckpt = tmp_path / "ga/checkpoints/iteration_0000005"
    assert (ckpt / "splats.ply").is_file()
    assert not (ckpt / "triplane.pt").exists() and not (ckpt / "feature_lines.pt").exists()


@pytest.mark.slow
def test_training_raises_validation_psnr_on_synthetic_subject(synthetic_dataset, tmp_path):
    subject = synthetic_dataset["subjects"]["s000"]["union"]
    model = tmp_path / "avatar"
    args = ["-s", subject, "-m", model, "--flame", synthetic_dataset["flame_model"],
            "--config", REPO / "configs/tensorial.yaml", "--config", REPO / "configs/demo.yaml",
            "--iterations", "300", "--set", "run.eval_interval=150", "--set", "densify.densify_from_iter=100",
            "--set", "densify.densification_interval=100", "--set", "densify.densify_until_iter=250", "--eval", "--quiet"]
    trainer = train.Trainer(train.request_from_args(train.parse_args(list(map(str, args)))))
    before = trainer.evaluate(0)["val"]["PSNR"]
    summary = trainer.train()
    after = summary["eval"]["val"]["PSNR"]
    assert after > before + 5.0, (before, after)
    # The feature lines learn: each training expression gets its own, non-trivial opacity
    # offsets (lines cut off from the image loss, or a decoder that never leaves its start,
    # leave delta at exactly 0).
    avatar = trainer.avatar
    with torch.no_grad():
        canonical = avatar.canonical_splat_positions()
        deltas = torch.stack([avatar.opacity(SplatGeometry.canonical(canonical), trainer.subject.flame["expr"][row],
                                             trainer.subject.flame["jaw_pose"][row])
                              for row in trainer.train_rows])
    assert deltas.abs().max() > 0.5, deltas.abs().max()
    assert (deltas - deltas.mean(0)).abs().max() > 0.5
    log = [json.loads(line) for line in (model / "train_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [150, 300]


def test_single_timestep_union_with_empty_test_split(tiny, tmp_path):
    """One training sequence of one timestep, no test frames: trains, evaluates val only."""
    from flame_model import FLAME
    n_vertices = FLAME(tiny["flame"]).num_vertices
    fake = write_fake_subject(tmp_path / "data", n_cameras=3, n_train_sequences=1, n_timesteps=1, test_sequence=False,
                              width=32, height=40, n_vertices=n_vertices, distance=0.6)
    model = tmp_path / "m"
    args = ["-s", fake.union, "-m", model, "--flame", tiny["flame"], *SMALL_SCHEDULE, "--iterations", "12",
            "--set", "run.eval_interval=6"]
    assert train.main(list(map(str, args))) == 0
    log = [json.loads(line) for line in (model / "train_log.jsonl").read_text().splitlines()]
    assert [set(entry["eval"]) for entry in log] == [{"val"}, {"val"}]
    labels = json.loads((model / "clusters.json").read_text())["labels"]
    assert labels == [0]
