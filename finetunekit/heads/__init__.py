"""Step 3: the new output layers (head) and the task -> activation/loss rules."""

from finetunekit.heads.head import POOLINGS, HeadReplacer
from finetunekit.heads.tasks import TASKS, default_activation, default_loss, default_metrics

__all__ = [
    "HeadReplacer",
    "POOLINGS",
    "TASKS",
    "default_activation",
    "default_loss",
    "default_metrics",
]
