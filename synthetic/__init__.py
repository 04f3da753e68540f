"""Synthetic subject generator: a FLAME-format head model and NeRSemble-format multi-view data.

It is the embedded default data of ``run.sh`` and of the test suite (no FLAME licence, GPU or
download needed). Modules, one job each:

* :mod:`.anatomy` -- shared landmark constants; :mod:`.head_surface` -- template mesh;
  :mod:`.blendshapes` -- identity/expression/pose directions; :mod:`.head_model` -- skinning,
  joints, masks and the FLAME pickles;
* :mod:`.appearance` -- procedural albedo, expression wrinkles, head-frame shading;
  :mod:`.noise` -- procedural noise; :mod:`.mesh_rasterizer` -- z-buffer rasterizer;
  :mod:`.gt_renderer` -- supersampled ground-truth images and mattes;
* :mod:`.cameras` -- the 16-camera rig; :mod:`.motion` -- FLAME parameter sequences;
  :mod:`.subject_writer` -- deterministic JSON/npz/PNG writing; :mod:`.dataset` -- orchestration;
  :mod:`.threads` -- single-threaded torch (fast on shared cores);
  :mod:`.preview` -- contact sheet.

    from synthetic import generate_dataset
    paths = generate_dataset("data/synthetic", seed=0)
    paths["subjects"]["s000"]["union"]   # the union subject folder to train on
"""
from .dataset import (DEFAULT_EVAL_TIMESTEPS, DEFAULT_TIMESTEPS, GENERATOR_VERSION, SyntheticSettingsError,
                      generate_dataset)

__all__ = ["generate_dataset", "DEFAULT_TIMESTEPS", "DEFAULT_EVAL_TIMESTEPS", "GENERATOR_VERSION", "SyntheticSettingsError"]
