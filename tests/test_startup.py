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
    assert t.sequence.precompute() is None and t.sequence._verts is None


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


# ----------------------------------------------------------------------------- the parsed-subject cache


def _assert_same_subject(a, b):
    """Every frame field, FLAME stack and derived value equal (tensors bit for bit, same dtypes)."""
    assert a.timesteps == b.timesteps and list(a.frames) == list(b.frames)
    assert set(a.flame) == set(b.flame)
    for key in a.flame:
        assert a.flame[key].dtype == b.flame[key].dtype and torch.equal(a.flame[key], b.flame[key]), key
    assert torch.equal(a.shape, b.shape) and a.cameras_extent == b.cameras_extent
    assert a.camera_indices == b.camera_indices
    for split in a.frames:
        assert len(a.frames[split]) == len(b.frames[split]) > 0 or split == "test"
        for f, g in zip(a.frames[split], b.frames[split]):
            for name, value in vars(f).items():
                other = getattr(g, name)
                if isinstance(value, torch.Tensor):
                    assert value.dtype == other.dtype and torch.equal(value, other), name
                else:
                    assert type(value) is type(other) and value == other, (name, value, other)


@pytest.fixture
def hits(monkeypatch):
    """One entry per cached load: True when the parse came from the cache, False when parsed."""
    import scene.data.nersemble as nersemble
    calls = []
    real = nersemble._restore_parse
    monkeypatch.setattr(nersemble, "_restore_parse", lambda *a: calls.append(real(*a) is not None) or real(*a))
    return calls


def _rewrite_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    stat = path.stat()
    path.write_text(json.dumps(doc))
    # Same size possible, so make sure the modification time moves even on a coarse clock.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_parsed_subject_cache_equals_a_fresh_load(subject, cache_dir, hits):
    cache = SubjectCache()
    first = load_subject(subject.union, cache=cache)
    second = load_subject(subject.union, cache=cache)
    assert hits == [True]  # nothing stored before the first; the second from the cache
    assert len(list((cache_dir / "subjects/parsed_subjects").glob("*.npz"))) == 1
    plain = load_subject(subject.union)
    _assert_same_subject(second, plain)
    _assert_same_subject(first, plain)
    # Each frame owns its tensors, as a parsed one does (a frame sent to a worker carries only its own).
    frames = second.frames["train"]
    assert frames[0].K.untyped_storage().data_ptr() != frames[1].K.untyped_storage().data_ptr()
    # Another scale is another entry.
    half = load_subject(subject.union, cache=cache, resolution_scale=0.5)
    assert hits == [True] and half.frames["train"][0].width == plain.frames["train"][0].width // 2


def test_parsed_subject_cache_misses_when_a_json_changes(subject, cache_dir, hits):
    cache = SubjectCache()
    load_subject(subject.union, cache=cache)
    json_path = subject.union / "transforms_train.json"

    def move_camera(doc):
        doc["frames"][0]["transform_matrix"][0][3] += 0.125

    _rewrite_json(json_path, move_camera)
    changed = load_subject(subject.union, cache=cache)
    assert hits == [False]
    _assert_same_subject(changed, load_subject(subject.union))
    load_subject(subject.union, cache=cache)
    assert hits == [False, True]  # stored again


def test_parsed_subject_cache_misses_when_a_flame_file_changes(subject, cache_dir, hits):
    cache = SubjectCache()
    before = load_subject(subject.union, cache=cache)
    frame = before.frames["train"][0]
    npz = frame.flame_param_path
    with np.load(npz) as f:
        data = {k: f[k].copy() for k in f.files}
    data["expr"][..., 0] += 0.5
    np.savez(npz, **data)
    after = load_subject(subject.union, cache=cache)
    assert hits == [False]
    row = after.timestep_row[frame.timestep]
    assert after.flame["expr"][row, 0] == pytest.approx(float(before.flame["expr"][row, 0]) + 0.5)
    _assert_same_subject(after, load_subject(subject.union))


def test_parsed_subject_cache_misses_when_a_file_goes(subject, cache_dir, hits):
    cache = SubjectCache()
    s = load_subject(subject.union, cache=cache)
    gone = s.frames["train"][2].image_path
    gone.unlink()
    with pytest.raises(MissingFileError, match=gone.name):
        load_subject(subject.union, cache=cache)
    assert hits == [False]


