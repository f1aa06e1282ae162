"""Step 5 of fine-tuning: evaluation.

``Evaluator`` runs a Keras model on data (or takes targets and predictions)
and returns an ``EvaluationReport`` with headline metrics, per-class scores
and a confusion matrix.

Examples:
    >>> import numpy as np
    >>> from finetunekit.evaluation import Evaluator
    >>> report = Evaluator().compute(np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]),
    ...                              task="multiclass", class_names=["cat", "dog"])
    >>> report.metrics["accuracy"]
    1.0
"""

from finetunekit.evaluation.evaluator import Evaluator
from finetunekit.evaluation.report import EvaluationReport

__all__ = ["EvaluationReport", "Evaluator"]
