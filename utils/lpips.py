"""LPIPS perceptual distance (Zhang et al. 2018, "v0.1" linear heads) without torchvision.

``LPIPS(net='alex'|'vgg')`` holds the ImageNet feature stack (AlexNet taps relu1..relu5, VGG16
taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) and the five calibrated 1x1 linear heads, all
written here in plain PyTorch. ``forward(x, y, normalize=True)`` takes ``(B, 3, H, W)`` RGB in
``[0, 1]`` and returns ``(B,)`` distances:

    d(x, y) = sum_l mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 )

with inputs mapped to ``[-1, 1]`` (``2 x - 1``; only when ``normalize=True``) then standardised by
the scaling layer (shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``), channel-wise
unit normalisation (eps 1e-10 added to the norm), non-negative head weights ``w_l``, no bias. This
is what ``lpips.LPIPS(net=..., version='0.1')(x, y, normalize=...)`` computes with the same
``normalize`` (verified by tests/test_lpips_reference.py to 1e-5). ``normalize=False`` feeds the
``[0, 1]`` images to the scaling layer as they are, which is what 3D Gaussian Splatting's and
GaussianAvatars' ``metrics.py`` do (their LPIPS expects ``[-1, 1]`` but is given ``[0, 1]``);
evaluate.py's ``gaussian-avatars`` metric set uses it to stay comparable with published tables.

Weights are not downloaded at run time. ``python scripts/fetch_lpips_weights.py`` (once) converts
the published weights into torch state dicts in ``lpips_cache_dir()``:
``${AVATAR_CACHE_DIR:-<repo>/.cache}/lpips/{alex,vgg}.pth``. Every load checks the SHA-256
content digest of the state dict (:func:`state_dict_digest`) against :data:`WEIGHT_SHA256`, so a
corrupted or foreign cache file is reported instead of silently giving wrong numbers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.cache_dir import cache_root
from utils.errors import InputFileError, MissingFileError

__all__ = [
    "LPIPS", "AlexNetFeatures", "VGG16Features", "ScalingLayer", "lpips_cache_dir",
    "lpips_weights_path", "state_dict_digest", "WEIGHT_SHA256", "NETS", "FETCH_HINT",
]

NETS = ("alex", "vgg")
FETCH_HINT = "run `python scripts/fetch_lpips_weights.py` once to fetch and convert them"

# SHA-256 content digests (see state_dict_digest) of the converted state dicts. They depend only
# on the tensors, not on torch's serialisation format, so they hold for any torch version.
WEIGHT_SHA256 = {
    "alex": "7a9d70f8216a559d565a1486341942c8e0e3f26750db660de255430ebc6d2548",
    "vgg": "f8c50ae029c8f1835ca516f649e3f01e1cdd7b65ca85875efcebca3891d6306b",
}

_NET_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}


def lpips_cache_dir() -> Path:
    """``$AVATAR_CACHE_DIR/lpips`` if the variable is set, else ``<repo>/.cache/lpips``."""
    return cache_root() / "lpips"


def lpips_weights_path(net: str) -> Path:
    return lpips_cache_dir() / f"{_canonical_net(net)}.pth"


def _canonical_net(net: str) -> str:
    try:
        return _NET_ALIASES[str(net).lower()]
    except KeyError:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}") from None


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys, dtypes, shapes and little-endian raw bytes of the tensors."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        arr = t.numpy()
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


class ScalingLayer(nn.Module):
    """Per-channel standardisation of ``[-1, 1]`` inputs used by LPIPS v0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class AlexNetFeatures(nn.Module):
    """AlexNet convolutional trunk (torchvision layout); returns relu1..relu5 activations."""

    channels = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r1 = F.relu(self.conv1(x))
        r2 = F.relu(self.conv2(F.max_pool2d(r1, kernel_size=3, stride=2)))
        r3 = F.relu(self.conv3(F.max_pool2d(r2, kernel_size=3, stride=2)))
        r4 = F.relu(self.conv4(r3))
        r5 = F.relu(self.conv5(r4))
        return [r1, r2, r3, r4, r5]


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk; returns relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

    channels = (64, 128, 256, 512, 512)
    # Output channels of the 13 3x3 convolutions, grouped by stage (2x2 max-pool between stages).
    _stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

    def __init__(self) -> None:
        super().__init__()
        convs = []
        c_in = 3
        for stage in self._stages:
            for c_out in stage:
                convs.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
                c_in = c_out
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        i = 0
        for s, stage in enumerate(self._stages):
            if s > 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            for _ in stage:
                x = F.relu(self.convs[i](x))
                i += 1
            taps.append(x)
        return taps


