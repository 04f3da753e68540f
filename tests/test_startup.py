"""Start-up at real size (issue 23, part 3): file checks skipped when nothing changed, masks not
checked for training, progress while loading, no mesh precompute for fine-tuned FLAME, and the
expression classes cached per subject and settings across output folders."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scene.data.file_checks as file_checks  # noqa: E402
from scene.data.nersemble import load_subject  # noqa: E402
from scene.data.subject_cache import SubjectCache, content_digest  # noqa: E402
from scene.training import trainer as trainer_module  # noqa: E402
from scene.training.trainer import Trainer, TrainRequest  # noqa: E402
from subject_fixtures import write_fake_subject  # noqa: E402
from utils.errors import InputFileError, MissingFileError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty AVATAR_CACHE_DIR for this test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(root))
    return root


@pytest.fixture
def subject(tmp_path):
    return write_fake_subject(tmp_path / "data", seed=3)


@pytest.fixture
def header_reads(monkeypatch):
    """Paths whose header the file check read, in order."""
    reads = []
    real = file_checks.check_image_header

    def counting(path, size=None):
        reads.append(Path(path))
        return real(path, size)

    monkeypatch.setattr(file_checks, "check_image_header", counting)
    return reads


# ----------------------------------------------------------------------------- file checks


def test_file_checks_skipped_until_a_file_changes(subject, cache_dir, header_reads):
    s = load_subject(subject.union)
    frames = s.frames["train"]
    cache = SubjectCache()
    assert s.check_files(frames, masks=False, cache=cache) is True
    assert len(header_reads) == len(frames)
    assert s.check_files(frames, masks=False, cache=cache) is False  # the resume: nothing read
    assert len(header_reads) == len(frames)

    # Rewritten in place with the same size: the folder's mtime does not move, the file's does.
    victim = frames[3].image_path
    stat = victim.stat()
    victim.write_bytes(victim.read_bytes())
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert s.check_files(frames, masks=False, cache=cache) is True
    assert s.check_files(frames, masks=False, cache=cache) is False

    # A replaced file of the wrong size is caught by the re-check.
    Image.fromarray(np.zeros((subject.height + 2, subject.width, 3), np.uint8)).save(victim)
    with pytest.raises(InputFileError, match=victim.name):
        s.check_files(frames, masks=False, cache=cache)
    # ... and keeps failing (a failed check leaves no manifest behind).
    with pytest.raises(InputFileError, match=victim.name):
        s.check_files(frames, masks=False, cache=cache)

    # A removed file.
    gone = frames[5].image_path
    gone.unlink()
    with pytest.raises(MissingFileError, match=gone.name):
        s.check_files(frames[4:], masks=False, cache=cache)


def test_file_check_manifest_is_per_file_set_and_survives_a_lost_cache(subject, cache_dir, header_reads):
    s = load_subject(subject.union)
    cache = SubjectCache()
    train, val = s.frames["train"], s.frames["val"]
    s.check_files(train, masks=False, cache=cache)
    n = len(header_reads)
    assert s.check_files(train + val, masks=False, cache=cache) is True  # another set: checked
    shutil.rmtree(cache_dir)
    assert s.check_files(train, masks=False, cache=cache) is True  # no manifest: checked again
    assert len(header_reads) == n + len(train) + len(val) + len(train)


def test_training_checks_images_not_masks(subject, header_reads):
    s = load_subject(subject.union)
    frames = s.frames["train"]
    frames[0].mask_path.write_bytes(b"\x89PNG garbage")
    s.check_files(frames, masks=False)  # training never reads masks: not opened
    assert all(p.parent.name == "images" for p in header_reads)
    with pytest.raises(InputFileError, match=frames[0].mask_path.name):
        s.check_files(frames, masks=True)


def test_unwritable_cache_warns_once_and_checks_every_time(subject, tmp_path, capsys, header_reads):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    s = load_subject(subject.union)
    cache = SubjectCache(blocker / "subjects")
    frames = s.frames["train"]
    assert s.check_files(frames, masks=False, cache=cache) is True
    assert s.check_files(frames, masks=False, cache=cache) is True
    err = capsys.readouterr().err
    assert err.count("cannot write the start-up cache") == 1 and "AVATAR_CACHE_DIR" in err


# ----------------------------------------------------------------------------- progress


def test_subject_loading_and_checks_show_progress(subject, capsys):
    s = load_subject(subject.union, progress=True)
    err = capsys.readouterr().err
    assert "reading transforms_train.json" in err and "reading FLAME parameters" in err
    s.check_files(s.frames["train"], progress=True, masks=False)
    assert "checking images" in capsys.readouterr().err
    load_subject(subject.union)
    assert capsys.readouterr().err == ""  # silent unless asked


def test_content_digest_tells_dtypes_shapes_and_values_apart():
    a = torch.arange(6, dtype=torch.float32)
    assert content_digest([a]) == content_digest([a.clone().numpy()])
    assert content_digest([a]) != content_digest([a.double()])
    assert content_digest([a]) != content_digest([a.reshape(2, 3)])
    b = a.clone()
    b[5] = 5.000001
    assert content_digest([a]) != content_digest([b])
    assert content_digest(["x", 1]) != content_digest(["x", 2])


# ----------------------------------------------------------------------------- the trainer


def _trainer(tiny, model, *sets, quiet=True):
    overrides = [{"optim": {"iterations": 2}}, {"run": {"device": "cpu"}}]
    for text in sets:
        from utils.config import parse_assignment
        overrides.append(parse_assignment(text))
    return Trainer(TrainRequest(model_path=str(model), source_path=str(tiny["subject"]), flame=str(tiny["flame"]),
                                config_files=[str(REPO / "configs/tensorial.yaml"), str(REPO / "configs/demo.yaml")], overrides=overrides,
                                protocol="ga", quiet=quiet))


@pytest.fixture
def clusterings(monkeypatch):
    """The trainer's calls of the quadratic distances ("distances") and the clustering ("spectral")."""
    calls = []
    for name, tag in (("expression_distances", "distances"), ("cluster_timesteps", "spectral")):
        real = getattr(trainer_module, name)
        monkeypatch.setattr(trainer_module, name,
                            lambda *a, _real=real, _tag=tag, **k: calls.append(_tag) or _real(*a, **k))
    return calls


