"""Dataset image I/O: PNG loading, antialiased resizing and a byte-bounded LRU cache.

Conventions
-----------
* Colour images come back as ``(H, W, 3)`` float32 in [0, 1]. An image with an alpha channel is
  composited over a white background (the NeRSemble/GaussianAvatars export convention), at full
  resolution and *before* any resizing, so that resizing the composite equals compositing the
  resized premultiplied image.
* Masks (alpha mattes) come back as ``(H, W, 1)`` float32 in [0, 1].
* Resizing: downscaling uses PIL's ``BOX`` filter (exact area averaging, i.e. the pixel-coverage
  meaning of a matte, and no ringing); upscaling uses ``BICUBIC`` clipped to [0, 1]. Both run on
  float32 planes (PIL mode ``F``), so there is no intermediate 8-bit rounding before the final one.
* The cache stores ``uint8`` tensors (4x more frames per byte than float32; the source PNGs are
  8-bit anyway, so rounding the resized result adds at most 1/510 of error) and hands out a fresh
  float32 tensor on every hit, so callers can never corrupt a cached entry in place.

Errors a user can cause (missing or unreadable image file, image whose size disagrees with the
camera record) raise :class:`utils.errors.MissingFileError` / :class:`utils.errors.InputFileError`
naming the file.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Hashable, Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.atomic import atomic_write
from utils.errors import InputFileError, MissingFileError

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ImageCache",
    "image_size",
    "load_rgb_uint8",
    "load_mask_uint8",
    "read_rgb",
    "resize_float",
    "uint8_to_float",
]

#: Default budget of the per-subject image cache: 1 GiB (~800 full-resolution 550x802 RGB frames).
DEFAULT_CACHE_BYTES = 1 << 30

Size = Tuple[int, int]  # (width, height), PIL order


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _open(path: Path) -> Image.Image:
    """Open an image file lazily (header only), mapping I/O failures to user-facing errors."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image file not found: {path}")
    try:
        img = Image.open(path)
    except UnidentifiedImageError as e:
        raise InputFileError(f"{path}: not a readable image ({e}); re-export the file") from e
    except OSError as e:
        raise InputFileError(f"{path}: cannot open image ({e})") from e
    return img


