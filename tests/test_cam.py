"""Grad-CAM and CAM (lrptext.image.cam) against implementations written here from the papers' equations with
forward hooks and torch.autograd; the model left as it was; CAM = Grad-CAM up to a positive scale; LRP-0 by name."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrptext
from lrptext.image import CAM, GradCAM, ImageClassifier, cam, grad_cam
from lrptext.models.image_models import ResNetStyle


def reference_grad_cam(model: nn.Module, x: torch.Tensor, module: nn.Module, target=None) -> torch.Tensor:
    """Selvaraju et al. (2017), eq. 1-2: A = the output of `module` (a forward hook), α_k = mean_ij ∂y^c/∂A^k_ij,
    L = ReLU(Σ_k α_k A^k), then bilinear upsampling (align_corners=False) to the input's size."""
    kept = {}
    handle = module.register_forward_hook(lambda m, inputs, output: kept.__setitem__("A", output))
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = kept["A"]
    c = logits.argmax(1) if target is None else torch.as_tensor(target).expand(x.shape[0])  # one, or one per image
    (grad,) = torch.autograd.grad(logits[torch.arange(x.shape[0]), c].sum(), a)
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    low = F.relu((alpha * a).sum(dim=1, keepdim=True))
    return F.interpolate(low, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


def small_cnn(channels: int = 3, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(8 * 6 * 10, classes))
    with torch.no_grad():  # running statistics that differ from a fresh batch's
        model[4].running_mean.uniform_(-0.5, 0.5)
        model[4].running_var.uniform_(0.5, 2.0)
    return model


def hook_counts(model: nn.Module) -> list[int]:
    return [len(getattr(m, d)) for m in model.modules() for d in
            ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_grad_cam_equals_the_paper_on_the_bundled_cnn():
    classifier = ImageClassifier.load("default")
    model = classifier.model
    x = classifier.normalise(np.random.default_rng(0).random((6, 1, 28, 28)).astype(np.float32))
    before = state(model)
    # the default: the last convolution (features.7) after its ReLU (features.8)
    maps = lrptext.grad_cam(model, x)
    expected = reference_grad_cam(model, x, model.features[8])
    assert maps.shape == (6, 28, 28) and maps.dtype == torch.float32 and expected.max() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    # activation=False: what a forward hook on the last nn.Conv2d sees
    torch.testing.assert_close(lrptext.grad_cam(model, x, activation=False),
                               reference_grad_cam(model, x, model.features[7]), rtol=1e-5, atol=1e-8)
    # another convolution by name, and a fixed target
    torch.testing.assert_close(lrptext.grad_cam(model, x, target=3, layer="features.2"),
                               reference_grad_cam(model, x, model.features[3], target=3), rtol=1e-5, atol=1e-8)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not any(hook_counts(model)) and all(p.grad is None for p in model.parameters())


def test_grad_cam_on_a_small_random_cnn_in_training_mode_uses_eval_semantics():
    model = small_cnn().train()
    x = torch.randn(4, 3, 12, 20)
    before = state(model)
    explainer = GradCAM(model)
    assert explainer.layer.qualified_name == "5"  # the ReLU that alone reads the BatchNorm after the last conv
    e = explainer.explain(x, target=[0, 1, 2, 3])
    assert model.training and all(m.training for m in model.modules())
    for name, value in model.state_dict().items():  # BatchNorm in training mode would have updated these
        assert torch.equal(value, before[name]), name
    assert not any(hook_counts(model)) and all(p.grad is None for p in model.parameters())
    reference = copy.deepcopy(model).eval()
    expected = reference_grad_cam(reference, x, reference[5], target=[0, 1, 2, 3])
    torch.testing.assert_close(e.maps, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    assert e.maps.shape == (4, 12, 20) and e.coarse.shape == (4, 6, 10) and e.weights.shape == (4, 8)
    assert e.target.tolist() == [0, 1, 2, 3] and e.layer == "5"
    torch.testing.assert_close(e.prediction, reference(x))
    # the last convolution's own output, and the first convolution by name (after its ReLU)
    torch.testing.assert_close(grad_cam(model, x, activation=False), reference_grad_cam(reference, x, reference[3]),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_cam(model, x, layer="0"), reference_grad_cam(reference, x, reference[1]),
                               rtol=1e-5, atol=1e-7)


def test_one_forward_and_one_backward():
    model = small_cnn().eval()
    calls = []
    handle = model[0].register_forward_hook(lambda m, i, o: calls.append(o.requires_grad))
    grad_cam(model, torch.randn(2, 3, 12, 20))
    handle.remove()
    assert calls == [False]  # once, and without autograd before the feature maps


class GAPNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pooling -> linear: CAM's architecture."""

    def __init__(self, pool: str):
        super().__init__()
        torch.manual_seed(1)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.pool, self.fc = pool, nn.Linear(6, 3)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        a = torch.relu(self.conv2(F.relu(self.conv1(x))))
        pooled = torch.flatten(self.gap(a), 1) if self.pool == "module" else a.mean(dim=(2, 3))
        return self.fc(pooled)


@pytest.mark.parametrize("pool", ["module", "mean"])
def test_cam_is_grad_cam_up_to_a_positive_scale(pool):
    model = GAPNet(pool).eval()
    x = torch.randn(5, 1, 8, 12)
    e = CAM(model).explain(x)
    g = GradCAM(model).explain(x)
    assert e.layer == g.layer == "torch.relu"  # both read the maps the pooling averages
    z = 8 * 12  # positions of the pooled maps
    torch.testing.assert_close(e.maps, z * g.maps, rtol=1e-5, atol=1e-6 * float(e.maps.max()))
    assert (e.maps > 0).any() and torch.equal(e.maps > 0, g.maps > 0)
    # the definition, Σ_k w_ck A^k, by hand, without ReLU
    feats = torch.relu(model.conv2(F.relu(model.conv1(x))))
    signed = torch.einsum("bk,bkhw->bhw", model.fc.weight[e.target].detach(), feats).detach()
    torch.testing.assert_close(CAM(model, relu=False).explain(x).coarse, signed)
    torch.testing.assert_close(cam(model, x, target=2), z * grad_cam(model, x, target=2), rtol=1e-5,
                               atol=1e-6 * float(e.maps.max()))


def test_cam_on_the_resnet_style_model_and_where_it_does_not_apply():
    torch.manual_seed(0)
    model = ResNetStyle(4, channels=1, size=8, width=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    e = CAM(model).explain(x)
    assert e.maps.shape == (3, 8, 8) and e.coarse.shape == (3, 4, 4)
    # the pooling reads the second block's residual ReLU: Grad-CAM there is CAM / 16
    g = GradCAM(model, layer=e.layer).explain(x)
    torch.testing.assert_close(e.maps, 16 * g.maps, rtol=1e-5, atol=1e-6 * float(e.maps.max()))
    classifier = ImageClassifier.load("default")
    with pytest.raises(ValueError, match="CAM needs a model that ends in global average pooling"):
        classifier.cam(np.zeros((1, 1, 28, 28), np.float32))


def test_refusals_name_the_way_out():
    model = small_cnn().eval()
    x = torch.randn(1, 3, 12, 20)
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'.*its convolutions are 0, 3 \(the last is the default"):
        grad_cam(model, x, layer="conv9")
    with pytest.raises(ValueError, match="has no convolution"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match="must be a \\[B, K, h, w\\] float tensor"):
        grad_cam(model, x, layer="7")  # the flattened features
    with pytest.raises(ValueError, match="target 5 is not a class of this model"):
        grad_cam(model, x, target=5)
    with pytest.raises(ValueError, match="one target per image"):
        grad_cam(model, torch.randn(3, 3, 12, 20), target=[0, 1])
    with pytest.raises(ValueError, match="images must be \\[B, C, H, W\\]"):
        grad_cam(model, torch.randn(3, 12, 20))


def test_through_the_image_classifier():
    classifier = ImageClassifier.load("default")
    images = np.random.default_rng(2).random((3, 1, 28, 28)).astype(np.float32)
    maps = classifier.grad_cam(images, target="Bag")
    torch.testing.assert_close(maps, lrptext.grad_cam(classifier.model, classifier.normalise(images), target=8))
    e = classifier.explain_cam(images)
    assert e.method == "gradcam" and e.layer == "features.8" and (e.maps >= 0).all()
    assert e.target.tolist() == classifier.predict(images).argmax(1).tolist()
    with pytest.raises(ValueError, match="unknown target label 'Hat'"):
        classifier.grad_cam(images, target="Hat")


def test_lrp0_by_name_and_its_zero_denominators():
    classifier = ImageClassifier.load("default")
    images = np.random.default_rng(3).random((2, 1, 28, 28)).astype(np.float32)
    lrp0 = classifier.explain(images, composite="lrp0")
    eps = lrptext.Explainer(classifier.model, composite="epsilon", epsilon=1e-12).explain(classifier.normalise(images))
    torch.testing.assert_close(lrp0.relevance, eps.relevance, rtol=1e-4, atol=1e-6)
    # z = 0 exactly at a neuron: LRP-0 divides by it, and explain() names the node
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[3].weight.fill_(1.0)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, :2] = torch.tensor([1.0, -1.0])
    with pytest.raises(ValueError, match=r"NaN or infinite at nn.Conv2d \('0'\) under Epsilon\(epsilon=0.0\)"):
        lrptext.explain(model, x, composite="lrp0")
