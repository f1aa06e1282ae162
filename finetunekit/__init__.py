"""finetunekit: fine-tune pretrained Keras models in five composable steps.

Examples:
    >>> import finetunekit as ftk
    >>> "vgg16" in ftk.Backbone.available()
    True
"""

from finetunekit import tasks
from finetunekit.backbones import Backbone
from finetunekit.data import DatasetAdapter
from finetunekit.errors import (
    ArgumentTypeError,
    BackboneError,
    CheckpointError,
    ConfigError,
    DataError,
    EvaluationError,
    ExportError,
    FineTuneError,
    HeadError,
    InputShapeError,
    LabelError,
    LoadError,
    TrainerError,
    UnknownBackboneError,
    WeightsError,
)
from finetunekit.evaluation import EvaluationReport, Evaluator
from finetunekit.heads import HeadReplacer
from finetunekit.pipeline import FineTuner
from finetunekit.result import FineTuneResult, load
from finetunekit.tasks import Task
from finetunekit.training import Trainer
from finetunekit.training.lr_finder import LRFinderResult

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "Backbone",
    "BackboneError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetAdapter",
    "EvaluationError",
    "EvaluationReport",
    "Evaluator",
    "ExportError",
    "FineTuneError",
    "FineTuneResult",
    "FineTuner",
    "HeadError",
    "HeadReplacer",
    "InputShapeError",
    "LRFinderResult",
    "LabelError",
    "LoadError",
    "Trainer",
    "Task",
    "TrainerError",
    "UnknownBackboneError",
    "WeightsError",
    "__version__",
    "load",
    "tasks",
]