def _load_pixels(img: Image.Image, path: Path) -> None:
    """Decode the pixel data now so truncated/corrupt files fail here with the file named."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise InputFileError(f"{path}: image data is corrupt or truncated ({e}); re-export the file") from e


def image_size(path: Path) -> Size:
    """Return ``(width, height)`` of an image file, reading only its header."""
    with _open(path) as img:
        return img.size


def check_image_header(path: Path, expected_size: Optional[Size] = None) -> None:
    """Read only the header of ``path``: raises the same errors as the loaders (missing file, not
    an image, wrong size) without decoding pixels (training's data pre-flight)."""
    with _open(path) as img:
        _check_size(img, Path(path), expected_size)


def _check_size(img: Image.Image, path: Path, expected_size: Optional[Size]) -> None:
    if expected_size is not None and tuple(img.size) != tuple(expected_size):
        raise InputFileError(
            f"{path}: image is {img.size[0]}x{img.size[1]} (w x h) but its camera record says "
            f"w={expected_size[0]}, h={expected_size[1]}; the intrinsics would not match the "
            f"pixels. Fix the JSON 'w'/'h' (and fl_x, fl_y, cx, cy) or re-export the image"
        )


def _to_float_array(img: Image.Image) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Decode any PIL image into (colour (H, W, C) float32 in [0, 1], alpha (H, W) or None).

    C is 1 for grey modes and 3 for colour modes. 16-bit grey PNGs (modes ``I;16*`` / ``I``) are
    divided by 65535; float images (``F``) are clipped to [0, 1].
    """
    mode = img.mode
    if mode in ("P", "PA"):
        # Palette images may carry transparency in the palette; RGBA makes it explicit.
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGB", "RGBA"):
        a = np.asarray(img, dtype=np.uint8)
        rgb = a[..., :3].astype(np.float32) / 255.0
        alpha = a[..., 3].astype(np.float32) / 255.0 if mode == "RGBA" else None
        return rgb, alpha
    if mode in ("L", "LA", "1"):
        a = np.asarray(img.convert("LA" if mode == "LA" else "L"), dtype=np.uint8)
        if mode == "LA":
            return a[..., :1].astype(np.float32) / 255.0, a[..., 1].astype(np.float32) / 255.0
        return a[..., None].astype(np.float32) / 255.0, None
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float32) / 65535.0
        return np.clip(a, 0.0, 1.0)[..., None], None
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None], None
    # CMYK, YCbCr, LAB, ...: let PIL convert to RGB.
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, None


def resize_float(arr: np.ndarray, size: Size) -> np.ndarray:
    """Resize an ``(H, W, C)`` float32 array to ``size = (new_w, new_h)`` -> ``(new_h, new_w, C)``.

    Downscaling (in either axis) uses ``BOX`` (area averaging: the correct antialiasing for
    pixel coverage, and no ringing); pure upscaling uses ``BICUBIC``. Output clipped to [0, 1].
    """
    h, w = arr.shape[:2]
    new_w, new_h = int(size[0]), int(size[1])
    if (new_w, new_h) == (w, h):
        return arr
    resample = Image.Resampling.BICUBIC if (new_w >= w and new_h >= h) else Image.Resampling.BOX
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c], dtype=np.float32)).resize((new_w, new_h), resample))
        for c in range(arr.shape[2])
    ]
    out = np.stack(planes, axis=-1).astype(np.float32, copy=False)
    return np.clip(out, 0.0, 1.0)


def to_uint8(arr) -> np.ndarray:
    """Float image in [0, 1] (numpy or torch) -> uint8, rounded to the nearest level."""
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def load_rgb_uint8(path: Path, size: Optional[Size] = None, expected_size: Optional[Size] = None) -> np.ndarray:
    """Load a colour image as ``(H, W, 3)`` uint8, composited over white, resized to ``size``.

    Args:
        path: image file (PNG, or anything PIL reads).
        size: ``(width, height)`` to resize to; ``None`` keeps the file's size.
        expected_size: ``(width, height)`` the file must have (checked before resizing).
    """
    path = Path(path)
    with _open(path) as img:
        _check_size(img, path, expected_size)
        _load_pixels(img, path)
        target = tuple(size) if size is not None else img.size
        # Fast path: plain 8-bit RGB at the native size needs no float round trip.
        if img.mode == "RGB" and tuple(target) == img.size:
            return np.array(img, dtype=np.uint8)
        colour, alpha = _to_float_array(img)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if alpha is not None:
        # Composite over white: rgb * a + 1 * (1 - a).
        colour = colour * alpha[..., None] + (1.0 - alpha[..., None])
    return to_uint8(resize_float(colour, target))


def load_mask_uint8(path: Path, size: Optional[Size] = None, expected_size: Optional[Size] = None) -> np.ndarray:
    """Load a foreground matte as ``(H, W, 1)`` uint8, resized to ``size`` (see :func:`load_rgb_uint8`).

    Which channel is the matte: a grey image is its own matte; an image with a non-opaque alpha
    channel uses the alpha (an RGBA cut-out); otherwise the max over colour channels (a white-on-
    black mask in RGB, whatever colour it was drawn in).
    """
    path = Path(path)
    with _open(path) as img:
        _check_size(img, path, expected_size)
        _load_pixels(img, path)
        target = tuple(size) if size is not None else img.size
        if img.mode == "L" and tuple(target) == img.size:
            return np.array(img, dtype=np.uint8)[..., None]
        colour, alpha = _to_float_array(img)
    if alpha is not None and float(alpha.min()) < 1.0:
        matte = alpha[..., None]
    else:
        matte = colour.max(axis=2, keepdims=True)
    return to_uint8(resize_float(matte, target))


def uint8_to_float(t: torch.Tensor) -> torch.Tensor:
    """``uint8`` tensor -> new float32 tensor in [0, 1] (never a view of the input)."""
    return t.to(torch.float32).div_(255.0)


def read_rgb(path: Path, size: Optional[Size] = None, expected_size: Optional[Size] = None) -> torch.Tensor:
    """Uncached colour image: ``(H, W, 3)`` float32 in [0, 1], composited over white."""
    return uint8_to_float(torch.from_numpy(load_rgb_uint8(path, size, expected_size)))


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
class ImageCache:
    """Least-recently-used cache of decoded images with a budget in bytes.

    Entries are ``uint8`` tensors; :meth:`get` returns a fresh float32 copy in [0, 1]. After every
    insertion the least recently used entries are evicted until ``current_bytes <= max_bytes``;
    an entry larger than the whole budget is returned but not kept. ``max_bytes = 0`` disables
    caching. Thread-safe (a lock guards the bookkeeping; decoding runs outside it). Pickling (e.g.
    into DataLoader workers) keeps the budget but drops the contents and the lock.

    Attributes:
        max_bytes: the budget.
        current_bytes: bytes held now (sum of ``numel * element_size`` of the entries).
        hits, misses, evictions: counters since creation (or :meth:`clear`).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError(f"image cache budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._init_state()

    def _init_state(self) -> None:
        self._entries: "OrderedDict[Hashable, torch.Tensor]" = OrderedDict()
        self._lock = threading.Lock()
        self.current_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __getstate__(self):
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.max_bytes = state["max_bytes"]
        self._init_state()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.current_bytes = 0
            self.hits = self.misses = self.evictions = 0

    def get_uint8(self, key: Hashable, loader: Callable[[], np.ndarray]) -> torch.Tensor:
        """Return the cached uint8 tensor for ``key``, calling ``loader()`` on a miss.

        The returned tensor is the cached object itself: do not modify it (use :meth:`get`).
        """
        with self._lock:
            t = self._entries.get(key)
            if t is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return t
            self.misses += 1
        # Decode outside the lock so that threads decode different images in parallel.
        t = torch.from_numpy(np.ascontiguousarray(loader()))
        nbytes = t.numel() * t.element_size()
        if nbytes > self.max_bytes:
            return t
        with self._lock:
            if key not in self._entries:
                self._entries[key] = t
                self.current_bytes += nbytes
                while self.current_bytes > self.max_bytes and self._entries:
                    _, old = self._entries.popitem(last=False)
                    self.current_bytes -= old.numel() * old.element_size()
                    self.evictions += 1
        return t

    def get(self, key: Hashable, loader: Callable[[], np.ndarray]) -> torch.Tensor:
        """Return a new float32 tensor in [0, 1] for ``key`` (``loader`` returns uint8 on a miss)."""
        return uint8_to_float(self.get_uint8(key, loader))

    def stats(self) -> dict:
        return {
            "entries": len(self._entries),
            "current_bytes": self.current_bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }


def write_png(path: Path, image, atomic: bool = False) -> None:
    """Save a float image in [0, 1] as an 8-bit PNG (creating folders).

    Args:
        image: (H, W, 3) colour or (H, W, 1) / (H, W) grey, torch tensor or numpy array.
        atomic: write a temporary file beside ``path`` and rename it over ``path``
            (:func:`utils.atomic.atomic_write`), so that a present file is always complete, even
            after a kill mid-write (render.py's outputs, which a resumed render keeps). The bytes
            are those of the plain write.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = to_uint8(np.asarray(image, dtype=np.float32))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(arr)  # uint8 (H, W) -> L, (H, W, 3) -> RGB
    if atomic:
        with atomic_write(path, "wb") as fh:
            picture.save(fh, format="PNG")
    else:
        picture.save(path, format="PNG")
