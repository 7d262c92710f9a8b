"""Pixels: image classifiers with their normalisation, heatmaps, overlays and PNG output; Grad-CAM and CAM."""

from lrptext.image.cam import CAM, CamExplanation, GradCAM, cam, grad_cam
from lrptext.image.classifier import ImageClassifier
from lrptext.image.heatmap import CMAPS, grid, heatmap, overlay, save_png, to_rgb, upscale

__all__ = ["CAM", "CMAPS", "CamExplanation", "GradCAM", "ImageClassifier", "cam", "grad_cam", "grid", "heatmap",
           "overlay", "save_png", "to_rgb", "upscale"]
