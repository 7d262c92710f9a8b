"""Pixels: image classifiers with their normalisation, heatmaps, overlays and PNG output; Grad-CAM and CAM, and
figures comparing them with LRP composites."""

from lrptext.image.cam import CAM, CamExplanation, GradCAM, cam, grad_cam
from lrptext.image.classifier import ImageClassifier
from lrptext.image.compare import compare
from lrptext.image.heatmap import (
                                   CMAPS,
                                   SEQUENTIAL_CMAPS,
                                   cam_heatmap,
                                   cam_overlay,
                                   grid,
                                   heatmap,
                                   overlay,
                                   save_png,
                                   to_rgb,
                                   upscale,
)

__all__ = ["CAM", "CMAPS", "CamExplanation", "GradCAM", "ImageClassifier", "SEQUENTIAL_CMAPS", "cam", "cam_heatmap",
           "cam_overlay", "compare", "grad_cam", "grid", "heatmap", "overlay", "save_png", "to_rgb", "upscale"]
