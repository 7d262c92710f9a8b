"""Pixels: heatmaps, the bundled Fashion-MNIST CNN, image training, explain-image and its refusals."""

from __future__ import annotations

import operator
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lrptext
from lrptext.cli import main
from lrptext.datasets.images import load_digits
from lrptext.image import CMAPS, ImageClassifier, grid, heatmap, overlay
from lrptext.models.image_models import ResNetStyle, VGGStyle
from lrptext.training import TrainConfig, train_images


def test_heatmaps_are_symmetric_around_zero():
    r = np.array([[-2.0, 0.0, 1.0, 2.0]])
    rgb = heatmap(r, cmap="bwr")
    assert rgb[0, 0].tolist() == [0, 0, 255] and rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[0, 3].tolist() == [255, 0, 0] and rgb[0, 2].tolist() == [255, 128, 128]
    for name, stops in CMAPS.items():
        centre = dict(stops)[0.0]
        assert heatmap(np.array([[0.0, 1.0, -1.0]]), cmap=name)[0, 0].tolist() == list(centre)
    clipped = heatmap(np.array([[0.1, 0.2, 100.0]]), percentile=50)
    assert clipped[0, 1].tolist() == clipped[0, 2].tolist() == [255, 0, 0]  # beyond the percentile: full colour
    brighter = heatmap(r, gamma=0.5)[0, 2]
    assert brighter[1] < 128  # gamma < 1 lifts weak relevance
    assert heatmap(np.ones((3, 2, 2)), reduce="sum").shape == (2, 2, 3)
    with pytest.raises(ValueError, match="unknown colour map 'jet'"):
        heatmap(r, cmap="jet")
    assert overlay(np.zeros((2, 4)), heatmap(r.repeat(2, 0))).shape == (2, 4, 3)
    assert grid([np.zeros((2, 2, 3), np.uint8)] * 3, columns=2, pad=1).shape == (7, 7, 3)


def test_the_bundled_fashion_model():
    classifier = ImageClassifier.load("default")
    assert classifier.metadata["test_accuracy"] >= 0.9 and classifier.labels[9] == "Ankle boot"
    low, high = classifier.bounds()
    assert low[0] < 0 < high[0]  # [0, 1] pixels after normalisation
    images = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1"):
        e = classifier.explain(images, composite=composite, target="Bag")
        assert e.relevance.shape == (2, 1, 28, 28) and e.target.tolist() == [8, 8]


def test_the_digits_cnn_trains_on_digits_through_the_cli(tmp_path, capsys):
    out = tmp_path / "digits.pt"
    assert main(["train", "--dataset", "digits", "--arch", "digits", "--epochs", "3", "--quiet",
                 "--out", str(out)]) == 0
    classifier = ImageClassifier.load(out)
    assert classifier.metadata["test_accuracy"] > 0.8 and classifier.size == 8
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("dataset, arch, kind", [("digits", "minilm", "an image"), ("digits", "cnn", "an image"),
                                                  ("spam-assassin", "vgg", "a text")])
def test_train_refuses_an_architecture_of_the_other_kind(tmp_path, capsys, dataset, arch, kind):
    """Not a silent substitute (an image dataset once trained its default VGG for --arch minilm)."""
    out = tmp_path / "model.pt"
    assert main(["train", "--dataset", dataset, "--arch", arch, "--quiet", "--out", str(out)]) == 1
    assert f"--arch {arch} does not train on {dataset}, {kind} dataset" in capsys.readouterr().err
    assert not out.exists()


def test_resnet_style_with_batchnorm_trains_and_explains_on_digits():
    classifier = train_images(load_digits(), TrainConfig(arch="resnet", epochs=3, progress=False), width=8)
    assert classifier.metadata["test_accuracy"] > 0.5
    x = classifier.normalise(load_digits().test_images[:4])
    e = classifier.explain(load_digits().test_images[:4])
    torch.testing.assert_close(e.prediction, classifier.model(x))
    table = str(classifier.explainer("epsilon_gamma_box").support_table())
    assert "BatchNorm 'block1.bn1' folded in" in table and "add" in table


