"""Pixel flipping (Bach et al. 2015) and region perturbation (Samek et al. 2017) for an ImageClassifier: perturb
the image's regions one after another in the order an explanation ranks them (relevance summed over the region
and the colour channels) and follow the accuracy and the explained class's logit.

Regions are `region` x `region` squares of a grid over the image (region=1: single pixels). A perturbed region
takes `fill`: "noise" (uniform in [0, 1] pixel space, drawn once per image and seed, as in Samek et al.), "zero"
(black) or "mean" (the image's mean pixel value). Relevance is computed once, on the intact image, for the true
label.

Besides LRP and the gradient baselines, the class activation maps of lrptext.image.cam rank regions by the sum of
their map over the region: "gradcam" (the last convolution's maps, upsampled bilinearly to the image) and "cam"
(models ending in global average pooling and a linear layer). Their maps are non-negative and zero wherever the
weighted feature maps are negative, so regions they score 0 tie; ties go in the regions' raster order, as for every
method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lrptext.evaluation.baselines import GRADIENT_METHODS, gradient_attribution
from lrptext.evaluation.curves import Curve, check_choices, perturbation_curves
from lrptext.image.classifier import ImageClassifier

FILLS = ("noise", "zero", "mean")
CAM_METHODS = ("gradcam", "cam")
BASELINES = ("sa", "gi", "ig", "occlusion", *CAM_METHODS, "random")


def _regions(size: int, region: int) -> np.ndarray:
    """The region index of each pixel, [size, size]."""
    if region < 1 or size % region:
        raise ValueError(f"region must be >= 1 and divide the image size {size}, got {region}")
    cells = size // region
    rows = np.arange(size) // region
    return rows[:, None] * cells + rows[None, :]


def _fill(images: torch.Tensor, fill: str, seed: int) -> torch.Tensor:
    if fill == "noise":
        return torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
    if fill == "zero":
        return torch.zeros_like(images)
    if fill == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images).clone()
    raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")


def _flip_curve(classifier: ImageClassifier, images: torch.Tensor, truth: torch.Tensor, replacement: torch.Tensor,
                regions: torch.Tensor, ranked: torch.Tensor, steps: int,
                batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logit of the true class and correctness after k = 0..steps regions, [images, steps + 1]."""
    n = images.shape[0]
    scores, correct = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    for k in range(steps + 1):
        # pixel (i, y, x) is perturbed when its region is among image i's first k regions
        taken = torch.zeros(n, int(regions.max()) + 1, dtype=torch.bool)
        if k:
            taken.scatter_(1, ranked[:, :k], True)
        mask = taken.gather(1, regions.flatten().expand(n, -1)).view(n, 1, *regions.shape)
        x = torch.where(mask, replacement, images)
        for start in range(0, n, batch_size):
            with torch.no_grad():
                logits = classifier.model(classifier.normalise(x[start: start + batch_size]))
            goal = truth[start: start + batch_size]
            scores[start: start + batch_size, k] = logits.gather(1, goal[:, None]).squeeze(1).double().numpy()
            correct[start: start + batch_size, k] = (logits.argmax(1) == goal).double().numpy()
    return scores, correct


