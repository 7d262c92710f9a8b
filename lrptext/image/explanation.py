"""An explanation of images that knows its pixels and label names, and shows itself in Jupyter: per image, the
input beside its heatmap (lrptext.image.heatmap, the colour maps of `lrptext explain-image`) with the colour
scale, as HTML with inline PNGs."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lrptext.engine import Explanation
from lrptext.image.heatmap import CMAPS, heatmap, to_rgb, upscale

MAX_IMAGES = 16
SIDE = 112  # pixels on screen, at least: 28x28 inputs are enlarged 4x, nearest neighbour


@dataclass
class ImageExplanation(Explanation):
    """An Explanation (relevance [N, C, H, W] in the normalised input space) with the images it explains, pixels in
    [0, 1] as given to ImageClassifier.explain, and the model's label names."""

    images: torch.Tensor | None = None
    labels: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        return images_html(self.relevance, self.prediction, self.target, self.contrast, images=self.images,
                           labels=self.labels)


def png_data_uri(rgb: Any) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colour_bar(cmap: str = "bwr") -> str:
    """The colour map as a CSS gradient from -1 to +1."""
    stops = ", ".join(f"rgb{colour} {50 * (position + 1):g}%" for position, colour in CMAPS[cmap])
    return f"background: linear-gradient(to right, {stops})"


def is_image_relevance(relevance: Any) -> bool:
    return isinstance(relevance, torch.Tensor) and relevance.dim() == 4 and relevance.is_floating_point()


def images_html(relevance: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor | None,
                contrast: torch.Tensor | None, *, images: torch.Tensor | None = None, labels: Sequence[str] = (),
                cmap: str = "bwr") -> str:
    """One row per image (the first MAX_IMAGES): input (where known), heatmap, and the prediction with its
    probability, the explained class (and contrast) and the relevance that the colour map's ends stand for."""
    if not is_image_relevance(relevance):
        raise ValueError(f"image relevance must be a float Tensor[N, C, H, W], got "
                         f"{getattr(relevance, 'shape', type(relevance).__name__)}")
    probabilities = prediction.detach().float().softmax(dim=1)

    def name(k: int) -> str:
        return html.escape(labels[k]) if k < len(labels) else f"class {k}"

    factor = max(1, math.ceil(SIDE / relevance.shape[-2]))
    rows = []
    for i in range(min(len(relevance), MAX_IMAGES)):
        heat = heatmap(relevance[i], cmap=cmap)
        scale = float(relevance[i].detach().double().sum(0).abs().max())
        tiles = ([("input", to_rgb(images[i]))] if images is not None else []) + [("relevance", heat)]
        cells = "".join(f'<td><img src="{png_data_uri(upscale(rgb, factor))}" alt="{alt} {i}" '
                        f'style="image-rendering: pixelated"></td>' for alt, rgb in tiles)
        predicted = int(probabilities[i].argmax())
        explained = predicted if target is None else int(target[i])
        against = "" if contrast is None else f" against {name(int(contrast[i]))}"
        rows.append(f"<tr><td>{i}</td>{cells}<td>prediction: <b>{name(predicted)}</b> "
                    f"({float(probabilities[i, predicted]):.3f})<br>explaining: <b>{name(explained)}</b>{against} "
                    f"({float(probabilities[i, explained]):.3f})<br>colour scale: ±{scale:.3g}</td></tr>")
    more = (f"<p>… and {len(relevance) - MAX_IMAGES} more images (index the explanation to see them)</p>"
            if len(relevance) > MAX_IMAGES else "")
    header = "<th>#</th>" + ("<th>input</th>" if images is not None else "") + "<th>relevance</th><th></th>"
    return ('<div class="lrptext-images" style="background: #fff; color: #111; padding: .5rem; border-radius: 6px">'
            '<div style="display: flex; align-items: center; gap: .5rem; font-size: .85rem">'
            f'<span>−scale (against)</span><span style="width: 12rem; height: .8rem; border: 1px solid #ccc; '
            f'{colour_bar(cmap)}"></span><span>+scale (for the explained class)</span></div>'
            f'<table style="color: #111">{header}\n' + "\n".join(rows) + f"</table>{more}</div>")
