"""Reference classifiers as plain torch modules (trained by lrptext.training), their storage and the bundled
default model."""

from lrptext.models.store import DEFAULT_MODEL
from lrptext.models.text_models import ARCHS, BagOfEmbeddings, TextCNN, TfidfMLP

__all__ = ["ARCHS", "DEFAULT_MODEL", "BagOfEmbeddings", "TextCNN", "TfidfMLP"]
