"""Discriminative learning rates: one Keras optimizer per layer group.

Keras optimizers have one learning rate for every variable. Fine-tuning
trains the layers closest to the input with smaller rates than the top of
the backbone and the new head. :class:`DiscriminativeOptimizer` is a small
``keras.optimizers.Optimizer`` that owns several ordinary Keras optimizers
(one per group, each with its own rate or schedule) and sends each
variable's gradient to its group's optimizer: the update rules are Keras'
own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from finetunekit import _compat

__all__ = ["DiscriminativeOptimizer", "group_rates"]


def group_rates(low: float, high: float, groups: int) -> list[float]:
    """Geometrically spaced rates from ``high`` (top group) down to ``low`` (deepest).

    Examples:
        >>> group_rates(1e-5, 1e-3, 3)
        [0.001, 0.0001, 1e-05]
    """
    if groups <= 1:
        return [float(high)]
    ratio = (low / high) ** (1.0 / (groups - 1))
    rates = [float(high * ratio**i) for i in range(groups)]
    rates[-1] = float(low)
    return [float(f"{r:.12g}") for r in rates]


class _Routes:
    """``{variable key: optimizer index}``, kept out of Keras/TF attribute tracking."""

    def __init__(self) -> None:
        self.table: dict[Any, int] = {}


@keras.saving.register_keras_serializable(package="finetunekit")
class DiscriminativeOptimizer(keras.optimizers.Optimizer):
    """Routes each variable to one of several Keras optimizers.

    The first optimizer (index 0) is the default: it trains every variable
    that ``assignments`` does not name (the head). Each inner optimizer
    applies its own update rule, learning rate (or schedule), weight decay,
    clipping and gradient accumulation; their step counters follow this
    optimizer's ``iterations``, so a schedule of a group that starts
    training later (gradual unfreezing) is at the same step as the others.

    ``learning_rate`` reads (and a Keras callback such as
    ``ReduceLROnPlateau`` writes) the default optimizer's rate; setting it
    scales every group's rate by the same factor.

    Args:
        optimizers: the inner optimizers, default first. Not yet built.
        assignments: ``{variable path: optimizer index}``.
        name: the optimizer's name.

    Examples:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
        >>> opt = DiscriminativeOptimizer(
        ...     [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.01)],
        ...     {net.layers[0].kernel.path: 1})
        >>> round(float(opt.learning_rate), 6)
        0.1
    """

    def __init__(
        self,
        optimizers: Sequence[Any],
        assignments: dict[str, int] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("learning_rate", None)  # read from the default optimizer
        inner = [keras.optimizers.deserialize(o) if isinstance(o, dict) else o for o in optimizers]
        if not inner:
            raise ValueError("DiscriminativeOptimizer needs at least one optimizer")
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self._untrack_variable(self._learning_rate)  # type: ignore[has-type]
        self._learning_rate = None
        self.inner_optimizers = inner
        self.assignments = {str(k): int(v) for k, v in (assignments or {}).items()}
        if any(not 0 <= v < len(inner) for v in self.assignments.values()):
            raise ValueError(f"assignments name an optimizer index beyond {len(inner) - 1}")
        self._routes = _Routes()

    # ------------------------------------------------------------------ routing
    def _index(self, variable: Any) -> int:
        key = self._var_key(variable)
        routes = self._routes.table
        if key not in routes:
            routes[key] = self.assignments.get(getattr(variable, "path", ""), 0)
        return routes[key]

    def _split(self, values: Sequence[Any], variables: Sequence[Any]) -> list[tuple[list, list]]:
        parts: list[tuple[list, list]] = [([], []) for _ in self.inner_optimizers]
        for value, variable in zip(values, variables, strict=True):
            part = parts[self._index(variable)]
            part[0].append(value)
            part[1].append(variable)
        return parts

    def build(self, variables: Sequence[Any]) -> None:
        variables = list(variables)
        super().build(variables)
        for optimizer, (_, group) in zip(
            self.inner_optimizers, self._split(variables, variables), strict=True
        ):
            optimizer.build(group)

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        if len(grads) == 0:
            return
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:  # type: ignore[has-type]
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True  # type: ignore[has-type]
        self._check_variables_are_known(trainable_variables)
        for optimizer, (group_grads, group_vars) in zip(
            self.inner_optimizers, self._split(list(grads), trainable_variables), strict=True
        ):
            if group_vars:
                _compat.set_optimizer_iterations(optimizer, self._iterations)
                optimizer.apply(group_grads, group_vars)
        self._iterations.assign_add(1)

    def finalize_variable_values(self, var_list: Sequence[Any]) -> None:
        var_list = list(var_list)
        for optimizer, (_, group) in zip(
            self.inner_optimizers, self._split(var_list, var_list), strict=True
        ):
            if group:
                optimizer.finalize_variable_values(group)

    # ------------------------------------------------------------------ state
    @property
    def variables(self) -> list[Any]:
        """This optimizer's step counter, then every inner optimizer's variables."""
        out = list(self._variables)
        for optimizer in self.inner_optimizers:
            out.extend(optimizer.variables)
        return out

    @property
    def learning_rate(self) -> Any:
        """The default (head) optimizer's current learning rate."""
        return self.inner_optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        head = self.inner_optimizers[0]
        if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or callable(value):
            raise TypeError(
                "DiscriminativeOptimizer: set a schedule per group when building it, "
                "not through learning_rate"
            )
        old = float(keras.ops.convert_to_numpy(head.learning_rate))
        factor = float(value) / old if old else 0.0
        for optimizer in self.inner_optimizers:
            current = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            optimizer.learning_rate = current * factor if old else float(value)

    @property
    def learning_rates(self) -> list[float]:
        """The current learning rate of each inner optimizer (default first)."""
        return [float(keras.ops.convert_to_numpy(o.learning_rate)) for o in self.inner_optimizers]

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "optimizers": [keras.optimizers.serialize(o) for o in self.inner_optimizers],
            "assignments": dict(self.assignments),
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> DiscriminativeOptimizer:
        config = dict(config)
        optimizers = [
            keras.optimizers.deserialize(o, custom_objects=custom_objects)
            for o in config.pop("optimizers")
        ]
        return cls(optimizers, **config)
