"""Expression distances, spectral clustering, class-balanced sampling, cluster cache."""
import json

import numpy as np
import pytest
import torch

from scene.rendering import compile_problem
from scene.training.class_balance import (
    ClassBalancedSampler,
    UniformFrameSampler,
    frame_draw_ratio,
    cluster_cache_key,
    cluster_settings,
    cluster_timesteps,
    expression_displacements,
    expression_distance_matrix,
    load_clusters,
    save_clusters,
    timestep_distance_matrix,
)


def test_distance_matrix_weighted_mean_by_hand():
    torch.manual_seed(0)
    canon = torch.randn(6, 3)
    verts = canon + torch.randn(4, 6, 3) * 0.01
    disp = expression_displacements(verts, canon)
    assert torch.allclose(disp, verts - canon)
    face = [0, 1, 2, 3]
    eye = [3, 4]  # vertex 3 is in both: counted once, weight 2; vertex 5 ignored
    d = timestep_distance_matrix(disp, face, eye, max_chunk_elements=40)  # forces chunking
    w = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0])
    sel = [0, 1, 2, 3, 4]
    for i in range(4):
        for j in range(4):
            per_vertex = (disp[i, sel] - disp[j, sel]).norm(dim=-1)
            assert abs(float(d[i, j]) - float((per_vertex * w).sum() / w.sum())) < 1e-6
    assert torch.allclose(d, d.T) and (d.diagonal() == 0).all()
    # bool masks give the same result
    fm = torch.zeros(6, dtype=torch.bool)
    fm[face] = True
    em = torch.zeros(6, dtype=torch.bool)
    em[eye] = True
    assert torch.allclose(timestep_distance_matrix(disp, fm, em), d)


def _groups(n_per_group, n_groups=4, V=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_groups, V, 3, generator=g) * 0.01
    disp, truth = [], []
    for k, n in enumerate(n_per_group):
        disp.append(centres[k] + 1e-4 * torch.randn(n, V, 3, generator=g))
        truth += [k] * n
    return torch.cat(disp), np.array(truth)


def test_spectral_clustering_separates_groups():
    disp, truth = _groups([30, 5, 12, 3])
    d = timestep_distance_matrix(disp, list(range(20)), list(range(20, 30)))
    labels = cluster_timesteps(d, n_classes=4, seed=0)
    assert labels.shape == truth.shape and set(labels.tolist()) == {0, 1, 2, 3}
    # same partition up to renaming
    for k in range(4):
        assert len(set(labels[truth == k].tolist())) == 1
    assert len({labels[truth == k][0] for k in range(4)}) == 4
    assert labels[0] == 0  # numbered by first appearance
    # deterministic
    assert (cluster_timesteps(d, n_classes=4, seed=0) == labels).all()


def test_fewer_timesteps_or_distinct_expressions_than_classes():
    d = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])
    assert sorted(cluster_timesteps(d, n_classes=16).tolist()) == [0, 1, 2]
    dup = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert cluster_timesteps(dup, n_classes=16).tolist() == [0, 0, 1]
    assert cluster_timesteps(torch.zeros(1, 1), n_classes=16).tolist() == [0]


