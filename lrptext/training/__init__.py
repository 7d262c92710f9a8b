"""Training lrptext's reference classifiers (the models themselves are plain torch modules in lrptext.models)."""

from lrptext.training.config import TrainConfig
from lrptext.training.image import train_images
from lrptext.training.stopping import EarlyStopping
from lrptext.training.text import train

__all__ = ["EarlyStopping", "TrainConfig", "train", "train_images"]
