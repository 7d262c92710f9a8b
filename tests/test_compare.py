"""LRP composites beside Grad-CAM in one figure: lrptext.image.compare and `lrptext explain-image --methods`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lrptext.cli import main
from lrptext.image import ImageClassifier, cam_heatmap, cam_overlay, compare
from lrptext.image.compare import PAD

FOUR = ["epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"]


@pytest.fixture(scope="module")
def boot(tmp_path_factory):
    """A test-split-like image: the bundled model's own prediction is what is explained."""
    path = tmp_path_factory.mktemp("images") / "boot.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[14:24, 4:24] = 200  # a sole
    pixels[6:14, 14:22] = 160  # a shaft
    Image.fromarray(pixels, mode="L").save(path)
    return path


def test_cam_heatmaps_run_from_zero_to_the_maximum():
    rgb = cam_heatmap(np.array([[0.0, 2.0, 4.0, -1.0]]))
    assert rgb[0, 0].tolist() == rgb[0, 3].tolist() == [80, 0, 0]  # zero, and clipped negatives
    assert rgb[0, 2].tolist() == [255, 240, 0]
    assert (cam_heatmap(np.zeros((2, 2))) == [80, 0, 0]).all()
    image = np.full((1, 1, 3), 0.5)
    over = cam_overlay(image, np.array([[0.0, 1.0, 2.0]]), alpha=0.5)
    assert over[0, 0].tolist() == [128, 128, 128]  # the input where the map is 0
    assert over[0, 2].tolist() == [192, 184, 64]  # half the colour of the maximum at alpha 0.5
    with pytest.raises(ValueError, match="unknown colour map 'bwr' for non-negative maps"):
        cam_heatmap(np.ones((2, 2)), cmap="bwr")


def test_compare_returns_the_figure_and_every_explanation():
    classifier = ImageClassifier.load("default")
    images = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    figure, explanations = compare(classifier, images, composites=["epsilon", "lrp0"], methods=["gradcam"],
                                   target="Bag", scale=2)
    assert list(explanations) == ["epsilon", "lrp0", "gradcam"]
    assert all(e.target.tolist() == [8, 8] for e in explanations.values())
    assert figure.dtype == np.uint8 and figure.shape[1] == 4 * (56 + PAD) + PAD
    torch.testing.assert_close(explanations["gradcam"].maps, classifier.grad_cam(images, target=8))
    with pytest.raises(ValueError, match="unknown composite\\(s\\) zplus"):
        compare(classifier, images, composites=["zplus"])
    with pytest.raises(ValueError, match="unknown method\\(s\\) lime"):
        compare(classifier, images, methods=["lime"])


def test_explain_image_compares_four_composites_and_grad_cam(tmp_path, capsys, boot):
    out = tmp_path / "grid.png"
    argv = ["explain-image", str(boot), "--composite", ",".join(FOUR), "--methods", "gradcam", "--out", str(out)]
    assert main(argv) == 0
    assert "prediction" in capsys.readouterr().out
    classifier = ImageClassifier.load("default")
    tile = 28 * (224 // 28)
    expected, _ = compare(classifier, np.asarray(Image.open(boot), np.float32)[None, None] / 255, composites=FOUR,
                          methods=["gradcam"])
    with Image.open(out) as grid:
        assert grid.mode == "RGB"
        assert grid.size == (expected.shape[1], expected.shape[0])
        assert grid.size[0] == 6 * (tile + PAD) + PAD  # one row: the input, four composites, Grad-CAM
        assert tile < grid.size[1] < 2 * tile  # one row of tiles, its titles and the legend
        assert np.array_equal(np.asarray(grid), expected)


def test_explain_image_with_one_composite_keeps_its_three_columns(tmp_path, boot):
    out = tmp_path / "heat.png"
    assert main(["explain-image", str(boot), "--composite", "lrp0", "--out", str(out)]) == 0
    with Image.open(out) as heat:
        assert heat.size == (3 * (224 + 4) + 4, 224 + 8)


def test_explain_image_refuses_unknown_names(tmp_path, capsys, boot):
    assert main(["explain-image", str(boot), "--composite", "epsilon,zplus", "--out", str(tmp_path / "g.png")]) == 1
    assert "unknown composite(s) zplus; choose from epsilon" in capsys.readouterr().err
    assert main(["explain-image", str(boot), "--methods", "gradcam,lime", "--out", str(tmp_path / "g.png")]) == 1
    assert "unknown method(s) lime; choose from gradcam, cam" in capsys.readouterr().err
    assert main(["explain-image", str(boot), "--methods", "cam", "--out", str(tmp_path / "g.png")]) == 1
    assert "CAM needs a model that ends in global average pooling" in capsys.readouterr().err
