"""Label smoothing and class weights for the Trainer's loss."""

from __future__ import annotations

from typing import Any

import keras

from finetunekit.errors import TrainerError, format_error

__all__ = [
    "SmoothedSparseCategoricalCrossentropy",
    "check_class_weight",
    "check_label_smoothing",
    "class_weights",
    "smooth_loss",
]

_SMOOTHABLE = (
    keras.losses.CategoricalCrossentropy,
    keras.losses.BinaryCrossentropy,
    keras.losses.CategoricalFocalCrossentropy,
    keras.losses.BinaryFocalCrossentropy,
)


@keras.saving.register_keras_serializable(package="finetunekit")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing.

    Keras' ``SparseCategoricalCrossentropy`` has no ``label_smoothing``:
    this loss one-hot encodes the integer labels (depth: the width of
    ``y_pred``) and applies ``CategoricalCrossentropy(label_smoothing)``.

    Args:
        label_smoothing: in ``[0, 1)``: the target of the true class is
            ``1 - label_smoothing + label_smoothing / classes``, the others
            ``label_smoothing / classes``.
        from_logits: whether ``y_pred`` are logits.

    Examples:
        >>> import numpy as np
        >>> loss = SmoothedSparseCategoricalCrossentropy(0.1)
        >>> round(float(loss(np.array([0]), np.array([[0.5, 0.5]]))), 4)
        0.6931
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        from_logits: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "smoothed_sparse_categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        target = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            target,
            ops.reshape(y_pred, (ops.shape(target)[0], -1)),
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(label_smoothing=self.label_smoothing, from_logits=self.from_logits)
        return config


