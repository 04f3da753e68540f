"""Shared pytest fixtures.

``synthetic_dataset`` (session scope) generates a SMALL synthetic dataset once per test session
and returns the dict of :func:`synthetic.generate_dataset` (absolute ``str`` paths):

    {"root", "flame_model", "flame_masks", "manifest", "settings",
     "subjects": {"s000": {"union": <UNION folder>,
                           "sequences": {"EXP-1", "EXP-2", "TEST", "FREE": <sequence folder>}}}}

Contents: one identity ``s000``, 16 cameras (camera 8 = frontal validation camera), 55 x 80
images (downscale 10), training sequences EXP-1 and EXP-2 with 4 timesteps each, TEST and FREE
with 3 each. The union's train split has 2 x 4 x 15 frames, val 2 x 4 x 1, test 3 x 16.
Keep this contract stable: other modules' tests rely on it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FETCH_LPIPS = Path(__file__).resolve().parents[1] / "scripts" / "fetch_lpips_weights.py"

SYNTHETIC_FIXTURE_SETTINGS = dict(seed=0, n_identities=1, downscale=10, n_cameras=16, timesteps_per_sequence=4,
                                  n_train_sequences=2, test_timesteps=3, free_timesteps=3)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> dict:
    """A small synthetic dataset (see module doc), generated once per session (~5 s)."""
    from synthetic import generate_dataset
    root = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(root, progress=False, **SYNTHETIC_FIXTURE_SETTINGS)


@pytest.fixture(scope="session")
def lpips_weights():
    """Fetch + convert the LPIPS weights once (cached; a no-op when present and verified)."""
    proc = subprocess.run([sys.executable, str(FETCH_LPIPS)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"scripts/fetch_lpips_weights.py failed:\n{proc.stdout}\n{proc.stderr}")
    from utils.lpips import lpips_cache_dir
    return lpips_cache_dir()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny FLAME-layout model and a fake NeRSemble subject (random images) that fits it:
    {"flame": model pickle (FLAME_masks.pkl beside it), "subject": the union folder}."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from flame_fixtures import write_small_flame
    from subject_fixtures import write_fake_subject

    root = tmp_path_factory.mktemp("tiny")
    flame_path, n_vertices = write_small_flame(root / "flame")
    write_fake_subject(root / "data", n_cameras=4, n_timesteps=3, width=48, height=64, n_vertices=n_vertices,
                       distance=0.6)
    return {"flame": flame_path, "subject": root / "data" / "UNION"}

