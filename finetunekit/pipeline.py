"""``FineTuner``: the immutable recipe that chains the five steps."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from finetunekit.backbones import Backbone
from finetunekit.backbones.augmentation import check_augment_inputs
from finetunekit.errors import (
    ArgumentTypeError,
    ConfigError,
    DataError,
    TrainerError,
    check_config_keys,
    format_error,
)
from finetunekit.evaluation import Evaluator
from finetunekit.heads import HeadReplacer
from finetunekit.result import FineTuneResult
from finetunekit.training import Trainer
from finetunekit.training.compute import precision_scope
from finetunekit.training.lr_finder import LRFinderResult
from finetunekit.training.methods import check_data

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.tasks.base import Task
    from finetunekit.training.engine import BuiltModel

__all__ = ["FineTuner", "Prepared"]

_CONFIG_KEYS = {"format", "version", "backbone", "head", "trainer", "evaluator", "validation"}


@dataclass(frozen=True)
class Prepared:
    """The checked recipe's data, as :meth:`FineTuner.prepare` returns it.

    Attributes:
        train: the training ``DatasetAdapter`` (without a validation fraction).
        validation: the validation ``DatasetAdapter`` or ``None``.
        task: the :class:`~finetunekit.Task` of the data.
        units: the width of the output layer.
        trainer: the :class:`~finetunekit.Trainer` that runs: the recipe's, with
            the deprecated ``HeadReplacer(label_smoothing=...)`` and
            ``Backbone.from_preset(lora_rank=...)`` moved onto it.
    """

    train: Any
    validation: Any
    task: Task
    units: int
    trainer: Trainer


class FineTuner:
    """The fine-tuning recipe: data, backbone, head, trainer and evaluator.

    Every ``with_*`` method returns a NEW ``FineTuner``; the recipe itself is
    never modified, so re-running a notebook cell is safe. ``fit()`` builds
    the model, trains it and returns a :class:`FineTuneResult`.

    Examples:
        >>> import numpy as np, finetunekit as ftk
        >>> x = np.random.randint(0, 255, (40, 32, 32, 3), "uint8")
        >>> y = np.arange(40) % 2
        >>> tuner = (ftk.FineTuner()
        ...          .with_data(ftk.DatasetAdapter.from_arrays(x, y), validation=0.25)
        ...          .with_backbone(ftk.Backbone("mobilenet_v3_small", weights=None,
        ...                                      input_shape=(32, 32, 3)))
        ...          .with_head(ftk.HeadReplacer())
        ...          .with_trainer(ftk.Trainer(epochs=1, verbose=0)))
        >>> result = tuner.fit()
        >>> result.predict(x[:2]).shape
        (2, 1)
    """

    def __init__(self) -> None:
        self._data: Any = None
        self._validation: Any = None
        self._backbone: Backbone | None = None
        self._head = HeadReplacer()
        self._trainer = Trainer()
        self._trainer_given = False  # with_trainer called: the task's default_trainer is not used
        self._evaluator = Evaluator()

    # ------------------------------------------------------------------ recipe
    def _replace(self, **changes: Any) -> FineTuner:
        new = copy.copy(self)
        for key, value in changes.items():
            setattr(new, f"_{key}", value)
        return new

    def with_data(self, data: Any, validation: Any = None) -> FineTuner:
        """Returns a new recipe with training data and optional validation.

        Args:
            data: a ``DatasetAdapter``, an ``(x, y)`` tuple or a ``tf.data`` of ``(x, y)``.
            validation: a ``DatasetAdapter`` (or ``(x, y)``), a fraction in
                (0, 1) split off ``data`` (stratified), or ``None``.
        """
        from finetunekit.data import as_adapter

        adapter = as_adapter(data)
        if validation is not None and not isinstance(validation, float):
            if isinstance(validation, (int, bool)):
                raise DataError(
                    format_error(
                        "validation must be a fraction, a dataset or None",
                        expected="a float in (0, 1), a DatasetAdapter or None",
                        received={"validation": validation},
                        fix="Pass validation=0.2",
                    )
                )
            validation = as_adapter(
                validation, task=adapter.task, class_names=adapter.class_names or None
            )
        elif isinstance(validation, float) and not 0.0 < validation < 1.0:
            raise DataError(
                format_error(
                    "The validation fraction must be between 0 and 1",
                    expected="a float in (0, 1), e.g. 0.2",
                    received={"validation": validation},
                    fix="Pass validation=0.2",
                )
            )
        return self._replace(data=adapter, validation=validation)

    def with_backbone(self, backbone: Backbone | str) -> FineTuner:
        """Returns a new recipe with ``backbone`` (a ``Backbone`` or a name)."""
        if isinstance(backbone, str):
            backbone = Backbone(backbone)
        if not isinstance(backbone, Backbone):
            raise ArgumentTypeError(
                format_error(
                    "with_backbone needs a Backbone or a name",
                    expected="finetunekit.Backbone or a string such as 'vgg16'",
                    received={"backbone": backbone},
                    fix="Wrap a Keras model with Backbone.from_model(model)",
                )
            )
        return self._replace(backbone=backbone)

    def with_head(self, head: HeadReplacer | int) -> FineTuner:
        """Returns a new recipe with ``head`` (a ``HeadReplacer`` or a class count)."""
        if isinstance(head, int) and not isinstance(head, bool):
            head = HeadReplacer(num_classes=head)
        if not isinstance(head, HeadReplacer):
            raise ArgumentTypeError(
                format_error(
                    "with_head needs a HeadReplacer or a class count",
                    expected="finetunekit.HeadReplacer or an int",
                    received={"head": head},
                    fix="Pass HeadReplacer(num_classes='auto')",
                )
            )
        return self._replace(head=head)

    def with_trainer(self, trainer: Trainer) -> FineTuner:
        """Returns a new recipe with ``trainer``."""
        if not isinstance(trainer, Trainer):
            raise ArgumentTypeError(
                format_error(
                    "with_trainer needs a Trainer",
                    expected="finetunekit.Trainer(...)",
                    received={"trainer": trainer},
                    fix="Pass Trainer(epochs=5)",
                )
            )
        return self._replace(trainer=trainer, trainer_given=True)

    def with_evaluator(self, evaluator: Evaluator) -> FineTuner:
        """Returns a new recipe with ``evaluator``."""
        if not isinstance(evaluator, Evaluator):
            raise ArgumentTypeError(
                format_error(
                    "with_evaluator needs an Evaluator",
                    expected="finetunekit.Evaluator(...)",
                    received={"evaluator": evaluator},
                    fix="Pass Evaluator()",
                )
            )
        return self._replace(evaluator=evaluator)

    @property
    def data(self) -> Any:
        """The training ``DatasetAdapter`` (or ``None``)."""
        return self._data

    @property
    def backbone(self) -> Backbone | None:
        """The ``Backbone`` (or ``None``)."""
        return self._backbone

    @property
    def head(self) -> HeadReplacer:
        """The ``HeadReplacer``."""
        return self._head

    @property
    def trainer(self) -> Trainer:
        """The ``Trainer``."""
        return self._trainer

    @property
    def evaluator(self) -> Evaluator:
        """The ``Evaluator``."""
        return self._evaluator

    # ------------------------------------------------------------------ fit
    def prepare(self) -> Prepared:
        """Checks the whole recipe before anything is built and resolves the data.

        Every check ``fit`` and ``find_learning_rate`` make before building:
        data and backbone present, the validation split, compatible data, the
        backbone's input, augmentation, the head against the task, the
        monitored metric, class weights and label smoothing against the data,
        ``unfreeze`` against a known backbone.

        Returns:
            A :class:`Prepared`: the training and validation adapters, the task
            and the output width.

        Raises:
            FineTuneError: the first problem found (see docs/reliability.md).

        Examples:
            >>> import numpy as np, keras, finetunekit as ftk
            >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            >>> tuner = (ftk.FineTuner().with_data((np.zeros((8, 4)), [0, 1] * 4))
            ...          .with_backbone(ftk.Backbone.from_model(net)))
            >>> prepared = tuner.prepare()
            >>> prepared.task.name, prepared.units, prepared.validation is None
            ('binary', 1, True)
        """
        from finetunekit.data import check_compatible

        if self._data is None:
            raise ConfigError(
                format_error(
                    "The recipe has no data",
                    expected="training data set with with_data(...)",
                    received={"data": None},
                    fix="Call .with_data(DatasetAdapter.from_arrays(x, y))",
                )
            )
        if self._backbone is None:
            raise ConfigError(
                format_error(
                    "The recipe has no backbone",
                    expected="a backbone set with with_backbone(...)",
                    received={"backbone": None},
                    fix="Call .with_backbone('mobilenet_v3_small') or "
                    ".with_backbone(Backbone(name, weights=...))",
                )
            )
        train, validation = self._data, self._validation
        if isinstance(validation, float):
            train, validation = train.split(validation, seed=self._trainer.seed or 0)
        task = train.task_object
        trainer = self._effective_trainer(task)
        task.check_recipe(train, validation, head=self._head, trainer=trainer)
        if validation is not None:
            check_compatible(train, validation)
        self._backbone.check_input(tuple(train.input_shape), str(train.input_dtype))
        check_augment_inputs(  # Trainer(augment=...) needs images or clips
            self._trainer.augment,
            tuple(train.input_shape),
            str(train.input_dtype),
            getattr(self._backbone, "input_shape", None),
        )
        units = self._head.output_units(task, task.size(train.encoding))
        metric_names = [m.name for m in task.metrics(train.num_classes)]
        trainer.check_monitor(metric_names, validation is not None)
        check_data(trainer, train)  # class_weight / label_smoothing fit the task
        known = self._backbone.known_model()  # from_model backbones: check unfreeze now
        if known is not None:
            trainer.check_backbone(known)
        return Prepared(train=train, validation=validation, task=task, units=units, trainer=trainer)

    def _base_trainer(self, task: Any = None) -> Trainer:
        """The Trainer given by ``with_trainer``, else the task's ``default_trainer()`` or ``Trainer()``."""
        if self._trainer_given or task is None:
            return self._trainer
        return task.default_trainer() or self._trainer

    def _effective_trainer(self, task: Any = None) -> Trainer:
        """The Trainer, with the settings other steps still accept (deprecated) moved onto it.

        Without ``with_trainer``, the task's ``default_trainer()`` where it has one.
        """
        trainer = self._base_trainer(task)
        moved: dict[str, Any] = {}
        for owner, arg, value in (
            ("HeadReplacer", "label_smoothing", self._head.label_smoothing),
            ("Backbone.from_preset", "lora_rank", getattr(self._backbone, "lora_rank", None)),
        ):
            if not value or (arg == "lora_rank" and not trainer.fine_tune_epochs):
                continue  # (LoRA without a phase 2 trains nothing: nothing to move)
            current = getattr(trainer, arg)
            if current and current != value:
                raise TrainerError(
                    format_error(
                        f"{arg} is set twice: {owner}({arg}={value!r}) and "
                        f"Trainer({arg}={current!r})",
                        expected=f"{arg} set once, on the Trainer",
                        received={arg: value},
                        fix=f"Pass Trainer({arg}=...) only",
                    )
                )
            moved[arg] = value
        return trainer.replace(**moved) if moved else trainer

    def fit(self) -> FineTuneResult:
        """Builds the model, fine-tunes it, and returns a :class:`FineTuneResult`.

        Every argument is checked first; only then are the backbone weights
        loaded and the model built and trained.
        """
        from finetunekit.training import engine

        # first: TensorFlow allows MultiWorkerMirroredStrategy only before it runs anything
        self._trainer.resolved_strategy()
        prepared = self.prepare()
        train, validation, task = prepared.train, prepared.validation, prepared.task
        trainer = prepared.trainer
        if trainer.seed is not None:
            keras.utils.set_random_seed(trainer.seed)
        start = time.perf_counter()
        # the Keras dtype policy and the Trainer's tf.distribute strategy while building
        with precision_scope(trainer.precision), trainer.scope():
            built = self.build_model(train, prepared.units)
        build_seconds = time.perf_counter() - start
        num_classes = train.num_classes
        run = engine.run(
            trainer,
            built,
            engine.TrainingData(adapter=train),
            engine.TrainingData(adapter=validation) if validation is not None else None,
            metrics=lambda: task.metrics(num_classes),
        )
        model, info = built.result_model, dict(built.info)
        timings = {"build": build_seconds, **run.timings}
        timings["total"] = time.perf_counter() - start
        params = {"total": int(model.count_params())}
        params.update({f"trainable_{k}": v for k, v in run.trainable_params.items()})
        try:
            recipe: dict[str, Any] | None = self.get_config()
        except ConfigError:
            recipe = None
        info["num_train"] = len(train)
        info.update(run.info)  # "feature_cache": {"used", "reason", "bytes", "spilled"}
        if run.resumed_from is not None:  # continued from Trainer(checkpoint_dir=...)
            info["resumed_from"] = run.resumed_from
        info["num_validation"] = len(validation) if validation is not None else 0
        return FineTuneResult(
            model=model,
            task=task.name,
            task_config=task.get_config(),
            class_names=list(train.class_names),
            history=run.history,
            timings=timings,
            params=params,
            info=info,
            recipe=recipe,
            evaluator_config=self._evaluator.get_config(),
        )

    def find_learning_rate(
        self,
        *,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        steps: int = 100,
        phase: int | None = None,
        smoothing: float = 0.98,
        diverge: float = 4.0,
    ) -> LRFinderResult:
        """Sweeps the learning rate exponentially on a throwaway copy and suggests one.

        Checks the recipe as :meth:`fit` does, builds a fresh model the same
        way, and trains it on up to ``steps`` batches of the training data
        (the Trainer's optimizer, batch size, precision and seed) while the
        rate grows from ``min_lr`` to ``max_lr``; stops once the smoothed
        loss exceeds ``diverge`` x its best. The copy is discarded: the
        recipe, the global random state and later ``fit()`` runs are as if
        the finder had never run.

        Args:
            min_lr: the first rate.
            max_lr: the last rate.
            steps: batches in the sweep (at least 5).
            phase: ``1`` sweeps the head on the frozen backbone, ``2`` with
                the backbone unfrozen as the Trainer's phase 2 (from a fresh
                head, so it is only a rough guide for phase 2). Default: the
                Trainer's first phase (1 unless ``epochs=0``).
            smoothing: EMA factor of the smoothed loss.
            diverge: divergence threshold.

        Returns:
            An :class:`~finetunekit.training.lr_finder.LRFinderResult`:
            ``suggestion`` is the steepest-descent rate; ``min_loss_lr_over_10``
            the "minimum / 10" rule; ``plot()`` draws the curve.

        Examples:
            >>> import numpy as np, keras, finetunekit as ftk
            >>> keras.utils.set_random_seed(0)
            >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
            >>> net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
            >>> tuner = (ftk.FineTuner().with_data((x, (x[:, 0] > 0).astype(int)))
            ...          .with_backbone(ftk.Backbone.from_model(net))
            ...          .with_trainer(ftk.Trainer(batch_size=64, seed=0, verbose=0)))
            >>> finder = tuner.find_learning_rate(min_lr=1e-4, max_lr=100.0, steps=50)
            >>> 1e-4 < finder.suggestion <= finder.min_loss_lr < 100.0
            True
        """
        from finetunekit.training.lr_finder import find_learning_rate

        return find_learning_rate(
            self,
            min_lr=min_lr,
            max_lr=max_lr,
            steps=steps,
            phase=phase,
            smoothing=smoothing,
            diverge=diverge,
        )

    def build_model(self, train: Any, units: int) -> BuiltModel:
        """Builds (untrained) the full model for ``train``: inputs -> adaptation -> backbone -> head.

        Args:
            train: the training ``DatasetAdapter`` (its inputs' shape, dtype and range).
            units: the output width (``prepare().units``).

        Returns:
            A :class:`~finetunekit.training.engine.BuiltModel`: the model, the
            nested backbone, the tensor the frozen phase may cache (the head's
            pooled features), the task, its loss and facts about the build.
        """
        from finetunekit.training.engine import BuiltModel

        assert self._backbone is not None
        from finetunekit.data.decode import model_inputs

        task = train.task_object
        own = task.build_model(
            self._backbone,
            train,
            head=self._head,
            trainer=self._effective_trainer(task),
            units=units,
        )
        if own is not None:  # detection, generative text: the task builds the whole model
            return own  # type: ignore[no-any-return]
        # a folder's model takes images of any size and resizes them itself (data/decode.py)
        inputs, raw, input_info = model_inputs(train)
        value_range = None
        if str(train.input_dtype).startswith("float"):
            sample = np.asarray(train.sample_inputs(256), dtype="float64")
            value_range = (float(sample.min()), float(sample.max()))
        augment = self._trainer.augment  # only passed when set: TextBackbone.build lacks it
        built = self._backbone.build(
            raw,
            input_dtype=str(train.input_dtype),
            value_range=value_range,
            **({"augment": augment} if augment is not None else {}),
        )
        info = {**built.info, **input_info}
        if augment is not None:
            info["augmentation"] = augment
        target_stats = None
        if not task.has_classes and self._head.scale_targets:
            from finetunekit.heads.scaling import target_statistics

            target_stats = target_statistics(train.targets())
            info["target_scaling"] = {"mean": target_stats[0], "std": target_stats[1]}
        head = self._head.build_head(
            built.features, task=task, units=units, target_stats=target_stats
        )
        model = keras.Model(inputs, head.outputs, name=f"finetuned_{_safe(self._backbone.name)}")
        built_model = BuiltModel(
            model=model,
            backbone_model=built.model,
            features=head.pooled,
            task=task,
            loss=self._head.make_loss(task, target_stats[1] if target_stats else None),
            info=info,
            lora_targets=built.lora_targets,
        )
        # the task may train another model around it (embeddings: a pair wrapper)
        trained: BuiltModel = task.training_model(built_model, train)
        return trained

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """Returns the JSON-serialisable recipe (no data, no arrays, no weights).

        A validation fraction is kept; data and validation datasets are not.
        Without ``with_trainer``, the trainer saved is the one ``fit`` would
        use (the data's task may have its own default, see ``Task.default_trainer``).
        """
        trainer = self._base_trainer(self._data.task_object if self._data is not None else None)
        return {
            "format": "finetunekit.FineTuner",
            "version": 1,
            "backbone": self._backbone.get_config() if self._backbone else None,
            "head": self._head.get_config(),
            "trainer": trainer.get_config(),
            "evaluator": self._evaluator.get_config(),
            "validation": self._validation if isinstance(self._validation, float) else None,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FineTuner:
        """Rebuilds a recipe from :meth:`get_config`; unknown keys raise ``ConfigError``.

        Examples:
            >>> import finetunekit as ftk
            >>> cfg = ftk.FineTuner().with_head(3).get_config()
            >>> ftk.FineTuner.from_config(cfg).head.num_classes
            3
        """
        if not isinstance(config, dict):
            raise ArgumentTypeError(
                format_error(
                    "from_config needs a dict",
                    expected="the dict returned by FineTuner.get_config()",
                    received={"config": config},
                    fix="Load the JSON with json.load first",
                )
            )
        check_config_keys("FineTuner", config, _CONFIG_KEYS, shown=sorted(config))
        tuner = cls()
        if config.get("backbone"):
            tuner = tuner._replace(backbone=Backbone.from_config(config["backbone"]))
        if config.get("head"):
            tuner = tuner._replace(head=HeadReplacer.from_config(config["head"]))
        if config.get("trainer"):
            tuner = tuner._replace(trainer=Trainer.from_config(config["trainer"]))
        if config.get("evaluator"):
            tuner = tuner._replace(evaluator=Evaluator.from_config(config["evaluator"]))
        if config.get("validation") is not None:
            tuner = tuner._replace(validation=float(config["validation"]))
        return tuner

    def __repr__(self) -> str:
        return (
            f"FineTuner(data={self._data!r}, backbone={self._backbone!r}, head={self._head!r}, "
            f"trainer={self._trainer!r})"
        )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
