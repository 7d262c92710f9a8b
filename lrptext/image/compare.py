"""LRP composites and class activation maps side by side: one row per image (the input, then one heatmap per
composite, then one per method), each column titled, one colour legend below.

LRP heatmaps are signed and drawn symmetric around zero (each map scaled to its own largest |R|); Grad-CAM and CAM
maps are non-negative and drawn on their own scale, 0 to each map's maximum, over a grayscale copy of the input
(opaque where the map is high, transparent where it is 0).
Text is drawn with Pillow's default font."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lrptext.image.cam import METHODS as CAM_METHODS
from lrptext.image.classifier import ImageClassifier, composite_names
from lrptext.image.heatmap import CMAPS, cam_heatmap, cam_overlay, heatmap, to_rgb, upscale

DEFAULT_COMPOSITES = ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat")
TITLES = {"gradcam": "Grad-CAM", "cam": "CAM", "lrp0": "LRP-0", "input": "input"}
PAD = 4


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_width(draw: Any, text: str, font: Any) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """Lines of at most `width` pixels, broken after '_' or at spaces."""
    words, lines, line = text.replace("_", "_\u0000").replace(" ", " \u0000").split("\u0000"), [], ""
    for word in words:
        if line and _text_width(draw, line + word, font) > width:
            lines.append(line.rstrip())
            line = word
        else:
            line += word
    return lines + [line.rstrip()] if line else lines


def _bar(stops_of: str, width: int, height: int) -> np.ndarray:
    if stops_of in CMAPS:
        return heatmap(np.repeat(np.linspace(-1.0, 1.0, width)[None], height, axis=0), cmap=stops_of)
    return cam_heatmap(np.repeat(np.linspace(0.0, 1.0, width)[None], height, axis=0), cmap=stops_of)


def render(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], *, captions: Sequence[str] = (),
           legends: Sequence[tuple[str, str, tuple[str, str, str]]] = (), font_size: int = 13) -> np.ndarray:
    """RGB uint8 figure: a title over each column, rows of equally sized tiles with an optional caption under each
    row's first tile, then one legend line per (title, colour map, (left, middle, right) labels)."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    h, w = rows[0][0].shape[:2]
    columns = len(titles)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(probe, t, font, w) for t in titles]
    line = font_size + 4
    top = PAD + line * max(len(t) for t in wrapped)
    caption = line if captions else 0
    bar_w, bar_h = min(260, columns * (w + PAD) // 2), 12
    legend = len(legends) * (line + bar_h + line + PAD)
    width = columns * (w + PAD) + PAD
    height = top + len(rows) * (h + caption + PAD) + PAD + legend
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(wrapped):
        x0 = PAD + c * (w + PAD)
        for k, text in enumerate(lines):
            y = top - line * (len(lines) - k)
            draw.text((x0 + (w - _text_width(draw, text, font)) // 2, y), text, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        if len(row) != columns:
            raise ValueError(f"row {r} has {len(row)} tiles for {columns} titles")
        y0 = top + r * (h + caption + PAD)
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile, mode="RGB"), (PAD + c * (w + PAD), y0))
        if captions:
            draw.text((PAD, y0 + h + 2), captions[r], fill=(0, 0, 0), font=font)
    y = top + len(rows) * (h + caption + PAD) + PAD
    for title, cmap, (left, middle, right) in legends:
        draw.text((PAD, y), title, fill=(0, 0, 0), font=font)
        y += line
        x = PAD + _text_width(draw, left, font) + PAD
        draw.text((PAD, y - 2), left, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(_bar(cmap, bar_w, bar_h), mode="RGB"), (x, y))
        draw.text((x + bar_w + PAD, y - 2), right, fill=(0, 0, 0), font=font)
        if middle:
            draw.text((x + (bar_w - _text_width(draw, middle, font)) // 2, y + bar_h), middle, fill=(0, 0, 0),
                      font=font)
        y += bar_h + line + PAD
    return np.asarray(canvas).copy()


def title(name: str) -> str:
    """A column's title: the composite's name, or the method's."""
    return TITLES.get(name, name)


def compare(classifier: ImageClassifier, images: Any, *, composites: Sequence[str] = DEFAULT_COMPOSITES,
            methods: Sequence[str] = ("gradcam",), target: Any = None, cmap: str = "bwr", cam_cmap: str = "hot",
            gamma: float = 1.0, percentile: float | None = None, layer: str | None = None,
            scale: int | None = None, alpha: float = 0.85) -> tuple[np.ndarray, dict[str, Any]]:
    """(figure RGB uint8 [H, W, 3], explanations by column name) for images with pixels in [0, 1] [N, C, H, W].

    composites: LRP presets (names of lrptext.rules.COMPOSITES, or "lrp0"); methods: "gradcam", "cam". Every
    column explains the same class per image (target None: the class the model predicts). scale: tile
    enlargement (default: tiles of about 224 pixels); gamma, percentile: as heatmap(); alpha: the class
    activation maps' opacity over the input at their maximum (cam_overlay). Save the figure with save_png."""
    unknown = [c for c in composites if c not in composite_names()]
    if unknown:
        raise ValueError(f"unknown composite(s) {', '.join(unknown)}; choose from {', '.join(composite_names())}")
    unknown = [m for m in methods if m not in CAM_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(CAM_METHODS)}")
    if not composites and not methods:
        raise ValueError("compare needs at least one composite or method")
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {', '.join(CMAPS)}")
    pixels = torch.as_tensor(np.asarray(images, dtype=np.float32)) if not isinstance(images, torch.Tensor) \
        else images.float()
    if pixels.dim() == 3:
        pixels = pixels[None]
    target = classifier.target_index(target)
    explanations: dict[str, Any] = {}
    for name in composites:
        explanations[name] = classifier.explain(pixels, composite=name, target=target)
    for name in methods:
        explanations[name] = classifier.explain_cam(pixels, method=name, target=target,
                                                    layer=layer if name == "gradcam" else None)
    first = next(iter(explanations.values()))
    probs = first.prediction.softmax(dim=1)
    factor = scale or max(1, 224 // classifier.size)
    rows, captions = [], []
    for i in range(pixels.shape[0]):
        row = [upscale(to_rgb(pixels[i]), factor)]
        row += [upscale(heatmap(explanations[n].relevance[i], cmap=cmap, gamma=gamma, percentile=percentile),
                        factor) for n in composites]
        row += [upscale(cam_overlay(pixels[i], explanations[n].maps[i], cmap=cam_cmap, alpha=alpha), factor)
                for n in methods]
        rows.append(row)
        predicted, explained = int(probs[i].argmax()), int(first.target[i])
        text = f"{classifier.labels[predicted]} ({float(probs[i, predicted]):.2f})"
        captions.append(text if explained == predicted else f"{text}; explaining {classifier.labels[explained]}")
    legends = []
    if composites:
        legends.append(("LRP composites: red for the explained class, blue against; each map scaled to its largest |R|",
                        cmap, ("-max |R|", "0", "+max |R|")))
    if methods:
        legends.append((f"{' and '.join(title(m) for m in methods)}: non-negative, 0 to each map's maximum, "
                        "over the input, more opaque where higher (upsampled bilinearly)", cam_cmap,
                        ("0", "", "max")))
    figure = render(rows, ["input"] + [title(n) for n in [*composites, *methods]], captions=captions,
                    legends=legends)
    return figure, explanations


__all__ = ["DEFAULT_COMPOSITES", "compare", "render", "title"]