def test_class_balanced_frequencies_and_within_class_uniformity():
    # timesteps 0..9: class 0 has 8 timesteps, class 1 has one, class 2 has one
    labels = [0] * 8 + [1, 2]
    cams = 4
    frame_ts = np.repeat(np.arange(10), cams)  # 40 frames
    s = ClassBalancedSampler(labels, frame_ts, seed=3)
    draws = s.sample(30000)
    cls = s.frame_classes[draws]
    freq = np.bincount(cls, minlength=3) / draws.size
    assert np.allclose(freq, 1 / 3, atol=0.015)
    in0 = np.bincount(draws[cls == 0], minlength=40)[:32]
    assert np.allclose(in0 / in0.sum(), 1 / 32, atol=0.01)
    in1 = np.bincount(draws[cls == 1], minlength=40)[32:36]
    assert np.allclose(in1 / in1.sum(), 1 / 4, atol=0.03)


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_partial_balance_draws_classes_by_count_power(balance):
    """A class of n frames is drawn with probability proportional to n^(1 - alpha); frames within a
    class stay uniform; alpha = 0 is every frame alike."""
    labels = [0] * 8 + [1, 2]
    frame_ts = np.repeat(np.arange(10), 4)  # class sizes 32, 4, 4 frames
    s = ClassBalancedSampler(labels, frame_ts, seed=3, balance=balance)
    draws = s.sample(30000)
    freq = np.bincount(s.frame_classes[draws], minlength=3) / draws.size
    expected = np.array([32.0, 4.0, 4.0]) ** (1 - balance)
    assert np.allclose(freq, expected / expected.sum(), atol=0.015), freq
    per_frame = np.bincount(draws, minlength=40) / draws.size
    if balance == 0.0:
        assert np.allclose(per_frame, 1 / 40, atol=0.006)
    ratio = per_frame[32:].mean() / per_frame[:32].mean()  # a frame of a small class vs the large one
    assert ratio == pytest.approx(frame_draw_ratio([32, 4, 4], balance), rel=0.1)


def test_full_balance_is_the_class_uniform_stream():
    """balance 1 draws exactly the stream the class-uniform sampler always drew (resume-compatible)."""
    labels, frame_ts = [0, 0, 1, 2, 2], np.repeat(np.arange(5), 3)
    default = ClassBalancedSampler(labels, frame_ts, seed=7).sample(200)
    rng = np.random.Generator(np.random.PCG64(7))
    classes = [np.flatnonzero(np.repeat(labels, 3) == c) for c in range(3)]
    by_hand = []
    for _ in range(200):
        frames = classes[int(rng.integers(3))]
        by_hand.append(int(frames[int(rng.integers(frames.size))]))
    assert default.tolist() == by_hand
    assert (ClassBalancedSampler(labels, frame_ts, seed=7, balance=1.0).sample(200) == default).all()
    assert frame_draw_ratio([31, 5], 1.0) == pytest.approx(6.2)


def test_sampler_with_timestep_values_and_dropping_empty_classes():
    s = ClassBalancedSampler(labels=[0, 1, 2], timesteps=[100, 205, 300], frame_timesteps=[205, 100, 100], seed=0)
    assert s.n_classes == 2
    assert set(s.sample(200).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError):
        ClassBalancedSampler(labels=[0], timesteps=[5], frame_timesteps=[6])


@pytest.mark.parametrize("make", [
    lambda: ClassBalancedSampler([0, 0, 1, 2, 2], np.repeat(np.arange(5), 3), seed=7),
    lambda: UniformFrameSampler(7, seed=7),
])
def test_resume_reproduces_sequence(make):
    a = make()
    a.sample(23)
    state = json.loads(json.dumps(a.state_dict()))  # survives serialisation
    rest = a.sample(40)
    b = make()
    b.load_state_dict(state)
    assert (b.sample(40) == rest).all()
    assert b.n_drawn == a.n_drawn
    c = make()
    assert not (c.sample(40) == rest).all()


