"""Grad-CAM as a method of pixel flipping, in Python and through `lrptext evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lrptext.cli import main
from lrptext.datasets.images import load_images
from lrptext.evaluation.pixels import _regions, pixel_flipping
from lrptext.image import ImageClassifier


def test_pixel_flipping_reports_grad_cam():
    """Grad-CAM ranks regions by its map summed over each; its first flip is the region it scores highest."""
    classifier = ImageClassifier.load("default")
    data = load_images("fashion-mnist")
    images, labels = data.test_images[:6], data.test_labels[:6].tolist()
    curves = pixel_flipping(classifier, images, labels, composites=(), baselines=("gradcam", "random"), region=4,
                            steps=5, seeds=2, fill="zero", progress=False)
    assert [c.method for c in curves] == ["gradcam", "random"]
    grad = curves[0]
    assert grad.evaluations == 1 and grad.seconds_per_explanation > 0 and len(grad.accuracy) == 6
    assert np.isfinite(grad.aopc) and grad.aopc == pytest.approx(np.mean(grad.score[0] - np.array(grad.score)))
    maps = classifier.grad_cam(images, target=labels)
    regions = torch.from_numpy(_regions(28, 4))
    first = torch.zeros(6, 49).index_add_(1, regions.flatten(), maps.flatten(1)).argmax(1)
    flipped = torch.as_tensor(images).clone()
    for i in range(6):
        flipped[i, :, regions == first[i]] = 0.0
    with torch.no_grad():
        logits = classifier.model(classifier.normalise(flipped))
    assert grad.score[1] == pytest.approx(float(logits[torch.arange(6), torch.tensor(labels)].mean()), rel=1e-5)
    with pytest.raises(ValueError, match="CAM needs a model that ends in global average pooling"):
        pixel_flipping(classifier, images, labels, composites=(), baselines=("cam",), steps=2, progress=False)


def test_cli_evaluate_compares_lrp_with_grad_cam(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "fashion-mnist", "--methods", "lrp,gradcam,gi,random", "--composites",
                 "epsilon,lrp0", "--limit", "4", "--steps", "3", "--region", "4", "--seeds", "1", "--out", str(out),
                 "--quiet"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    methods = [c["method"] for c in result["curves"]]
    assert methods == ["lrp:epsilon", "lrp:lrp0", "gradcam", "gi", "random"]
    grad = result["curves"][2]
    assert grad["evaluations"] == 1 and len(grad["accuracy"]) == 4 and "aopc" in grad
    assert " gradcam: AOPC" in capsys.readouterr().out
