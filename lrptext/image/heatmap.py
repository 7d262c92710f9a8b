"""Relevance as pictures: colour maps symmetric around zero, channel reduction, gamma and percentile clipping,
overlays on the input, grids, PNG output (Pillow). Zero relevance is always the colour map's centre.
Non-negative maps (Grad-CAM, CAM) have colour maps of their own, from 0 to their maximum (cam_heatmap)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Colour maps from -1 to +1 as (position, RGB) stops, interpolated linearly; each is centred at 0.
CMAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "bwr": [(-1.0, (0, 0, 255)), (0.0, (255, 255, 255)), (1.0, (255, 0, 0))],
    "seismic": [(-1.0, (0, 0, 77)), (-0.5, (0, 0, 255)), (0.0, (255, 255, 255)), (0.5, (255, 0, 0)),
                (1.0, (128, 0, 0))],
    "coldnhot": [(-1.0, (0, 255, 255)), (-0.5, (0, 0, 255)), (0.0, (0, 0, 0)), (0.5, (255, 0, 0)),
                 (1.0, (255, 255, 0))],
    "gray": [(-1.0, (0, 0, 0)), (0.0, (128, 128, 128)), (1.0, (255, 255, 255))],
}

# Colour maps from 0 to 1 for non-negative maps (Grad-CAM, CAM).
SEQUENTIAL_CMAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "hot": [(0.0, (80, 0, 0)), (0.4, (220, 0, 0)), (0.75, (255, 160, 0)), (1.0, (255, 240, 0))],
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
}


def _colour(v: np.ndarray, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    positions = np.array([p for p, _ in stops])
    colours = np.array([c for _, c in stops], dtype=np.float64)
    rgb = np.stack([np.interp(v, positions, colours[:, k]) for k in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _array(relevance: Any) -> np.ndarray:
    if hasattr(relevance, "detach"):
        relevance = relevance.detach().cpu().numpy()
    return np.asarray(relevance, dtype=np.float64)


def heatmap(relevance: Any, *, cmap: str = "bwr", reduce: str = "sum", gamma: float = 1.0,
            percentile: float | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] of relevance [H, W] or [C, H, W] (channels reduced by `reduce`: sum or absmax).

    Scaled symmetrically: the largest |relevance| (or its `percentile`, clipping beyond) maps to the ends of the
    colour map, zero to its centre; `gamma` < 1 brightens weak relevance (v -> sign(v)·|v|^gamma)."""
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {', '.join(CMAPS)}")
    r = _array(relevance)
    if r.ndim == 3:
        if reduce == "sum":
            r = r.sum(0)
        elif reduce == "absmax":
            r = np.take_along_axis(r, np.abs(r).argmax(0)[None], 0)[0]
        else:
            raise ValueError(f"'reduce' must be 'sum' or 'absmax', got {reduce!r}")
    if r.ndim != 2:
        raise ValueError(f"relevance must be [H, W] or [C, H, W], got shape {r.shape}")
    if not (gamma > 0):
        raise ValueError(f"'gamma' must be > 0, got {gamma}")
    scale = np.abs(r).max() if percentile is None else np.percentile(np.abs(r), percentile)
    v = np.clip(r / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(r)
    v = np.sign(v) * np.abs(v) ** gamma
    return _colour(v, CMAPS[cmap])


def cam_heatmap(values: Any, *, cmap: str = "hot", vmax: float | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a non-negative map [H, W] (Grad-CAM, CAM): 0 to the colour map's start, `vmax`
    (default the map's maximum) to its end; negative values (a CAM without ReLU) are clipped to 0."""
    if cmap not in SEQUENTIAL_CMAPS:
        raise ValueError(f"unknown colour map {cmap!r} for non-negative maps; choose one of "
                         f"{', '.join(SEQUENTIAL_CMAPS)}")
    m = _array(values)
    if m.ndim != 2:
        raise ValueError(f"a class activation map must be [H, W], got shape {m.shape}")
    top = float(m.max()) if vmax is None else float(vmax)
    v = np.clip(m / top, 0.0, 1.0) if top > 0 else np.zeros_like(m)
    return _colour(v, SEQUENTIAL_CMAPS[cmap])


def to_rgb(image: Any) -> np.ndarray:
    """An input image [H, W], [1, H, W] or [3, H, W] with pixels in [0, 1] as RGB uint8 [H, W, 3]."""
    a = _array(image)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)


def overlay(image: Any, heat: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """The heatmap blended over a grayscale version of the input."""
    base = to_rgb(image).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    return np.round((1 - alpha) * base + alpha * heat).astype(np.uint8)


def cam_overlay(image: Any, values: Any, *, cmap: str = "hot", alpha: float = 0.85) -> np.ndarray:
    """A non-negative map over a grayscale version of the input, its opacity growing with the value (alpha at the
    map's maximum, 0 at zero), so the input shows where the map is low."""
    m = _array(values)
    top = float(m.max())
    v = np.clip(m / top, 0.0, 1.0) if top > 0 else np.zeros_like(m)
    base = to_rgb(image).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    weight = alpha * v[..., None]
    return np.round((1 - weight) * base + weight * cam_heatmap(m, cmap=cmap)).astype(np.uint8)


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so that 28x28 pixels stay visible."""
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def grid(images: Sequence[np.ndarray], *, columns: int, pad: int = 4, background: int = 255) -> np.ndarray:
    """RGB images of one size tiled row by row."""
    if not images:
        raise ValueError("grid needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return out


def save_png(rgb: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    Image.fromarray(rgb, mode="RGB").save(Path(path), format="PNG")
