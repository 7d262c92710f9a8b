"""A trained image classifier with what explaining it needs: labels, input size and channels, and the
normalisation (x - mean) / std, from which the z^B bounds of the first layer follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrptext.engine import Explainer
from lrptext.image.cam import METHODS as CAM_METHODS, CamExplanation
from lrptext.image.explanation import ImageExplanation
from lrptext.models import store
from lrptext.models.image_models import IMAGE_ARCHS
from lrptext.rules import COMPOSITES

BOX = ("epsilon_gamma_box",)


def composite_names() -> list[str]:
    """Every composite name ImageClassifier.explain takes (lrptext.rules.COMPOSITES, LRP-0 as "lrp0" included)."""
    return list(COMPOSITES)


class ImageClassifier:
    def __init__(self, model: torch.nn.Module, labels: list[str], *, mean: list[float], std: list[float],
                 metadata: dict[str, Any] | None = None):
        self.model = model.eval()
        self.labels = list(labels)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.channels = model.config["channels"]
        self.size = model.config["size"]
        self.metadata = dict(metadata or {})
        self._explainers: dict[str, Explainer] = {}
        self._cams: dict[tuple[str, str | None, bool], Any] = {}

    @classmethod
    def load(cls, path: str | Path = "default") -> ImageClassifier:
        payload = store.read(path, kind="image")
        model = IMAGE_ARCHS[payload["arch"]](len(payload["labels"]), **payload["config"])
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
        return cls(model, payload["labels"], mean=payload["mean"], std=payload["std"], metadata=payload.get("metadata"))

    def save(self, path: str | Path, *, half: bool = False) -> None:
        state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.model.state_dict().items()}
        store.save(path, {"arch": self.model.arch, "config": self.model.config, "labels": self.labels,
                          "mean": self.mean, "std": self.std, "state_dict": state, "metadata": self.metadata},
                   kind="image")

    def bounds(self) -> tuple[list[float], list[float]]:
        """Per channel, where pixels in [0, 1] land after normalisation: the z^B box of the first layer."""
        return ([(0.0 - m) / s for m, s in zip(self.mean, self.std)],
                [(1.0 - m) / s for m, s in zip(self.mean, self.std)])

    def normalise(self, images: Any) -> torch.Tensor:
        """images: Tensor/array [N, C, H, W] (or [C, H, W]) of pixels in [0, 1]."""
        x = torch.as_tensor(np.asarray(images, dtype=np.float32) if not isinstance(images, torch.Tensor) else images)
        x = x.float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] != self.channels:
            got = tuple(x.shape)
            raise ValueError(f"images must be [N, {self.channels}, {self.size}, {self.size}] (pixels in [0, 1]) for "
                             f"this {self.channels}-channel model, got shape {got}")
        if tuple(x.shape[2:]) != (self.size, self.size):
            raise ValueError(f"images must be {self.size}x{self.size} pixels, got {x.shape[2]}x{x.shape[3]}; lrptext "
                             "does not resize (it would change what the model sees): resize them yourself")
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def predict(self, images: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self.normalise(images)).softmax(dim=1)

    def explainer(self, composite: str) -> Explainer:
        if composite not in self._explainers:
            if composite in COMPOSITES:
                params = dict(zip(("low", "high"), self.bounds())) if composite in BOX else {}
                self._explainers[composite] = Explainer(self.model, composite=composite, **params)
            else:
                raise ValueError(f"unknown composite {composite!r}; choose one of {', '.join(composite_names())}")
        return self._explainers[composite]

    def target_index(self, target: Any) -> Any:
        """A label name (or a list of them) as its class index; anything else as given."""
        if isinstance(target, (list, tuple)) and any(isinstance(t, str) for t in target):
            return [self.target_index(t) for t in target]
        if isinstance(target, str):
            if target not in self.labels:
                raise ValueError(f"unknown target label {target!r}; this model's labels are {', '.join(self.labels)}")
            return self.labels.index(target)
        return target

    def explain(self, images: Any, *, composite: str = "epsilon_gamma_box", target: Any = None) -> ImageExplanation:
        """Relevance per input pixel and channel (in the normalised input space), [N, C, H, W], with the images
        and labels, so that a notebook shows input and heatmap side by side."""
        x = self.normalise(images)
        e = self.explainer(composite).explain(x, target=self.target_index(target))
        pixels = x * torch.tensor(self.std).view(1, -1, 1, 1) + torch.tensor(self.mean).view(1, -1, 1, 1)
        return ImageExplanation(**vars(e), images=pixels, labels=tuple(self.labels))

    def explain_cam(self, images: Any, *, method: str = "gradcam", target: Any = None, layer: str | None = None,
                    activation: bool = True) -> CamExplanation:
        """Grad-CAM ("gradcam") or CAM ("cam") of images with pixels in [0, 1], normalised as the model was trained:
        maps [N, H, W] and what they came from (lrptext.image.cam). layer, activation: which feature maps Grad-CAM
        reads (default: the last convolution's, after its activation)."""
        if method not in CAM_METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(CAM_METHODS)}")
        if method == "cam" and (layer is not None or not activation):
            raise ValueError("CAM reads the maps its global average pooling reads; layer= and activation= are "
                             "Grad-CAM's")
        key = (method, layer, activation)
        if key not in self._cams:
            self._cams[key] = (CAM_METHODS[method](self.model) if method == "cam"
                               else CAM_METHODS[method](self.model, layer, activation))
        return self._cams[key].explain(self.normalise(images), target=self.target_index(target))

    def grad_cam(self, images: Any, *, target: Any = None, layer: str | None = None,
                 activation: bool = True) -> torch.Tensor:
        """Grad-CAM maps [N, H, W] (non-negative) of images with pixels in [0, 1]; target: None (predicted),
        a label name, an index, or one per image; layer, activation: as lrptext.grad_cam."""
        return self.explain_cam(images, method="gradcam", target=target, layer=layer, activation=activation).maps

    def cam(self, images: Any, *, target: Any = None) -> torch.Tensor:
        """CAM maps [N, H, W] for a model ending in global average pooling and a linear layer (the ResNet-style
        architecture); equal to Grad-CAM at the pooled maps up to a positive scale."""
        return self.explain_cam(images, method="cam", target=target).maps