def test_expression_classes_shared_across_output_folders(tiny, tmp_path, cache_dir, clusterings):
    first = _trainer(tiny, tmp_path / "a", "sampling.n_classes=2")
    assert clusterings == ["distances", "spectral"]
    labels = json.loads((tmp_path / "a/clusters.json").read_text())["labels"]
    shared = list((cache_dir / "subjects/expression_classes").glob("*.json"))
    assert len(shared) == 1 and json.loads(shared[0].read_text())["labels"] == labels
    # The same subject and settings in another folder: from the cache, meshes not even kept.
    second = _trainer(tiny, tmp_path / "b", "sampling.n_classes=2")
    assert clusterings == ["distances", "spectral"]
    assert second.sequence._expr_offsets is None
    assert json.loads((tmp_path / "b/clusters.json").read_text())["labels"] == labels
    assert first.sampler.frame_classes.tolist() == second.sampler.frame_classes.tolist()
    # Another number of classes or another seed: clustered again from the cached distances.
    third = _trainer(tiny, tmp_path / "c", "sampling.n_classes=3")
    _trainer(tiny, tmp_path / "d", "sampling.n_classes=2", "run.seed=5")
    assert clusterings == ["distances", "spectral", "spectral", "spectral"]
    assert third.sampler.n_classes == 3 and third.sequence._expr_offsets is None
    assert len(list((cache_dir / "subjects/expression_classes").glob("*.json"))) == 3
    assert len(list((cache_dir / "subjects/expression_distances").glob("*.npy"))) == 1
    # Expression meshes kept for the clustering are released once it is done.
    assert first.sequence._expr_offsets is None


def test_expression_classes_missed_when_the_parameters_change(tiny, tmp_path, cache_dir, clusterings):
    _trainer(tiny, tmp_path / "a", "sampling.n_classes=2")
    copy = tmp_path / "copy"
    shutil.copytree(Path(tiny["subject"]).parent, copy)
    copied = {**tiny, "subject": copy / Path(tiny["subject"]).name}
    _trainer(copied, tmp_path / "b", "sampling.n_classes=2")  # the same content elsewhere: a hit
    assert clusterings == ["distances", "spectral"]
    # One training timestep's expression changes: a miss.
    npz = sorted((copy / "SEQ_EXP-0/flame_param").glob("*.npz"))[0]
    with np.load(npz) as f:
        data = {k: f[k].copy() for k in f.files}
    data["expr"][0, 0] += 0.25
    np.savez(npz, **data)
    _trainer(copied, tmp_path / "c", "sampling.n_classes=2")
    assert clusterings == ["distances", "spectral"] * 2


