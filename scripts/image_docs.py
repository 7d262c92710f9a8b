"""Regenerates docs/fashion-heatmaps.png: the bundled Fashion-MNIST CNN explained on test images with three
composites (a row per image: input, then the heatmap of each composite).

    python scripts/image_docs.py      # needs: lrptext data fetch fashion-mnist
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrptext.datasets.images import load_images
from lrptext.image import ImageClassifier, grid, heatmap, save_png, to_rgb, upscale

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")


def main() -> None:
    classifier = ImageClassifier.load("default")
    data = load_images("fashion-mnist")
    picks = [int(np.flatnonzero(data.test_labels == label)[0]) for label in (0, 1, 7, 8, 9, 5)]
    images = data.test_images[picks]
    tiles = []
    explanations = {name: classifier.explain(images, composite=name) for name in COMPOSITES}
    for i in range(len(picks)):
        tiles.append(upscale(to_rgb(images[i]), 6))
        tiles += [upscale(heatmap(explanations[name].relevance[i], cmap="bwr"), 6) for name in COMPOSITES]
    save_png(grid(tiles, columns=1 + len(COMPOSITES)), DOCS / "fashion-heatmaps.png")
    for i, p in enumerate(picks):
        e = explanations[COMPOSITES[1]]
        print(data.label_names[data.test_labels[p]], "->", classifier.labels[int(e.target[i])])


if __name__ == "__main__":
    main()
