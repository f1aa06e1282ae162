"""Step 3: ``HeadReplacer``, the new output layers for the new task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from finetunekit.errors import ArgumentTypeError, ConfigError, HeadError, format_error
from finetunekit.heads.tasks import TASKS, default_activation, default_loss

__all__ = ["HeadReplacer", "POOLINGS"]

POOLINGS = ("avg", "max", "flatten", "none")


class HeadReplacer:
    """The new output layers put on top of the backbone's features.

    Spatial features are pooled, optional hidden ``Dense`` layers follow (each
    with dropout), then the output layer sized from the data. The task picks
    the activation and loss: softmax + categorical cross-entropy (multiclass),
    sigmoid + binary cross-entropy (binary, multilabel), linear + mean squared
    error (regression).

    Args:
        num_classes: ``"auto"`` (from the data) or the number of outputs; an
            explicit number must agree with the data.
        hidden_units: sizes of hidden ``Dense`` layers, e.g. ``(1024,)``.
        dropout: dropout rate before each ``Dense`` layer, in [0, 1).
        pooling: ``"avg"``, ``"max"``, ``"flatten"`` or ``"none"``, for
            spatial (4-D) or sequence (3-D) features.
        hidden_activation: activation of the hidden layers.
        activation: ``"auto"`` (from the task) or a Keras activation name.
        loss: ``"auto"`` (from the task) or a Keras loss name.
        label_smoothing: label smoothing for the classification losses.

    Example:
        >>> import finetunekit as ftk
        >>> head = ftk.HeadReplacer(num_classes="auto", hidden_units=(64,), dropout=0.2)
        >>> head.get_config()["hidden_units"]
        [64]
    """

    def __init__(
        self,
        num_classes: int | str = "auto",
        hidden_units: Sequence[int] = (),
        dropout: float = 0.2,
        *,
        pooling: str = "avg",
        hidden_activation: str = "relu",
        activation: str = "auto",
        loss: str = "auto",
        label_smoothing: float = 0.0,
    ) -> None:
        if num_classes != "auto" and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise HeadError(
                format_error(
                    "num_classes must be 'auto' or a positive int",
                    expected="'auto' or an int >= 1",
                    received={"num_classes": num_classes},
                    fix="Leave num_classes='auto' to size the output from the data",
                )
            )
        if isinstance(hidden_units, int) or not all(
            isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in hidden_units
        ):
            raise HeadError(
                format_error(
                    "hidden_units must be a sequence of positive ints",
                    expected="e.g. () or (1024,) or (256, 128)",
                    received={"hidden_units": hidden_units},
                    fix="Wrap a single size in a tuple: hidden_units=(1024,)",
                )
            )
        if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
            raise HeadError(
                format_error(
                    "dropout must be in [0, 1)",
                    expected="a float 0 <= dropout < 1",
                    received={"dropout": dropout},
                    fix="Use dropout=0.2, or 0 for none",
                )
            )
        if pooling not in POOLINGS:
            raise HeadError(
                format_error(
                    "Unknown pooling",
                    expected=f"one of {POOLINGS}",
                    received={"pooling": pooling},
                    fix="Use pooling='avg'",
                )
            )
        if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise HeadError(
                format_error(
                    "label_smoothing must be in [0, 1)",
                    expected="a float such as 0.1",
                    received={"label_smoothing": label_smoothing},
                    fix="Use label_smoothing=0.0 to switch it off",
                )
            )
        _check_keras_name("activation", activation, keras.activations.get)
        _check_keras_name("hidden_activation", hidden_activation, keras.activations.get)
        _check_keras_name("loss", loss, keras.losses.get)
        self.num_classes = num_classes
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.dropout = float(dropout)
        self.pooling = pooling
        self.hidden_activation = hidden_activation
        self.activation = activation
        self.loss = loss
        self.label_smoothing = float(label_smoothing)

    # ------------------------------------------------------------------ resolution
    def output_units(self, task: str, data_outputs: int) -> int:
        """Returns the output width for ``task``, checking ``num_classes`` against the data.

        Args:
            task: the data's task.
            data_outputs: what the data needs: K classes (multiclass,
                multilabel), 2 (binary), D targets (regression).

        Raises:
            HeadError: when an explicit ``num_classes`` contradicts the data.
        """
        if task not in TASKS:
            raise HeadError(
                format_error(
                    "Unknown task",
                    expected=f"one of {TASKS}",
                    received={"task": task},
                    fix="Let DatasetAdapter infer the task",
                )
            )
        if self.num_classes != "auto" and self.num_classes != data_outputs:
            what = "targets" if task == "regression" else "classes"
            raise HeadError(
                format_error(
                    f"num_classes contradicts the data, which has {data_outputs} {what}",
                    expected=f"num_classes={data_outputs} or 'auto'",
                    received={"num_classes": self.num_classes},
                    fix="Pass num_classes='auto', or fix the labels (DatasetAdapter "
                    "class_names=[...] fixes the class list)",
                )
            )
        return 1 if task == "binary" else data_outputs

    def make_loss(self, task: str) -> Any:
        """Returns the Keras loss for ``task`` (or the explicit ``loss``)."""
        if self.loss != "auto":
            return keras.losses.get(self.loss)
        return default_loss(task, self.label_smoothing)

    def build(self, features: Any, *, task: str, units: int) -> Any:
        """Adds the head layers on the symbolic ``features``; returns the output tensor.

        Layers are named ``head_pool``, ``head_dropout_<i>``, ``head_dense_<i>``,
        ``head_output_dropout`` and ``head_output``. The output is float32.
        """
        x = features
        rank = len(x.shape)
        if rank > 2 and self.pooling != "none":
            if self.pooling == "flatten":
                x = keras.layers.Flatten(name="head_pool")(x)
            elif rank == 4:
                pool = (
                    keras.layers.GlobalAveragePooling2D
                    if self.pooling == "avg"
                    else keras.layers.GlobalMaxPooling2D
                )
                x = pool(name="head_pool")(x)
            elif rank == 3:
                pool = (
                    keras.layers.GlobalAveragePooling1D
                    if self.pooling == "avg"
                    else keras.layers.GlobalMaxPooling1D
                )
                x = pool(name="head_pool")(x)
            else:
                x = keras.layers.Flatten(name="head_pool")(x)
        for i, width in enumerate(self.hidden_units):
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, name=f"head_dropout_{i}")(x)
            x = keras.layers.Dense(
                width, activation=self.hidden_activation, name=f"head_dense_{i}"
            )(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name="head_output_dropout")(x)
        activation = default_activation(task) if self.activation == "auto" else self.activation
        return keras.layers.Dense(
            units, activation=activation, dtype="float32", name="head_output"
        )(x)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Returns the JSON-serialisable arguments."""
        return {
            "num_classes": self.num_classes,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "pooling": self.pooling,
            "hidden_activation": self.hidden_activation,
            "activation": self.activation,
            "loss": self.loss,
            "label_smoothing": self.label_smoothing,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HeadReplacer:
        """Rebuilds a head from :meth:`get_config` output; unknown keys raise ``ConfigError``."""
        valid = set(cls(num_classes="auto").get_config())
        unknown = set(config) - valid
        if unknown:
            raise ConfigError(
                format_error(
                    f"Unknown keys in the HeadReplacer config: {sorted(unknown)}",
                    expected=f"only {sorted(valid)}",
                    received={"config": config},
                    fix="Remove the unknown keys",
                )
            )
        config = dict(config)
        num_classes = config.pop("num_classes", "auto")
        return cls(num_classes, **config)

    def __repr__(self) -> str:
        return (
            f"HeadReplacer(num_classes={self.num_classes!r}, hidden_units={self.hidden_units!r}, "
            f"dropout={self.dropout!r})"
        )


def _check_keras_name(arg: str, value: Any, getter: Any) -> None:
    if value == "auto":
        return
    if not isinstance(value, str):
        raise ArgumentTypeError(
            format_error(
                f"{arg} must be a name",
                expected="'auto' or a Keras name string",
                received={arg: value},
                fix=f"Pass {arg}='auto'",
            )
        )
    try:
        getter(value)
    except (ValueError, TypeError, KeyError) as exc:
        raise HeadError(
            format_error(
                f"Unknown {arg} {value!r} ({str(exc)[:100]})",
                expected=f"'auto' or a Keras {arg.replace('hidden_', '')} name",
                received={arg: value},
                fix=f"Use {arg}='auto'",
            )
        ) from exc