def test_bias_free_image_models_conserve():
    torch.manual_seed(0)
    tiny = lrptext.rules.Norm(1e-12)  # ResNet's residual sums and global average pooling split by the Norm rule
    for model, layer_map in ((VGGStyle(channels=1, size=8, width=4), None),
                             (ResNetStyle(channels=1, size=8, width=4),
                              {operator.add: tiny, F.adaptive_avg_pool2d: tiny})):
        for m in model.modules():
            if hasattr(m, "bias") and isinstance(m.bias, torch.nn.Parameter):
                torch.nn.init.zeros_(m.bias)
        model = model.double().eval()
        e = lrptext.explain(model, torch.rand(3, 1, 8, 8, dtype=torch.float64), composite="epsilon", epsilon=1e-9,
                            layer_map=layer_map)
        assert (e.delta.abs() / e.initial.abs()).max() < 1e-6


def png(path, mode, size):
    Image.fromarray(np.zeros(size[::-1] + ((3,) if mode == "RGB" else ()), dtype=np.uint8), mode=mode).save(path)
    return str(path)


def corrupt(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # a PNG signature, then nothing valid
    return str(path)


def test_explain_image_cli(tmp_path, capsys):
    image = tmp_path / "boot.png"
    Image.fromarray((np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8), mode="L").save(image)
    out = tmp_path / "heat.png"
    assert main(["explain-image", str(image), str(image), "--cmap", "coldnhot", "--out", str(out)]) == 0
    assert "prediction" in capsys.readouterr().out
    with Image.open(out) as heat:
        assert heat.mode == "RGB" and heat.size[0] > 3 * 28


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: png(p, "RGB", (28, 28)), "is RGB \\(3 channels\\) but the model takes grayscale"),
    (lambda p: png(p, "L", (32, 32)), "is 32x32 pixels but the model takes 28x28; lrptext does not resize"),
    (lambda p: corrupt(p), "not a readable image"),
])
def test_explain_image_refusals(tmp_path, capsys, make, message):
    path = make(tmp_path / "input.png")
    assert main(["explain-image", path, "--out", str(tmp_path / "h.png")]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_a_grayscale_image_for_an_rgb_model(tmp_path, capsys):
    model_path = tmp_path / "rgb.pt"
    rgb = ImageClassifier(VGGStyle(3, channels=3, size=8, width=4), ["a", "b", "c"], mean=[0.5] * 3, std=[0.25] * 3)
    rgb.save(model_path)
    assert main(["explain-image", png(tmp_path / "g.png", "L", (8, 8)), "--model", str(model_path), "--out",
                 str(tmp_path / "h.png")]) == 1
    assert "is grayscale (1 channel) but the model takes RGB (3 channels) images" in capsys.readouterr().err
    assert main(["explain-image", png(tmp_path / "c.png", "RGB", (8, 8)), "--model", str(model_path), "--out",
                 str(tmp_path / "h.png")]) == 0


def test_fashion_mnist_fetch_and_load(tmp_path, monkeypatch):
    import os

    from lrptext.datasets import fetch, images
    from lrptext.datasets.images import DEBIAN_FOLDER, load_images

    if not DEBIAN_FOLDER.exists():
        if os.environ.get("LRPTEXT_REQUIRE_FASHION_MNIST") == "1":
            pytest.fail("LRPTEXT_REQUIRE_FASHION_MNIST=1 but the Debian package dataset-fashion-mnist is missing")
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    monkeypatch.setenv("LRPTEXT_CACHE", str(tmp_path))
    installed = load_images("fashion-mnist")  # an empty cache: the installed package's files, read in place
    monkeypatch.setattr(images, "DEBIAN_FOLDER", tmp_path / "not-installed")
    with pytest.raises(FileNotFoundError, match="lrptext data fetch fashion-mnist"):
        load_images("fashion-mnist")
    monkeypatch.undo()
    monkeypatch.setenv("LRPTEXT_CACHE", str(tmp_path))
    fetch("fashion-mnist")
    monkeypatch.setattr(images, "DEBIAN_FOLDER", tmp_path / "not-installed")  # the fetched copy alone from here
    data = load_images("fashion-mnist")
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert np.array_equal(installed.test_images, data.test_images)
    assert np.array_equal(installed.train_labels, data.train_labels)
    classifier = ImageClassifier.load("default")
    probs = torch.cat([classifier.predict(data.test_images[s: s + 2000]) for s in range(0, 10000, 2000)])
    accuracy = float((probs.argmax(1).numpy() == data.test_labels).mean())
    assert accuracy == pytest.approx(classifier.metadata["test_accuracy"], abs=2e-3)  # float16 storage
