"""Which frames train, which are scored: the training/evaluation protocols.

- ``ga`` (GaussianAvatars, ``--eval``): train on the union's training sequences without the
  validation camera (camera 8); ``val`` = that camera on the training sequences (novel views);
  ``test`` = the union's held-out sequence, all cameras (self-reenactment).
- ``paper`` (the official code of the compact tensorial paper: "free performance sequences as the
  test set and other video segments as the training set"): train on every sequence of the union,
  the held-out one included, without the validation camera; ``val`` = the validation camera on all
  of them; ``test`` = the subject's FREE sequence (``<id>_FREE*`` beside the union folder), all
  cameras.
- ``none``: every frame of the union trains; nothing is held out.

The validation camera is whatever camera the union's ``transforms_val.json`` holds (camera 8 in
NeRSemble exports), so the rule is the export's own.
"""
from __future__ import annotations

from utils.errors import InputFileError

PROTOCOLS = ("ga", "paper", "none")


def protocol_splits(subject, protocol: str) -> dict:
    """{"train": [...], "val": [...], "test": [...]} CameraFrame lists of the union ``subject``
    under ``protocol``. For ``paper`` the test list is empty here: its test frames are another
    folder's (``utils.subject_ids.own_free_sequence`` of the union folder)."""
    if protocol not in PROTOCOLS:
        raise InputFileError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    train, val, test = (list(subject.frames[s]) for s in ("train", "val", "test"))
    if protocol == "none":
        return {"train": train + val + test, "val": [], "test": []}
    if protocol == "ga":
        return {"train": train, "val": val, "test": test}
    val_cameras = {f.camera_index for f in val}
    return {"train": train + [f for f in test if f.camera_index not in val_cameras],
            "val": val + [f for f in test if f.camera_index in val_cameras],
            "test": []}


def saved_protocol(extra: dict) -> str:
    """The protocol a model folder was trained under, from its ``config.yaml`` extras (runs saved
    before protocols were recorded carry only ``eval``: true meant ``ga``)."""
    return extra.get("protocol") or ("ga" if extra.get("eval") else "none")

