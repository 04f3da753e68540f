"""Smooth FLAME parameter sequences: random keyframes interpolated with Catmull-Rom splines.

Every sequence starts close to neutral (like a NeRSemble take) and then moves through
expressions: the meaningful expression components (brow raise, smile, ...) switch on with visible
magnitudes, the random components wiggle a little, the jaw opens up to ~0.35 rad, the eyes look
around, the neck and the head turn by up to ~0.15 / ~0.2 rad and the head shifts by a few mm.

Styles: ``"train"`` sequences emphasise a subset of components in turn (brows/eyes, mouth/jaw,
everything), ``"test"`` draws from the same distribution without emphasis, ``"free"`` is broader
(larger ranges, faster changes, more components at once), like NeRSemble's FREE take.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blendshapes import (BLINK, BROW_FURROW, BROW_RAISE, CHEEK_PUFF, EXPRESSION_NAMES, LIP_PUCKER, LIP_RAISE,
                          MOUTH_FROWN, SMILE)

__all__ = ["FlameSequence", "make_sequence", "add_tracking_noise", "TRAIN_FOCUS"]

N_MEANINGFUL = len(EXPRESSION_NAMES)
# Upper bound of each meaningful component when active (blink saturates at a closed lid).
_ACTIVE_MAX = {BROW_RAISE: 2.0, SMILE: 2.0, BROW_FURROW: 1.8, LIP_PUCKER: 1.5, BLINK: 1.05, CHEEK_PUFF: 1.5,
               MOUTH_FROWN: 1.5, LIP_RAISE: 1.5}
# Training sequences cycle through these emphases (NeRSemble's EXP takes each focus on a theme).
TRAIN_FOCUS = ((BROW_RAISE, BROW_FURROW, BLINK), (SMILE, LIP_PUCKER, CHEEK_PUFF, MOUTH_FROWN, LIP_RAISE), None)


@dataclass
class FlameSequence:
    """Per-timestep FLAME parameters of one sequence (T timesteps), float64.

    Attributes:
        translation (T, 3), rotation (T, 3), neck_pose (T, 3), jaw_pose (T, 3), eyes_pose (T, 6),
        expr (T, 100).
    """

    translation: np.ndarray
    rotation: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eyes_pose: np.ndarray
    expr: np.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.expr.shape[0])

    def fields(self) -> dict:
        return {"translation": self.translation, "rotation": self.rotation, "neck_pose": self.neck_pose,
                "jaw_pose": self.jaw_pose, "eyes_pose": self.eyes_pose, "expr": self.expr}

    def slice(self, start: int, stop: int) -> "FlameSequence":
        """Timesteps ``start`` .. ``stop - 1`` of the sequence."""
        return FlameSequence(**{name: arr[start:stop] for name, arr in self.fields().items()})


def _catmull_rom(keys: np.ndarray, num: int) -> np.ndarray:
    """Interpolate K keyframes (K, D), spread evenly over ``num`` timesteps, with Catmull-Rom.

    Returns:
        (num, D) smooth curve passing through the keys.
    """
    k = keys.shape[0]
    if num == 1:
        return keys[:1].copy()
    s = np.linspace(0.0, k - 1, num)
    i = np.clip(np.floor(s).astype(int), 0, k - 2)
    t = (s - i)[:, None]
    p0, p1 = keys[np.maximum(i - 1, 0)], keys[i]
    p2, p3 = keys[i + 1], keys[np.minimum(i + 2, k - 1)]
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)


def make_sequence(rng: np.random.Generator, num_timesteps: int, style: str = "train", focus=None,
                  n_expr: int = 100) -> FlameSequence:
    """Draw one smooth sequence.

    Args:
        rng: random generator (the sequence is a deterministic function of its state).
        num_timesteps: T.
        style: "train", "test" or "free".
        focus: for "train", expression components to emphasise (None = all alike).
        n_expr: expression components.

    Returns:
        :class:`FlameSequence`.
    """
    free = style == "free"
    spacing = 3.0 if free else 4.0
    n_keys = max(2, int(np.ceil((num_timesteps - 1) / spacing)) + 1)
    scale = 1.25 if free else 1.0

    expr = np.zeros((n_keys, n_expr))
    for k in range(N_MEANINGFUL):
        if focus is not None:
            p_active = 0.55 if k in focus else 0.12
        else:
            p_active = 0.45 if free else 0.3
        active = rng.random(n_keys) < p_active
        hi = _ACTIVE_MAX[k] * (1.2 if free and k != BLINK else 1.0)
        expr[:, k] = np.where(active, rng.uniform(0.35 * hi, hi, n_keys), rng.normal(0.0, 0.12, n_keys))
    expr[:, N_MEANINGFUL:] = rng.normal(0.0, 0.45 * scale, (n_keys, n_expr - N_MEANINGFUL))
    jaw = np.zeros((n_keys, 3))
    jaw_open = rng.random(n_keys) < (0.55 if free or (focus is not None and SMILE in focus) else 0.4)
    jaw[:, 0] = np.where(jaw_open, rng.uniform(0.08, 0.40 if free else 0.35, n_keys), rng.uniform(0.0, 0.03, n_keys))
    jaw[:, 1:] = rng.normal(0.0, 0.015, (n_keys, 2))
    gaze = np.stack([rng.uniform(-0.20, 0.15, n_keys), rng.uniform(-0.30, 0.30, n_keys) * scale,
                     np.zeros(n_keys)], -1)
    eyes = np.concatenate([gaze, gaze + rng.normal(0.0, 0.01, (n_keys, 3)) * [1, 1, 0]], -1)
    neck = np.clip(rng.normal(0.0, 0.07 * scale, (n_keys, 3)) * [1.0, 1.0, 0.5], -0.15 * scale, 0.15 * scale)
    rotation = np.stack([rng.uniform(-0.12, 0.12, n_keys), rng.uniform(-0.2, 0.2, n_keys),
                         rng.uniform(-0.06, 0.06, n_keys)], -1) * scale
    translation = np.clip(rng.normal(0.0, 0.005, (n_keys, 3)), -0.015, 0.015)

    # The take starts near neutral.
    for arr in (expr, jaw, eyes, neck, rotation, translation):
        arr[0] *= 0.15

    curves = {name: _catmull_rom(arr, num_timesteps) for name, arr in
              (("expr", expr), ("jaw", jaw), ("eyes", eyes), ("neck", neck), ("rot", rotation),
               ("trans", translation))}
    curves["jaw"][:, 0] = np.clip(curves["jaw"][:, 0], 0.0, 0.45)   # the jaw does not close past rest
    curves["expr"][:, BLINK] = np.clip(curves["expr"][:, BLINK], -0.3, 1.1)
    return FlameSequence(translation=curves["trans"], rotation=curves["rot"], neck_pose=curves["neck"],
                         jaw_pose=curves["jaw"], eyes_pose=curves["eyes"], expr=curves["expr"])


def add_tracking_noise(seq: FlameSequence, sigma: float, rng: np.random.Generator) -> FlameSequence:
    """Simulated tracking error for the *written* parameters (images use the clean ones).

    Poses get N(0, sigma) radians, translation N(0, 0.1 sigma) metres, expression N(0, 10 sigma).
    """
    if sigma <= 0:
        return seq
    noisy = {}
    for name, arr in seq.fields().items():
        std = {"translation": 0.1 * sigma, "expr": 10.0 * sigma}.get(name, sigma)
        noisy[name] = arr + rng.normal(0.0, std, arr.shape)
    return FlameSequence(**noisy)
