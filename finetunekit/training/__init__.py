"""Step 4: the Trainer, its phases, freezing and optimizers."""

from finetunekit.training.freezing import freeze, unfreeze, weight_layers
from finetunekit.training.trainer import Trainer, TrainingRun

__all__ = ["Trainer", "TrainingRun", "freeze", "unfreeze", "weight_layers"]