def test_clustering_reuses_the_precomputed_meshes(tiny, tmp_path, cache_dir, monkeypatch):
    seen, evaluations = [], []
    real_distances = trainer_module.expression_distances
    real_forward = trainer_module.FlameSequence._forward
    monkeypatch.setattr(trainer_module, "expression_distances",
                        lambda offsets, *a, **k: seen.append(offsets) or real_distances(offsets, *a, **k))
    monkeypatch.setattr(trainer_module.FlameSequence, "_forward",
                        lambda self, p: evaluations.append(len(p["expr"])) or real_forward(self, p))
    t = _trainer(tiny, tmp_path / "a", "sampling.n_classes=2")
    # FLAME ran for the precompute only (posed and expression meshes of every timestep once).
    assert sum(evaluations) == 2 * t.sequence.num_timesteps
    assert len(seen) == 1 and t.sequence._expr_offsets is None
    # What the clustering got is the expression meshes minus the canonical one.
    fresh = t.sequence.expression_offsets(torch.tensor(t.train_rows))
    assert sum(evaluations) > 2 * t.sequence.num_timesteps  # no kept copy now: evaluated again
    assert torch.allclose(seen[0], fresh, atol=1e-6)


def test_fine_tuned_flame_skips_the_precompute(tiny, tmp_path, cache_dir, monkeypatch):
    calls = []
    real = trainer_module.FlameSequence.precompute
    monkeypatch.setattr(trainer_module.FlameSequence, "precompute",
                        lambda self, *a, **k: calls.append(self.trainable) or real(self, *a, **k))
    t = _trainer(tiny, tmp_path / "a", "optim.train_flame=true", "sampling.n_classes=2")
    assert calls == [] and t.sequence._verts is None and t.sequence._expr_disp is None
    assert t.sampler.n_classes == 2  # clustered from meshes computed on the fly
    t.train()  # and training reads its meshes on the fly
    _trainer(tiny, tmp_path / "b", "sampling.n_classes=2")
    assert calls == [False]
    # The sequence itself refuses to fill caches nobody reads.
    assert t.sequence.precompute() is False and t.sequence._verts is None


def test_resume_skips_the_file_checks_and_keeps_its_classes(tiny, tmp_path, cache_dir, header_reads, clusterings):
    copy = tmp_path / "copy"  # this test breaks an image
    shutil.copytree(Path(tiny["subject"]).parent, copy)
    tiny = {**tiny, "subject": copy / Path(tiny["subject"]).name}
    t = _trainer(tiny, tmp_path / "a", "sampling.n_classes=2")
    n = len(header_reads)
    assert n > 0
    t.train()
    classes = t.sampler.frame_classes.tolist()
    shutil.rmtree(cache_dir)  # even without the subject cache the run folder keeps its classes
    resumed = Trainer(TrainRequest(model_path=str(tmp_path / "a"), resume=True, quiet=True,
                                   overrides=[{"optim": {"iterations": 3}}]))
    assert resumed.sampler.frame_classes.tolist() == classes and clusterings == ["distances", "spectral"]
    assert len(header_reads) == 2 * n  # the cache was gone: checked again
    Trainer(TrainRequest(model_path=str(tmp_path / "a"), resume=True, quiet=True,
                         overrides=[{"optim": {"iterations": 3}}]))
    assert len(header_reads) == 2 * n  # unchanged files: not read again
    # A training image replaced by a broken one is caught at the next resume.
    victim = t.train_frames[0].image_path
    victim.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputFileError, match=victim.name):
        Trainer(TrainRequest(model_path=str(tmp_path / "a"), resume=True, quiet=True,
                             overrides=[{"optim": {"iterations": 3}}]))


def test_trainer_start_up_shows_progress(tiny, tmp_path, cache_dir, capsys):
    _trainer(tiny, tmp_path / "a", "sampling.n_classes=2", quiet=False)
    err = capsys.readouterr()
    text = err.out + err.err
    for what in ("reading transforms_train.json", "checking images", "FLAME meshes", "expression distances",
                 "clustering"):
        assert what in text, what
    _trainer(tiny, tmp_path / "b", "sampling.n_classes=2", quiet=False)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "images unchanged since their last check" in text and "from the subject cache" in text
    assert "expression distances" not in text
