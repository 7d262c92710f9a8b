"""Image files as model input: pixels in [0, 1], refused (never converted or resized) when they do not match the
model."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

KINDS = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}


def read_image(source: str | Path | BinaryIO, channels: int, size: int, *, name: str | None = None) -> np.ndarray:
    """A PNG (or any format Pillow reads) as float32 pixels in [0, 1], [channels, H, W]. `name` is how messages call
    the image (default: the path). The size is checked before the pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    name = name or str(source)
    try:
        with Image.open(source) as image:
            mode = image.mode
            if mode in ("L", "I;16", "I", "F"):
                found = 1
            elif mode in ("RGB", "RGBA", "P"):
                found = 3
            else:
                raise ValueError(f"{name}: unsupported image mode {mode!r}; save it as grayscale (L) or RGB")
            if found != channels:
                raise ValueError(f"{name} is {KINDS[found]} but the model takes {KINDS[channels]} images; convert it "
                                 f"first (e.g. PIL Image.convert('{'L' if channels == 1 else 'RGB'}'))")
            if image.size != (size, size):
                raise ValueError(f"{name} is {image.size[0]}x{image.size[1]} pixels but the model takes "
                                 f"{size}x{size}; lrptext does not resize (it would change what the model sees): "
                                 "resize it yourself")
            image.load()
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        detail = str(error).replace(repr(source), name)  # Pillow names a file object by its repr
        raise ValueError(f"{name} is not a readable image (corrupt, truncated or not an image): {detail}") from None
    return array[None] if channels == 1 else np.moveaxis(array, -1, 0)
