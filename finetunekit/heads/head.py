"""Step 3: ``HeadReplacer``, the new output layers for the new task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from finetunekit.errors import (
    ArgumentTypeError,
    FineTuneError,
    HeadError,
    check_config_keys,
    format_error,
)
from finetunekit.heads.scaling import TargetScaler
from finetunekit.heads.temporal import TEMPORAL_MODES, build_temporal
from finetunekit.tasks.base import Task
from finetunekit.tasks.base import get as get_task

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
        temporal: for clips (frame-wise backbones): ``"average"`` (mean over
            frames), ``"conv1d"`` or ``"gru"`` (temporal models that see the
            order of frames). ``None``: average for clips, and the usual
            ``pooling`` for other features.
        temporal_units: filters / units of the ``"conv1d"`` / ``"gru"`` layer.
        scale_targets: regression only: standardise the targets for training
            and undo it inside the model (layer ``head_rescale``), so
            ``predict`` returns the original units.

    Examples:
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
        temporal: str | None = None,
        temporal_units: int = 64,
        scale_targets: bool = False,
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
        if temporal is not None and temporal not in TEMPORAL_MODES:
            raise HeadError(
                format_error(
                    "Unknown temporal head",
                    expected=f"None or one of {TEMPORAL_MODES}",
                    received={"temporal": temporal},
                    fix="Use temporal='gru' (or 'conv1d') to see the order of frames, "
                    "'average' to ignore it",
                )
            )
        if (
            isinstance(temporal_units, bool)
            or not isinstance(temporal_units, int)
            or temporal_units < 1
        ):
            raise HeadError(
                format_error(
                    "temporal_units must be a positive int",
                    expected="an int >= 1, e.g. 64",
                    received={"temporal_units": temporal_units},
                    fix="Pass temporal_units=64",
                )
            )
        if not isinstance(scale_targets, bool):
            raise ArgumentTypeError(
                format_error(
                    "scale_targets must be a bool",
                    expected="True or False",
                    received={"scale_targets": scale_targets},
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
        self.temporal = temporal
        self.temporal_units = int(temporal_units)
        self.scale_targets = scale_targets

    # ------------------------------------------------------------------ resolution
    def output_units(self, task: str | Task, data_outputs: int) -> int:
        """Returns the output width for ``task``, checking ``num_classes`` against the data.

        Args:
            task: the data's task (a name or a :class:`~finetunekit.Task`).
            data_outputs: what the data needs (``Task.size``): K classes
                (multiclass, multilabel), 2 (binary), D targets (regression).

        Raises:
            HeadError: when an explicit ``num_classes`` contradicts the data.
        """
        try:
            task = get_task(task)
        except FineTuneError as exc:
            raise HeadError(
                format_error(
                    "Unknown task",
                    expected="a registered task name or a finetunekit.Task",
                    received={"task": task},
                    fix="Let DatasetAdapter infer the task",
                )
            ) from exc
        if self.scale_targets and task.has_classes:
            raise HeadError(
                format_error(
                    f"scale_targets only applies to value targets, but the task is {task.name!r}",
                    expected="scale_targets=False for classification",
                    received={"scale_targets": True, "task": task.name},
                    fix="Drop scale_targets=True, or use float targets (task='regression')",
                )
            )
        if self.num_classes != "auto" and self.num_classes != data_outputs:
            what = "classes" if task.has_classes else "targets"
            raise HeadError(
                format_error(
                    f"num_classes contradicts the data, which has {data_outputs} {what}",
                    expected=f"num_classes={data_outputs} or 'auto'",
                    received={"num_classes": self.num_classes},
                    fix="Pass num_classes='auto', or fix the labels (DatasetAdapter "
                    "class_names=[...] fixes the class list)",
                )
            )
        return task.output_units(data_outputs)

    def make_loss(self, task: str | Task, target_std: list[float] | None = None) -> Any:
        """Returns the Keras loss for ``task`` (or the explicit ``loss``).

        With ``scale_targets`` (value targets), ``target_std`` (from the
        training targets) gives the standardised mean squared error.
        """
        if self.loss != "auto":
            return keras.losses.get(self.loss)
        task = get_task(task)
        std = target_std if self.scale_targets and not task.has_classes else None
        return task.loss(label_smoothing=self.label_smoothing, target_std=std)

    def build(
        self,
        features: Any,
        *,
        task: str | Task,
        units: int,
        target_stats: tuple[list[float], list[float]] | None = None,
    ) -> Any:
        """Adds the head layers on the symbolic ``features``; returns the output tensor.

        Layers are named ``head_pool``, ``head_dropout_<i>``, ``head_dense_<i>``,
        ``head_output_dropout`` and ``head_output`` (clips add
        ``head_frame_pool`` and ``head_temporal_conv`` / ``head_temporal_gru``;
        ``scale_targets`` adds ``head_rescale`` after the output). The output
        is float32.

        Args:
            features: the backbone's symbolic features.
            task: the data's task (a name or a :class:`~finetunekit.Task`): it
                adds the output layer.
            units: output width (see :meth:`output_units`).
            target_stats: ``(mean, std)`` per regression target, needed with
                ``scale_targets=True``.
        """
        x = features
        rank = len(x.shape)
        if rank == 5 or (self.temporal is not None and rank == 3):
            x = build_temporal(x, self.temporal or "average", self.temporal_units, self.pooling)
        elif self.temporal is not None:
            raise HeadError(
                format_error(
                    f"temporal={self.temporal!r} needs clip features (batch, time, ...), but "
                    f"the backbone gives features of shape {tuple(x.shape)}",
                    expected="clips (N, T, H, W, C) through an image backbone",
                    received={"temporal": self.temporal},
                    fix="Pass temporal=None for images, or give the data as clips",
                )
            )
        elif rank > 2 and self.pooling != "none":
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
        task = get_task(task)
        out = task.output_layer(
            x, units, activation=None if self.activation == "auto" else self.activation
        )
        if self.scale_targets and not task.has_classes:
            if target_stats is None:
                raise HeadError(
                    format_error(
                        "scale_targets=True needs the training targets' mean and std",
                        expected="build(..., target_stats=(mean, std))",
                        received={"target_stats": None},
                        fix="Build through FineTuner.fit(), which computes them",
                    )
                )
            mean, std = target_stats
            out = TargetScaler(mean, std, name="head_rescale")(out)
        return out

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
            "temporal": self.temporal,
            "temporal_units": self.temporal_units,
            "scale_targets": self.scale_targets,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HeadReplacer:
        """Rebuilds a head from :meth:`get_config` output; unknown keys raise ``ConfigError``."""
        valid = set(cls(num_classes="auto").get_config())
        check_config_keys("HeadReplacer", config, valid)
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
