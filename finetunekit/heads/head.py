"""Step 3: ``HeadReplacer``, the new output layers for the new task."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import keras

from finetunekit.checks import check_bool, check_choice, check_int, check_number, fail
from finetunekit.errors import (
    ArgumentTypeError,
    FineTuneError,
    HeadError,
    format_error,
)
from finetunekit.heads.scaling import TargetScaler
from finetunekit.heads.temporal import TEMPORAL_MODES, build_temporal
from finetunekit.settings import Settings, setting
from finetunekit.tasks.base import Task
from finetunekit.tasks.base import get as get_task

__all__ = ["HeadReplacer", "HeadTensors", "NORMALIZATIONS", "POOLINGS"]

POOLINGS = ("avg", "max", "flatten", "none")
NORMALIZATIONS = ("layer", "batch")


def _num_classes(value: Any) -> int | str:
    if isinstance(value, str) and value == "auto":
        return "auto"
    return check_int(  # type: ignore[no-any-return]
        "num_classes",
        value,
        minimum=1,
        error=HeadError,
        expected="'auto' or an int >= 1",
        fix="Leave num_classes='auto' to size the output from the data",
    )


def _hidden_units(value: Any) -> tuple[int, ...]:
    if isinstance(value, (int, str)) or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in value
    ):
        raise fail(
            HeadError,
            "hidden_units must be a sequence of positive ints",
            "hidden_units",
            value,
            expected="e.g. () or (1024,) or (256, 128)",
            fix="Wrap a single size in a tuple: hidden_units=(1024,)",
        )
    return tuple(int(u) for u in value)


def _label_smoothing(value: Any) -> float:
    number = check_number(
        "label_smoothing",
        value,
        minimum=0,
        maximum=1,
        max_open=True,
        error=HeadError,
        expected="a float such as 0.1",
        fix="Use label_smoothing=0.0 to switch it off",
    )
    if number:
        warnings.warn(
            "HeadReplacer(label_smoothing=...) is deprecated: pass "
            "Trainer(label_smoothing=...) (label smoothing is a training setting)",
            DeprecationWarning,
            stacklevel=4,
        )
    return number  # type: ignore[no-any-return]


def _normalize(value: Any) -> str | None:
    if value is None:
        return None
    return check_choice(  # type: ignore[no-any-return]
        "normalize",
        value,
        NORMALIZATIONS,
        error=HeadError,
        what="Unknown feature normalisation",
        expected=f"None or one of {NORMALIZATIONS}",
        fix="Use normalize=None (the default), 'layer' or 'batch'",
    )


def _normalization_layer(kind: str) -> keras.layers.Layer:
    """The parameter-free ``head_norm`` layer: the next ``Dense`` absorbs any scale and shift."""
    if kind == "layer":
        return keras.layers.LayerNormalization(center=False, scale=False, name="head_norm")
    return keras.layers.BatchNormalization(center=False, scale=False, name="head_norm")


def _temporal(value: Any) -> str | None:
    if value is None:
        return None
    return check_choice(  # type: ignore[no-any-return]
        "temporal",
        value,
        TEMPORAL_MODES,
        error=HeadError,
        what="Unknown temporal head",
        expected=f"None or one of {TEMPORAL_MODES}",
        fix="Use temporal='gru' (or 'conv1d') to see the order of frames, 'average' to ignore it",
    )


@dataclass(frozen=True)
class HeadTensors:
    """The symbolic tensors :meth:`HeadReplacer.build_head` made.

    Attributes:
        pooled: the features after the head's parameter-free pooling (the
            features themselves when the head pools nothing, or with a
            temporal head).
        outputs: the head's output.
    """

    pooled: Any
    outputs: Any


@dataclass(frozen=True, eq=False, repr=False)
class HeadReplacer(Settings):
    """The new output layers put on top of the backbone's features.

    Spatial features are pooled, optionally normalised (``normalize``),
    optional hidden ``Dense`` layers follow (each with dropout), then the
    output layer sized from the data. The task picks
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
        normalize: how the pooled features are normalised before the first
            ``Dense`` (layer ``head_norm``, no trainable weights): ``None``
            (default: the features as they are), ``"layer"`` (each example's
            features to mean 0 and variance 1, whatever their scale) or
            ``"batch"`` (each feature standardised with batch statistics,
            moving averages at inference). Neither was better on every
            benchmark, so the default stays ``None``: docs/head.md.
            A single feature is never normalised.
        hidden_activation: activation of the hidden layers.
        activation: ``"auto"`` (from the task) or a Keras activation name.
        loss: ``"auto"`` (from the task) or a Keras loss name.
        label_smoothing: deprecated: pass ``Trainer(label_smoothing=...)``, its
            one home. Still works (``fit`` moves it onto the Trainer).
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
        >>> ftk.HeadReplacer(normalize="layer").get_config()["normalize"]
        'layer'
    """

    num_classes: int | str = setting("auto", kw_only=False, check=_num_classes)
    hidden_units: tuple[int, ...] = setting((), kw_only=False, check=_hidden_units, to_config=list)
    dropout: float = setting(
        0.2,
        kw_only=False,
        check=lambda v: check_number(
            "dropout",
            v,
            minimum=0,
            maximum=1,
            max_open=True,
            error=HeadError,
            expected="a float 0 <= dropout < 1",
            fix="Use dropout=0.2, or 0 for none",
        ),
    )
    pooling: str = setting(
        "avg",
        check=lambda v: check_choice(
            "pooling", v, POOLINGS, error=HeadError, fix="Use pooling='avg'"
        ),
    )
    normalize: str | None = setting(None, check=_normalize)
    hidden_activation: str = setting(
        "relu", check=lambda v: _keras_name("hidden_activation", v, keras.activations.get)
    )
    activation: str = setting(
        "auto", check=lambda v: _keras_name("activation", v, keras.activations.get)
    )
    loss: str = setting("auto", check=lambda v: _keras_name("loss", v, keras.losses.get))
    label_smoothing: float = setting(0.0, check=_label_smoothing)
    temporal: str | None = setting(None, check=_temporal)
    temporal_units: int = setting(
        64,
        check=lambda v: check_int(
            "temporal_units",
            v,
            minimum=1,
            error=HeadError,
            expected="an int >= 1, e.g. 64",
            fix="Pass temporal_units=64",
        ),
    )
    scale_targets: bool = setting(False, check=lambda v: check_bool("scale_targets", v))

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

        See :meth:`build_head`, which also returns where the head's first
        parameter-free part (pooling) ends.
        """
        return self.build_head(features, task=task, units=units, target_stats=target_stats).outputs

    def build_head(
        self,
        features: Any,
        *,
        task: str | Task,
        units: int,
        target_stats: tuple[list[float], list[float]] | None = None,
    ) -> HeadTensors:
        """Adds the head layers on the symbolic ``features``.

        Layers are named ``head_pool``, ``head_norm`` (with ``normalize``),
        ``head_dropout_<i>``, ``head_dense_<i>``,
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

        Returns:
            :class:`HeadTensors`: the output tensor, and ``pooled``: the
            features after the head's parameter-free pooling (the tensor the
            feature cache of the frozen phase stores).
        """
        x = features
        pooled = features
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
            pooled = x  # parameter-free: the frozen phase may cache it
        if self.normalize is not None and x.shape[-1] != 1:  # one feature: its scale is all
            x = _normalization_layer(self.normalize)(x)
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
        return HeadTensors(pooled=pooled, outputs=out)


def _keras_name(arg: str, value: Any, getter: Any) -> str:
    if value == "auto":
        return "auto"
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
    return value
