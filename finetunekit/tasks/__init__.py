"""Tasks: the one place that knows each kind of target.

A :class:`Task` owns, for its kind of target, checking and encoding the
targets, the number of outputs, the output layer and its activation, the
loss, the training metrics, turning outputs into decisions, its part of the
evaluation report, and its config. Wherever finetunekit accepts
``task="name"`` it also accepts a Task object; ``data.task`` is the name.

Built-in: ``multiclass``, ``binary``, ``multilabel``, ``regression`` and
``embedding`` (pairs, triplets, scored pairs or groups -> an encoder; see
``docs/embeddings.md``); ``detection`` (boxes per image: data and COCO
evaluation so far, see ``docs/detection.md``); ``generative`` (prompt / response
pairs -> a fine-tuned causal language model, see ``docs/generative.md``).
Subclass :class:`Task` for a new kind (see ``docs/tasks.md``).

Examples:
    >>> from finetunekit import tasks
    >>> tasks.available()[:4]
    ['multiclass', 'binary', 'multilabel', 'regression']
    >>> tasks.get("binary").activation
    'sigmoid'
"""

from finetunekit.tasks.base import BUILT_IN, Task, available, deserialize, get, serialize
from finetunekit.tasks.classification import Binary, ClassificationTask, Multiclass, Multilabel
from finetunekit.tasks.detection import Detection
from finetunekit.tasks.embedding import Embedding
from finetunekit.tasks.generative import Generative
from finetunekit.tasks.regression import Regression

__all__ = [
    "BUILT_IN",
    "Binary",
    "ClassificationTask",
    "Detection",
    "Embedding",
    "Generative",
    "Multiclass",
    "Multilabel",
    "Regression",
    "Task",
    "available",
    "deserialize",
    "get",
    "serialize",
]