def test_corrupt_parsed_subject_cache_is_parsed_again(subject, cache_dir, hits):
    cache = SubjectCache()
    load_subject(subject.union, cache=cache)
    (entry,) = (cache_dir / "subjects/parsed_subjects").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated
    _assert_same_subject(load_subject(subject.union, cache=cache), load_subject(subject.union))
    entry.write_bytes(b"not an npz at all")
    _assert_same_subject(load_subject(subject.union, cache=cache), load_subject(subject.union))
    assert hits == []  # neither could be read: no stored parse was even checked
    load_subject(subject.union, cache=cache)
    assert hits == [True]  # rewritten whole


# ----------------------------------------------------------------------------- the FLAME-mesh cache


@pytest.fixture
def mesh_computations(monkeypatch):
    """How many times the trainer's FLAME meshes were computed (not read from the cache)."""
    calls = []
    real = trainer_module.FlameSequence._compute
    monkeypatch.setattr(trainer_module.FlameSequence, "_compute",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    return calls


def test_flame_meshes_cached_across_runs(tiny, tmp_path, cache_dir, mesh_computations, capsys):
    first = _trainer(tiny, tmp_path / "a", "sampling.n_classes=2", quiet=False)
    assert mesh_computations == [1]
    assert "timesteps computed" in capsys.readouterr().out
    second = _trainer(tiny, tmp_path / "b", "sampling.n_classes=2", "run.seed=4", quiet=False)
    assert mesh_computations == [1]  # read, and the log says so
    out = capsys.readouterr().out
    assert "timesteps read from the subject cache" in out and "computed" not in out
    assert torch.equal(first.sequence._verts, second.sequence._verts)
    assert torch.equal(first.sequence._expr_disp, second.sequence._expr_disp)
    # A seed whose distances are not cached yet: the clustering evaluates its meshes itself.
    shutil.rmtree(cache_dir / "subjects/expression_distances")
    shutil.rmtree(cache_dir / "subjects/expression_classes")
    third = _trainer(tiny, tmp_path / "c", "sampling.n_classes=2")
    assert mesh_computations == [1]
    assert third.sampler.frame_classes.tolist() == first.sampler.frame_classes.tolist()


def test_flame_mesh_cache_misses_when_the_parameters_change(tiny, tmp_path, cache_dir, mesh_computations):
    copy = tmp_path / "copy"
    shutil.copytree(Path(tiny["subject"]).parent, copy)
    copied = {**tiny, "subject": copy / Path(tiny["subject"]).name}
    first = _trainer(copied, tmp_path / "a", "sampling.n_classes=2")
    npz = sorted((copy / "SEQ_EXP-0/flame_param").glob("*.npz"))[1]
    with np.load(npz) as f:
        data = {k: f[k].copy() for k in f.files}
    data["jaw_pose"][..., 0] += 0.2
    np.savez(npz, **data)
    second = _trainer(copied, tmp_path / "b", "sampling.n_classes=2")
    assert mesh_computations == [1, 1]
    assert not torch.equal(first.sequence._verts, second.sequence._verts)
    # What was stored is what computing gives.
    fresh = trainer_module.FlameSequence(second.flame, second.sequence.row_params(second.row_index),
                                         second.sequence.shape, second.sequence.static_offset)
    fresh.precompute()
    assert torch.equal(fresh._verts, second.sequence._verts) and torch.equal(fresh._expr_disp, second.sequence._expr_disp)


def test_corrupt_flame_mesh_cache_is_computed_again(tiny, tmp_path, cache_dir, mesh_computations):
    first = _trainer(tiny, tmp_path / "a", "sampling.n_classes=2")
    (entry,) = (cache_dir / "subjects/flame_meshes").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:1000])
    second = _trainer(tiny, tmp_path / "b", "sampling.n_classes=2")
    assert mesh_computations == [1, 1]
    assert torch.equal(first.sequence._verts, second.sequence._verts)
    _trainer(tiny, tmp_path / "c", "sampling.n_classes=2")
    assert mesh_computations == [1, 1]  # stored whole again