def _unit_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS distance with pretrained AlexNet or VGG16 features and v0.1 linear heads.

    ``LPIPS(net='alex'|'vgg', weights_path=None, verify=True, pretrained=True)``;
    ``weights_path`` defaults to :func:`lpips_weights_path`, ``verify`` checks
    :data:`WEIGHT_SHA256`, ``pretrained=False`` keeps random weights (for the conversion script
    and tests; never for scoring). Raises
    :class:`~utils.errors.MissingFileError` when the weights have not been fetched, and
    :class:`~utils.errors.InputFileError` when the file is unreadable or fails the checksum.
    Parameters are frozen and the module is in eval mode; gradients still flow to the inputs.
    """

    def __init__(self, net: str = "alex", weights_path: str | os.PathLike | None = None,
                 verify: bool = True, pretrained: bool = True) -> None:
        super().__init__()
        self.net_name = _canonical_net(net)
        self.scaling_layer = ScalingLayer()
        self.net = AlexNetFeatures() if self.net_name == "alex" else VGG16Features()
        self.lins = nn.ModuleList(
            nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.net.channels
        )
        if pretrained:
            path = Path(weights_path) if weights_path is not None else lpips_weights_path(net)
            self.load_state_dict(load_lpips_state_dict(self.net_name, path, verify=verify))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Distances ``(B,)`` between ``(B, 3, H, W)`` images with values in ``[0, 1]``.

        ``normalize=True`` maps the inputs to ``[-1, 1]`` (``2 x - 1``) first, the LPIPS
        convention; ``False`` feeds them to the scaling layer unchanged (3DGS/GaussianAvatars).
        """
        return self.reduce(self.layer_maps(x, y, normalize))

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = True) -> list[torch.Tensor]:
        """The per-layer distance maps ``w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2``: one
        ``(B, 1, h_l, w_l)`` tensor per tapped layer, at that layer's resolution. ``forward`` is
        :meth:`reduce` of them; evaluate.py averages them over image regions instead."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS expects two (B, 3, H, W) tensors of equal shape, got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        b = x.shape[0]
        both = torch.cat([x, y], dim=0).to(self.lins[0].weight.dtype)
        if normalize:
            both = both * 2.0 - 1.0
        feats = self.net(self.scaling_layer(both))
        maps = []
        for feat, lin in zip(feats, self.lins):
            f = _unit_normalize(feat)
            maps.append(lin((f[:b] - f[b:]).pow(2)))
        return maps

    @staticmethod
    def reduce(maps: list[torch.Tensor]) -> torch.Tensor:
        """``(B,)`` LPIPS distances from :meth:`layer_maps`: the sum over layers of each map's mean."""
        total = None
        for m in maps:
            d = m.mean(dim=(2, 3)).squeeze(1)
            total = d if total is None else total + d
        return total


def load_lpips_state_dict(net: str, path: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load a converted LPIPS state dict and check its content digest."""
    net = _canonical_net(net)
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"LPIPS weights '{net}' not found at {path}: {FETCH_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        raise InputFileError(
            f"LPIPS weights file {path} is unreadable ({type(exc).__name__}): delete it and "
            f"{FETCH_HINT}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(f"LPIPS weights file {path} is not a state dict: delete it and "
                             f"{FETCH_HINT}")
    if verify:
        digest = state_dict_digest(state)
        if digest != WEIGHT_SHA256[net]:
            raise InputFileError(
                f"LPIPS weights file {path} fails its SHA-256 check (got {digest[:12]}..., "
                f"expected {WEIGHT_SHA256[net][:12]}...): delete it and {FETCH_HINT}"
            )
    return state
