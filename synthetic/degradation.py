"""Video-like degradation of the rendered images: optical blur and lossy compression.

Real captures are not the renderer's perfect anti-aliased pixels: the lens and sensor blur them a
little (a point spreads over about a pixel at NeRSemble's resolution) and the frames come out of a
video codec or a JPEG-compressed export, which drops fine high-frequency detail and adds 8x8 block
artefacts. Both cost every method the same high frequencies the ground truth no longer has, so
they change the gap between a model that fits fine detail and one that cannot only through what
is really there to fit. Applied to the colour images only; the alpha mattes stay exact (a
capture's matting comes from its own segmentation, not from the compressed frames).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from utils.image_io import to_uint8

__all__ = ["degrade"]


def degrade(images: np.ndarray, blur_sigma: float = 0.0, jpeg_quality: int = 0) -> np.ndarray:
    """Blur and compress every image of a batch.

    Args:
        images: (C, H, W, 3) float RGB in [0, 1] (one timestep's cameras).
        blur_sigma: standard deviation of the Gaussian blur in pixels of these images (0: none).
        jpeg_quality: JPEG quality 1..95 of a compress/decompress round trip (0: none).
    Returns:
        (C, H, W, 3) float32 in [0, 1]; the input itself when both are off.
    """
    if blur_sigma <= 0 and jpeg_quality <= 0:
        return images
    out = np.empty(images.shape, dtype=np.float32)
    for c in range(images.shape[0]):
        img = Image.fromarray(to_uint8(np.asarray(images[c], dtype=np.float32)))
        if blur_sigma > 0:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(blur_sigma)))
        if jpeg_quality > 0:
            buffer = io.BytesIO()
            # 4:2:0 chroma subsampling, as video codecs store colour.
            img.save(buffer, format="JPEG", quality=int(jpeg_quality), subsampling=2)
            img = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        out[c] = np.asarray(img, dtype=np.float32) / 255.0
    return out
