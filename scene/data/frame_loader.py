"""Ground-truth images for the training step, decoded ahead of time on background threads.

The training step must not wait for a PNG decode (about 10 ms for a 550x802 NeRSemble image) nor
for a synchronous host-to-device copy. The trainer knows which frames come next: its sampler is
deterministic, so a look-ahead copy of it names the upcoming frames exactly. This loader decodes
those on worker threads (PIL releases the GIL while decoding), keeps them as uint8 in pinned host
memory on CUDA, and copies them with ``non_blocking=True``; the float conversion runs on the device.

An optional device-resident uint8 cache under a byte budget keeps images on the GPU once seen
(real subjects hold tens of thousands of ~1.3 MB images: a budget, not "all of them").

The images are exactly those of :meth:`scene.data.subject.Subject.load_image` (same decode, same
``uint8 -> float32 / 255``), whichever path served them.
"""
from __future__ import annotations

import copy
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import torch


class DeviceImageCache:
    """LRU cache of uint8 images on one device under a byte budget (0 disables it)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"device image cache budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.current_bytes = 0
        self._entries: "OrderedDict[int, torch.Tensor]" = OrderedDict()

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: int) -> Optional[torch.Tensor]:
        t = self._entries.get(key)
        if t is not None:
            self._entries.move_to_end(key)
        return t

    def put(self, key: int, image: torch.Tensor) -> None:
        nbytes = image.numel() * image.element_size()
        if nbytes > self.max_bytes or key in self._entries:
            return
        self._entries[key] = image
        self.current_bytes += nbytes
        while self.current_bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.current_bytes -= old.numel() * old.element_size()


class GroundTruthLoader:
    """Training images by frame index, prefetched along the sampler's future draws.

    Args:
        load_uint8: ``index -> (H, W, 3) uint8`` CPU tensor (the subject's decode + host cache);
            must not be modified by the caller, so pinning copies it.
        device: where images are wanted.
        lookahead: an object with ``next() -> int`` drawing the same sequence the trainer will
            ask for (a deep copy of the trainer's sampler); None disables prefetching.
        depth: how many future frames are decoded ahead.
        workers: decoding threads (0: decode synchronously in :meth:`get`).
        device_cache_bytes: budget of the device-resident uint8 cache (0: none).
    """

    def __init__(self, load_uint8: Callable[[int], torch.Tensor], device: torch.device, lookahead=None,
                 depth: int = 8, workers: int = 2, device_cache_bytes: int = 0):
        self.load_uint8 = load_uint8
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.depth = max(int(depth), 0) if workers > 0 and lookahead is not None else 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gt-decode") if self.depth else None
        self._lookahead = lookahead
        self._queue: "deque[tuple[int, Future | torch.Tensor]]" = deque()
        self.device_cache = DeviceImageCache(device_cache_bytes)
        self.prefetched = self.synchronous = 0
        self._fill()

    @classmethod
    def for_sampler(cls, load_uint8, device, sampler, **kwargs) -> "GroundTruthLoader":
        """A loader whose look-ahead is a copy of ``sampler`` in its current state."""
        return cls(load_uint8, device, lookahead=copy.deepcopy(sampler), **kwargs)

    def _host_image(self, index: int) -> torch.Tensor:
        image = self.load_uint8(index)
        return image.pin_memory() if self.pin else image

    def _fill(self) -> None:
        while self._pool is not None and len(self._queue) < self.depth:
            index = int(self._lookahead.next())
            # A frame already on the device is held by reference (it may leave the cache before
            # its turn comes); any other is decoded on a worker thread.
            on_device = self.device_cache.get(index)
            pending = on_device if on_device is not None else self._pool.submit(self._host_image, index)
            self._queue.append((index, pending))

    def get(self, index: int) -> torch.Tensor:
        """(H, W, 3) float32 in [0, 1] on the device: frame ``index``'s ground truth."""
        host = image = None
        if self._queue and self._queue[0][0] == index:
            _, pending = self._queue.popleft()
            if isinstance(pending, Future):
                host = pending.result()
            else:
                image = pending
            self.prefetched += 1
        elif self._queue:
            # The trainer drew something else than the look-ahead predicted: it was not a copy of
            # the sampler. Serve this frame directly and stop guessing.
            self.close()
        if image is None:
            image = self.device_cache.get(index)
        if image is None:
            if host is None:
                host = self._host_image(index)
                self.synchronous += 1
            image = host.to(self.device, non_blocking=True)
            self.device_cache.put(index, image)
        self._fill()
        return image.to(torch.float32).div_(255.0)

    def close(self) -> None:
        """Stop prefetching (pending decodes finish in the background and are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        self._queue.clear()

    def stats(self) -> dict:
        return {"prefetched": self.prefetched, "synchronous": self.synchronous,
                "device_cache_entries": len(self.device_cache), "device_cache_bytes": self.device_cache.current_bytes}


def frame_loader_for(subject, frames: Sequence, device, sampler, depth: int, workers: int,
                     device_cache_bytes: int) -> GroundTruthLoader:
    """A :class:`GroundTruthLoader` over ``frames`` of ``subject`` following ``sampler``."""
    return GroundTruthLoader.for_sampler(lambda i: subject.load_image_uint8(frames[i]), device, sampler,
                                         depth=depth, workers=workers, device_cache_bytes=device_cache_bytes)