def check_label_smoothing(value: Any) -> float:
    """Validates ``Trainer(label_smoothing=...)``: a float in ``[0, 1)``.

    Examples:
        >>> check_label_smoothing(0.1)
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise TrainerError(
            format_error(
                "label_smoothing must be in [0, 1)",
                expected="a float such as 0.1 (0 switches it off)",
                received={"label_smoothing": value},
                fix="Pass label_smoothing=0.1",
            )
        )
    return float(value)


def smooth_loss(loss: Any, label_smoothing: float, task: Any = None) -> Any:
    """Returns ``loss`` with ``label_smoothing`` (unchanged when it is 0).

    Keras' cross-entropy losses (categorical, binary and their focal
    variants) are rebuilt from their config with ``label_smoothing``; a
    sparse categorical cross-entropy becomes
    :class:`SmoothedSparseCategoricalCrossentropy`. A loss that already
    smooths with another value raises (set it in one place).

    Args:
        loss: the loss (a name, function or Keras loss object).
        label_smoothing: in ``[0, 1)``.
        task: the data's task (a name or a :class:`~finetunekit.Task`), or
            ``None``: smoothing needs a task with classes.

    Raises:
        TrainerError: for a task without classes (regression) or a loss that
            cannot smooth labels.

    Examples:
        >>> loss = smooth_loss("categorical_crossentropy", 0.1)
        >>> type(loss).__name__, loss.label_smoothing
        ('CategoricalCrossentropy', 0.1)
    """
    if not label_smoothing:
        return loss
    if task is not None and not _task(task).has_classes:
        raise TrainerError(
            format_error(
                "label_smoothing only applies to classification",
                expected="label_smoothing=0.0 for a regression task",
                received={"label_smoothing": label_smoothing},
                fix="Pass label_smoothing=0.0",
            )
        )
    obj = _as_loss_object(loss)
    if isinstance(obj, keras.losses.SparseCategoricalCrossentropy):
        config = obj.get_config()
        return SmoothedSparseCategoricalCrossentropy(
            label_smoothing, from_logits=bool(config.get("from_logits", False))
        )
    if isinstance(obj, _SMOOTHABLE):
        config = obj.get_config()
        current = float(config.get("label_smoothing", 0.0) or 0.0)
        if current and abs(current - label_smoothing) > 1e-12:
            raise TrainerError(
                format_error(
                    f"The loss already smooths labels by {current}",
                    expected="label smoothing set in one place (the Trainer or the head)",
                    received={"label_smoothing": label_smoothing},
                    fix="Pass label_smoothing to Trainer only, or only to HeadReplacer",
                )
            )
        config["label_smoothing"] = float(label_smoothing)
        return type(obj).from_config(config)
    raise TrainerError(
        format_error(
            "label_smoothing needs a cross-entropy loss",
            expected="a categorical, sparse categorical or binary cross-entropy loss",
            received={"label_smoothing": label_smoothing, "loss": loss},
            fix="Use the head's default loss, or pass label_smoothing=0.0",
        )
    )


def _task(task: Any) -> Any:
    from finetunekit.tasks.base import get

    return get(task)


def _as_loss_object(loss: Any) -> Any:
    """A Keras loss object for a cross-entropy loss given by name or function."""
    classes = {
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    }
    for name, cls in classes.items():
        if loss == name or loss is getattr(keras.losses, name):
            return cls()
    return loss


def check_class_weight(value: Any) -> None | str | dict[Any, float]:
    """Validates ``Trainer(class_weight=...)``: ``None``, ``"balanced"`` or a dict.

    Examples:
        >>> check_class_weight({"cat": 2, 0: 1.0})
        {'cat': 2.0, 0: 1.0}
    """
    if value is None or value == "balanced":
        return value  # type: ignore[no-any-return]
    ok = isinstance(value, dict) and all(
        isinstance(k, (int, str))
        and not isinstance(k, bool)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and v >= 0
        for k, v in value.items()
    )
    if not ok:
        raise TrainerError(
            format_error(
                "class_weight must be None, 'balanced' or {class: weight}",
                expected="'balanced' or a dict of class index or name -> weight >= 0",
                received={"class_weight": value},
                fix="Pass class_weight='balanced' or e.g. {0: 1.0, 1: 5.0}",
            )
        )
    return {k: float(v) for k, v in value.items()}


def class_weights(value: Any, train_data: Any = None) -> dict[int, float] | None:
    """Keras' ``class_weight`` (``{class index: weight}``) for ``fit``, or ``None``.

    ``"balanced"`` gives class ``c`` the weight ``n / (k * n_c)`` (``n``
    examples, ``k`` classes, ``n_c`` examples of ``c``), from
    ``train_data.class_counts()``. Dict keys are class indices or class
    names (a string of digits that is not a class name is an index, as
    JSON turns int keys into strings); classes left out weigh 1.

    Raises:
        TrainerError: multilabel or regression data, an unknown class, or
            ``"balanced"`` / class names without ``train_data``.

    Examples:
        >>> import numpy as np, finetunekit as ftk
        >>> data = ftk.DatasetAdapter.from_arrays(np.zeros((4, 2)), [0, 0, 0, 1])
        >>> class_weights("balanced", data)
        {0: 0.6666666666666666, 1: 2.0}
    """
    if value is None:
        return None
    task = getattr(train_data, "task_object", None)
    if task is not None and not task.single_label:
        raise TrainerError(
            format_error(
                f"class_weight does not apply to {task.name} data",
                expected="class_weight=None (or multiclass / binary data)",
                received={"class_weight": value},
                fix="Pass class_weight=None",
            )
        )
    names = list(getattr(train_data, "class_names", None) or [])
    if value == "balanced":
        if train_data is None or not hasattr(train_data, "class_counts"):
            raise TrainerError(
                format_error(
                    "class_weight='balanced' needs the training DatasetAdapter to count classes",
                    expected="Trainer.train(..., train_data=adapter) (FineTuner passes it)",
                    received={"class_weight": value},
                    fix="Pass train_data, or class_weight as a dict {index: weight}",
                )
            )
        counts = list(train_data.class_counts().values())
        total, k = sum(counts), len(counts)
        return {i: (total / (k * c) if c else 1.0) for i, c in enumerate(counts)}
    out: dict[int, float] = {}
    for key, weight in value.items():
        if isinstance(key, str) and key in names:
            index = names.index(key)
        elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            index = int(key)
        else:
            index = -1
        if index < 0 or (names and index >= len(names)):
            raise TrainerError(
                format_error(
                    f"class_weight names an unknown class {key!r}",
                    expected=f"class indices 0..{len(names) - 1} or names {names}"
                    if names
                    else "class indices (names need the training DatasetAdapter)",
                    received={"class_weight": value},
                    fix="Use the data's class names or indices as keys",
                )
            )
        out[index] = float(weight)
    if names:
        out = {i: out.get(i, 1.0) for i in range(len(names))}
    return out