def _pixel_scores(method: str, classifier: ImageClassifier, images: torch.Tensor, truth: torch.Tensor,
                  regions: torch.Tensor, fill: str, *, ig_steps: int, batch_size: int) -> tuple[torch.Tensor, int]:
    """Per-region scores [images, regions] of an attribution method, and its model evaluations per image."""
    count = int(regions.max()) + 1
    out, evaluations = [], 0
    for start in range(0, images.shape[0], batch_size):
        x, goal = images[start: start + batch_size], truth[start: start + batch_size]
        if method in GRADIENT_METHODS:  # gradients in pixel space, through the classifier's normalisation
            pixel, evaluations = gradient_attribution(method, lambda v: classifier.model(classifier.normalise(v)),
                                                      x, goal, over=1, steps=ig_steps)
            pixel = pixel.detach()
        elif method in CAM_METHODS:  # one forward and one backward (Grad-CAM) or one forward (CAM) per batch
            pixel, evaluations = classifier.explain_cam(x, method=method, target=goal).maps, 1
        elif method == "occlusion":  # the logit's drop when the region alone takes the fill
            replacement = _fill(x, fill, seed=0)
            with torch.no_grad():
                base = classifier.model(classifier.normalise(x)).gather(1, goal[:, None])
                drops = []
                for r in range(count):
                    mask = (regions == r).expand_as(x[:, :1])
                    logits = classifier.model(classifier.normalise(torch.where(mask, replacement, x)))
                    drops.append((base - logits.gather(1, goal[:, None])).squeeze(1))
            out.append(torch.stack(drops, dim=1).double())
            evaluations = count + 1
            continue
        else:
            raise ValueError(f"unknown method {method!r}")
        out.append(torch.zeros(x.shape[0], count, dtype=torch.float64).index_add_(
            1, regions.flatten(), pixel.flatten(1).double()))
    return torch.cat(out), evaluations


def pixel_flipping(classifier: ImageClassifier, images: np.ndarray | torch.Tensor, labels: Sequence[int | str], *,
                   composites: Sequence[str] = ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box"),
                   baselines: Sequence[str] = ("random",), orders: Sequence[str] = ("morf",), region: int = 2,
                   steps: int = 50, fill: str = "noise", seeds: int = 5, ig_steps: int = 32,
                   batch_size: int = 256, progress: bool | None = None) -> list[Curve]:
    """One Curve per LRP composite (method "lrp:<composite>") and baseline, per order, over `images` (pixels in
    [0, 1], [N, C, H, W]) with their true `labels`. Baselines: sa, gi, ig, occlusion, gradcam, cam, random."""
    check_choices(orders, baselines, BASELINES, "baseline")
    images = torch.as_tensor(np.asarray(images, dtype=np.float32) if not isinstance(images, torch.Tensor) else images)
    images = images.float()
    classifier.normalise(images[:1])  # refuses a wrong shape with a message
    truth = torch.tensor([classifier.labels.index(y) if isinstance(y, str) else int(y) for y in labels])
    if truth.shape[0] != images.shape[0]:
        raise ValueError(f"give one label per image: {images.shape[0]} images, {truth.shape[0]} labels")
    regions = torch.from_numpy(_regions(classifier.size, region))
    count = int(regions.max()) + 1
    if not 1 <= steps <= count:
        raise ValueError(f"steps must be between 1 and the {count} regions, got {steps}")

    def scores_of(method: str):
        if method == "random":
            return None, 0
        if not method.startswith("lrp:"):
            return _pixel_scores(method, classifier, images, truth, regions, fill, ig_steps=ig_steps,
                                 batch_size=batch_size)
        relevance = torch.cat([classifier.explain(images[s: s + batch_size], composite=method[4:],
                                                  target=truth[s: s + batch_size]).relevance
                               for s in range(0, images.shape[0], batch_size)])
        return torch.zeros(images.shape[0], count, dtype=torch.float64).index_add_(
            1, regions.flatten(), relevance.sum(1).flatten(1).double()), 1

    def shuffled(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.stack([torch.randperm(count, generator=g) for _ in range(images.shape[0])])

    return perturbation_curves(
        [f"lrp:{c}" for c in composites] + list(baselines), orders, images.shape[0], scores_of=scores_of,
        ranked=lambda scores, order: torch.argsort(-scores if order == "morf" else scores, dim=1, stable=True),
        shuffled=shuffled, seeds=seeds, progress=progress, desc="pixel flipping",
        curve_of=lambda order, seed, _: _flip_curve(classifier, images, truth, _fill(images, fill, seed), regions,
                                                 order, steps, batch_size))
