"""Pixels: image classifiers with their normalisation, heatmaps, overlays and PNG output."""

from lrptext.image.classifier import ImageClassifier
from lrptext.image.heatmap import CMAPS, grid, heatmap, overlay, save_png, to_rgb, upscale

__all__ = ["CMAPS", "ImageClassifier", "grid", "heatmap", "overlay", "save_png", "to_rgb", "upscale"]
