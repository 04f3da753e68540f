"""The training loader serves exactly the images the subject's own reader returns, ahead of time."""
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from subject_fixtures import write_fake_subject  # noqa: E402

from scene.training.class_balance import ClassBalancedSampler, UniformFrameSampler  # noqa: E402
from scene.data.frame_loader import DeviceImageCache, GroundTruthLoader, frame_loader_for  # noqa: E402
from scene.data.datasets import load_subject  # noqa: E402


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    fake = write_fake_subject(tmp_path_factory.mktemp("loader"), n_cameras=4, n_timesteps=3, width=24, height=32)
    return load_subject(fake.union)


@pytest.mark.parametrize("make_sampler", [
    lambda n: UniformFrameSampler(n, seed=5),
    lambda n: ClassBalancedSampler([i % 3 for i in range(n)], seed=7),
])
@pytest.mark.parametrize("device_cache_bytes", [0, 10 * 24 * 32 * 3])
def test_loader_returns_the_readers_images_in_sampler_order(subject, make_sampler, device_cache_bytes):
    frames = subject.frames["train"]
    sampler = make_sampler(len(frames))
    loader = frame_loader_for(subject, frames, torch.device("cpu"), sampler, depth=4, workers=2,
                              device_cache_bytes=device_cache_bytes)
    try:
        for _ in range(3 * len(frames)):
            index = sampler.next()
            got = loader.get(index)
            want = subject.load_image(frames[index])
            assert got.dtype == torch.float32 and torch.equal(got, want)
        stats = loader.stats()
        assert stats["synchronous"] == 0  # every frame came from the look-ahead (or the device cache)
        assert stats["prefetched"] == 3 * len(frames)
        assert stats["device_cache_bytes"] <= device_cache_bytes
        assert stats["device_cache_entries"] == (0 if device_cache_bytes == 0 else 10)
    finally:
        loader.close()


def test_loader_decodes_ahead_on_worker_threads(subject):
    frames = subject.frames["train"]
    threads = []

    def load(i):
        threads.append(threading.current_thread().name)
        return subject.load_image_uint8(frames[i])

    sampler = UniformFrameSampler(len(frames), seed=1)
    loader = GroundTruthLoader.for_sampler(load, torch.device("cpu"), sampler, depth=3, workers=1)
    loader.get(sampler.next())
    loader.close()
    assert threads and all(name.startswith("gt-decode") for name in threads)


def test_loader_survives_a_draw_it_did_not_predict(subject):
    frames = subject.frames["train"]
    sampler = UniformFrameSampler(len(frames), seed=2)
    loader = frame_loader_for(subject, frames, torch.device("cpu"), UniformFrameSampler(len(frames), seed=99),
                              depth=4, workers=1, device_cache_bytes=0)
    for _ in range(10):
        index = sampler.next()
        assert torch.equal(loader.get(index), subject.load_image(frames[index]))
    assert loader.stats()["synchronous"] >= 1
    loader.close()


def test_device_cache_keeps_its_byte_budget():
    cache = DeviceImageCache(max_bytes=250)
    for key in range(5):
        cache.put(key, torch.zeros(100, dtype=torch.uint8))
    assert len(cache) == 2 and cache.current_bytes == 200 and 4 in cache and 3 in cache and 0 not in cache
    cache.put(9, torch.zeros(300, dtype=torch.uint8))  # larger than the budget: not kept
    assert 9 not in cache and cache.current_bytes == 200
