"""Early stopping on the validation accuracy, keeping the best epoch's weights."""

from __future__ import annotations

import copy
import logging

from torch import nn

logger = logging.getLogger("lrptext")


class EarlyStopping:
    """Keeps the weights of the best validation accuracy; says stop after `patience` epochs without a better one."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.stale, self.history = patience, -1.0, None, 0, []

    def update(self, model: nn.Module, accuracy: float, epoch: int) -> bool:
        self.history.append(accuracy)
        logger.info("epoch %d: validation accuracy %.4f", epoch + 1, accuracy)
        if accuracy > self.best:
            self.best, self.state, self.stale = accuracy, copy.deepcopy(model.state_dict()), 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)
        model.eval()