def test_uniform_sampler_epochs():
    s = UniformFrameSampler(10, seed=1)
    for _ in range(3):
        assert sorted(s.sample(10).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        s.load_state_dict(ClassBalancedSampler([0], [0]).state_dict())


def test_cluster_cache_round_trip_and_invalidation(tmp_path):
    path = tmp_path / "sub" / "clusters.json"
    ts = [10, 11, 12, 13]
    labels = [0, 1, 1, 0]
    meta = {"n_classes": 16, "seed": 0}
    save_clusters(path, labels, ts, meta)
    out = load_clusters(path, ts, meta)
    assert out is not None
    assert out[0].tolist() == labels and out[1].tolist() == ts and out[2] == meta
    # same set in another order: labels follow the requested order
    assert load_clusters(path, [13, 10, 12, 11], meta)[0].tolist() == [0, 0, 1, 1]
    assert load_clusters(path, [10, 11, 12], meta) is None  # other training timesteps
    assert load_clusters(path, ts, {"n_classes": 8, "seed": 0}) is None  # other n_classes
    assert load_clusters(tmp_path / "missing.json", ts, meta) is None
    path.write_text("{not json")
    assert load_clusters(path, ts, meta) is None
    assert [p.name for p in path.parent.iterdir()] == ["clusters.json"]  # no temp files left
    with pytest.raises(ValueError):
        save_clusters(path, labels, ts, {"seed": 0})


def test_per_frame_labels_and_next_method():
    s = ClassBalancedSampler([0, 0, 0, 1], seed=0)  # one class per frame
    draws = np.array([s.next() for _ in range(4000)])
    assert abs((draws == 3).mean() - 0.5) < 0.03
    u = UniformFrameSampler(3, seed=0)
    assert sorted([u.next() for _ in range(3)]) == [0, 1, 2]


@pytest.mark.parametrize("block", [1, 97, 4096, 1 << 20, None])
def test_blocked_distance_equals_the_dense_reference(block):
    g = torch.Generator().manual_seed(1)
    T, V = 53, 70
    disp = torch.randn(T, V, 3, generator=g) * 0.01
    face = torch.rand(V, generator=g) < 0.6
    eye = torch.rand(V, generator=g) < 0.1
    dense = timestep_distance_matrix(disp, face, eye)
    fast = expression_distance_matrix(disp, face, eye, max_block_elements=block)
    assert fast.dtype == torch.float32 and fast.device.type == "cpu"
    assert torch.allclose(fast, dense, rtol=1e-6, atol=0)
    assert torch.equal(fast, fast.T) and (fast.diagonal() == 0).all()
    # Blocks change nothing: every entry is the same sum whatever the block size.
    assert torch.equal(fast, expression_distance_matrix(disp, face, eye, max_block_elements=10 ** 9))


def test_blocked_distance_gives_the_reference_classes():
    disp, truth = _groups([30, 5, 12, 3], V=40, seed=4)
    disp = disp + 2e-3 * torch.randn(disp.shape, generator=torch.Generator().manual_seed(5))  # overlapping groups
    face, eye = list(range(30)), list(range(30, 40))
    dense = cluster_timesteps(timestep_distance_matrix(disp, face, eye), n_classes=6, seed=0)
    fast = cluster_timesteps(expression_distance_matrix(disp, face, eye, max_block_elements=500), n_classes=6, seed=0)
    assert (dense == fast).all() and len(set(dense.tolist())) == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the distances on the GPU")
def test_distance_on_the_gpu_matches_the_cpu_reference():
    g = torch.Generator().manual_seed(2)
    disp = torch.randn(300, 200, 3, generator=g) * 0.01
    face, eye = torch.arange(150), torch.arange(120, 180)
    dense = timestep_distance_matrix(disp, face, eye)
    fast = expression_distance_matrix(disp.cuda(), face, eye, max_block_elements=1 << 16)
    assert fast.device.type == "cpu"
    assert torch.allclose(fast, dense, rtol=1e-5, atol=1e-8)
    assert (cluster_timesteps(fast, 8) == cluster_timesteps(dense, 8)).all()


def test_distance_progress_bar(capsys):
    disp = torch.randn(20, 10, 3)
    expression_distance_matrix(disp, list(range(10)), [0], max_block_elements=300, progress=True)
    err = capsys.readouterr().err
    assert "expression distances" in err and "block" in err
    expression_distance_matrix(disp, list(range(10)), [0], max_block_elements=300)
    assert capsys.readouterr().err == ""


def test_cluster_settings_key_every_input():
    ts = [0, 1, 2]
    base = cluster_cache_key(ts, cluster_settings(16, 0, "a" * 64))
    assert base == cluster_cache_key(ts, cluster_settings(16, 0, "a" * 64))
    assert base != cluster_cache_key(ts, cluster_settings(8, 0, "a" * 64))
    assert base != cluster_cache_key(ts, cluster_settings(16, 1, "a" * 64))
    assert base != cluster_cache_key(ts, cluster_settings(16, 0, "b" * 64))
    assert base != cluster_cache_key([0, 1, 3], cluster_settings(16, 0, "a" * 64))


# ----------------------------------------------------------------------------- the fused kernel

_COMPILER = compile_problem("cpu")


@pytest.mark.skipif(_COMPILER is not None, reason=f"the fused distance kernel needs inductor's C++ compiler: {_COMPILER}")
@pytest.mark.parametrize("T", [7, 256, 300])  # under one block, exactly one, a padded second
def test_fused_distance_equals_the_plain_reference(T):
    g = torch.Generator().manual_seed(T)
    V = 90
    disp = torch.randn(T, V, 3, generator=g) * 0.01
    disp[3] = disp[1]  # a duplicate expression: distance exactly 0
    face, eye = torch.arange(60), torch.arange(55, 70)  # one S for every T: one kernel to build
    plain = expression_distance_matrix(disp, face, eye, compiled=False)
    fused = expression_distance_matrix(disp, face, eye, compiled=True)
    assert fused.dtype == torch.float32 and fused.shape == (T, T)
    assert torch.allclose(fused, plain, rtol=1e-6, atol=0)  # summation order only
    assert torch.allclose(fused, timestep_distance_matrix(disp, face, eye), rtol=1e-6, atol=0)
    assert torch.equal(fused, fused.T) and (fused.diagonal() == 0).all() and fused[1, 3] == 0


@pytest.mark.skipif(_COMPILER is not None, reason=f"the fused distance kernel needs inductor's C++ compiler: {_COMPILER}")
def test_fused_distance_gives_the_reference_classes():
    disp, truth = _groups([30, 5, 12, 3], V=40, seed=4)
    disp = disp + 2e-3 * torch.randn(disp.shape, generator=torch.Generator().manual_seed(5))
    face, eye = list(range(30)), list(range(30, 40))
    plain = cluster_timesteps(expression_distance_matrix(disp, face, eye, compiled=False), n_classes=6, seed=0)
    fused = cluster_timesteps(expression_distance_matrix(disp, face, eye, compiled=True), n_classes=6, seed=0)
    assert (plain == fused).all() and len(set(plain.tolist())) == 6


def test_fused_distance_only_for_large_work_and_falls_back(monkeypatch):
    import scene.training.class_balance as cb

    built = []
    monkeypatch.setattr(cb, "_compiled_distance_block", lambda: built.append(1) or (_ for _ in ()).throw(
        RuntimeError("C++ compile error: no such compiler\nmore")))
    monkeypatch.setattr("scene.rendering.compile_problem", lambda device: None)
    disp = torch.randn(40, 30, 3, generator=torch.Generator().manual_seed(0))
    plain = expression_distance_matrix(disp, list(range(30)), [0, 1], compiled=False)
    # Small work: the plain path without trying to build anything.
    assert torch.equal(expression_distance_matrix(disp, list(range(30)), [0, 1]), plain) and built == []
    monkeypatch.setattr(cb, "COMPILED_MIN_WORK", 10)
    with pytest.warns(UserWarning, match="could not be built .*C\\+\\+ compile error: no such compiler"):
        out = expression_distance_matrix(disp, list(range(30)), [0, 1])
    assert built == [1] and torch.equal(out, plain)
    # No compiler: told once per call, and the plain path.
    monkeypatch.setattr("scene.rendering.compile_problem", lambda device: "torch.compile on cpu needs a C++ compiler")
    assert torch.equal(expression_distance_matrix(disp, list(range(30)), [0, 1]), plain) and built == [1]
    with pytest.warns(UserWarning, match="needs a C\\+\\+ compiler"):
        assert torch.equal(expression_distance_matrix(disp, list(range(30)), [0, 1], compiled=True), plain)
