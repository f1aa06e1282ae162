"""The ``generative`` task: fine-tune a causal language model on prompt / response pairs.

The data are prompt / response pairs (``DatasetAdapter.from_prompts``); the
model is the preset's own KerasHub ``CausalLM`` (``GPT2CausalLM``,
``Gemma3CausalLM``, ...), loaded from a preset, a Hugging Face folder or a
GGUF file by ``Backbone.from_preset`` -- its language-model head (the tied
token embedding) is kept: there is no new head. :meth:`Generative.build_model`
builds it; ``result.model`` is that ``CausalLM`` (its ``generate`` works).

Training examples (:class:`Packing`, in the ``tf.data`` pipeline): ``[start]
prompt response [end]``, the model reads all but the last token and predicts
each next one; the loss (:class:`ResponseLoss`) is the mean cross-entropy over
the response and end tokens only -- prompt and padding positions carry the
label ``-1`` and are ignored. A prompt too long for ``sequence_length`` loses
its beginning (the end, next to the response, is kept); a response that does
not fit raises before training. Each batch is cut after its longest example
(rounded up to a multiple of 8 tokens), and shuffled batches group examples of
similar length, so short examples do not pay for long ones.

Phases: an LM keeps its head, so there is nothing to train on a frozen
backbone: the task trains in the Trainer's phase 2 only (``Trainer(epochs=0,
fine_tune_epochs=3)``, the task's default Trainer, at its own rate
:data:`DEFAULT_RATE` with ``learning_rate="auto"``). LoRA is on by default:
with ``Trainer(lora_rank=None)`` adapters of rank :data:`DEFAULT_LORA_RANK` go
on the backbone's attention query / value projections (KerasHub's own
targets; ``lora_alpha`` and ``lora_layers`` from the Trainer);
``Generative(lora=False)`` fine-tunes every weight instead.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import keras
import numpy as np

from finetunekit.checks import check_bool
from finetunekit.errors import (
    BackboneError,
    ConfigError,
    DataError,
    EvaluationError,
    HeadError,
    LabelError,
    LoadError,
    TrainerError,
    format_error,
)
from finetunekit.tasks.base import Task, _no_thresholds

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.evaluation.report import EvaluationReport
    from finetunekit.tasks.labels import LabelEncoding

__all__ = [
    "DEFAULT_LORA_RANK",
    "SAMPLERS",
    "Generative",
    "Packing",
    "ResponseLoss",
    "ResponseTokenAccuracy",
    "load_adapters",
    "merge_causal_lm",
]

#: LoRA rank used when ``Trainer(lora_rank=None)`` and ``Generative(lora=True)``.
DEFAULT_LORA_RANK = 8
#: KerasHub sampler names ``result.generate(sampler=...)`` accepts.
SAMPLERS = ("greedy", "top_k", "top_p", "beam", "random", "contrastive")
#: the label of positions the loss ignores (prompt, padding)
IGNORED = -1
PAD_MULTIPLE = 8
#: the phase-2 rate of ``Trainer(learning_rate="auto")`` for a causal LM (LoRA
#: rank 8 on Gemma 3 270M, dates task: see docs/generative.md)
DEFAULT_RATE = 1e-3
#: the epochs of :meth:`Generative.default_trainer`
DEFAULT_EPOCHS = 3
_ADAPTERS_FORMAT = "finetunekit.adapters"


# --------------------------------------------------------------------------- loss / metric


@keras.saving.register_keras_serializable(package="finetunekit")
class ResponseLoss(keras.losses.Loss):
    """Mean next-token cross-entropy over the labelled positions (labels ``>= 0``).

    ``y_true``: ``(B, L)`` int token ids, ``-1`` where nothing is predicted
    (prompt and padding); ``y_pred``: ``(B, L, V)`` logits. The result is the
    sum of ``-log softmax(logits)[label]`` over labelled positions divided by
    their number (0 when a batch has none).

    Examples:
        >>> import numpy as np
        >>> logits = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]]], "float32"))
        >>> round(float(ResponseLoss()(np.array([[-1, 0]]), logits)), 4)  # -log 0.9
        0.1054
    """

    def __init__(self, name: str = "response_loss", **kwargs: Any) -> None:
        kwargs.setdefault("reduction", "sum")
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        labels = ops.cast(y_true, "int32")
        valid = ops.cast(ops.greater_equal(labels, 0), "float32")
        logits = ops.cast(y_pred, "float32")
        ce = keras.losses.sparse_categorical_crossentropy(
            ops.maximum(labels, 0), logits, from_logits=True
        )
        return ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="finetunekit")
class ResponseTokenAccuracy(keras.metrics.Metric):
    """Share of labelled positions (labels ``>= 0``) whose argmax logit is the label.

    Examples:
        >>> import numpy as np
        >>> m = ResponseTokenAccuracy()
        >>> m.update_state(np.array([[-1, 0, 1]]), np.array([[[0, 1], [1, 0], [1, 0]]], "float32"))
        >>> float(m.result())
        0.5
    """

    def __init__(self, name: str = "token_accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        from keras import ops

        labels = ops.cast(y_true, "int32")
        valid = ops.cast(ops.greater_equal(labels, 0), "float32")
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), "float32")
        self.correct.assign_add(ops.sum(hit * valid))
        self.total.assign_add(ops.sum(valid))

    def result(self) -> Any:
        from keras import ops

        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self) -> None:
        self.correct.assign(0.0)
        self.total.assign(0.0)


# --------------------------------------------------------------------------- packing


@dataclasses.dataclass
class Packing:
    """Turns prompt / response strings into a causal LM's training inputs and labels.

    ``[start] prompt response [end]`` (start / end as the preprocessor adds
    them); inputs are all tokens but the last, labels the next token at each
    position, ``-1`` where the next token is part of the prompt or padding.
    Prompts too long for ``sequence_length`` lose their first tokens; a batch
    is padded to its longest example rounded up to ``pad_multiple`` (at most
    ``sequence_length``).

    Attributes:
        tokenizer: the KerasHub tokenizer.
        sequence_length: input tokens per example at most.
        start_id: the start token (``None``: none added).
        end_id: the end token (``None``: none added).
        pad_id: the padding token.
        pad_multiple: batch lengths are multiples of it.
    """

    tokenizer: Any
    sequence_length: int
    start_id: int | None
    end_id: int | None
    pad_id: int
    pad_multiple: int = PAD_MULTIPLE

    @classmethod
    def of(cls, preprocessor: Any, sequence_length: int | None = None) -> Packing:
        """The packing a KerasHub ``CausalLMPreprocessor`` would do (its tokens and length)."""
        tok = preprocessor.tokenizer
        return cls(
            tokenizer=tok,
            sequence_length=int(sequence_length or preprocessor.sequence_length),
            start_id=int(tok.start_token_id) if preprocessor.add_start_token else None,
            end_id=int(tok.end_token_id) if preprocessor.add_end_token else None,
            pad_id=int(getattr(tok, "pad_token_id", 0) or 0),
        )

    @property
    def extra(self) -> int:
        """Start and end tokens added to each example."""
        return int(self.start_id is not None) + int(self.end_id is not None)

    def __call__(self, prompts: Any, responses: Any) -> tuple[dict[str, Any], Any]:
        """``({"token_ids", "padding_mask"}, labels)`` for string tensors ``(B,)``."""
        import tensorflow as tf

        def ragged(x: Any) -> Any:
            ids = self.tokenizer(x)
            if isinstance(ids, (list, tuple)):  # eager KerasHub tokenizers return lists
                ids = tf.ragged.constant(ids, dtype=tf.int32, ragged_rank=1)
            elif not isinstance(ids, tf.RaggedTensor):
                ids = tf.RaggedTensor.from_tensor(ids)
            return tf.cast(ids, tf.int32)

        p, r = ragged(prompts), ragged(responses)
        budget = self.sequence_length + 1 - self.extra  # prompt + response tokens that fit
        r_len = tf.minimum(r.row_lengths(), budget)
        r = _rows(r, tf.zeros_like(r_len), r_len)
        p_len = p.row_lengths()
        p_keep = tf.clip_by_value(budget - r_len, 0, p_len)
        p = _rows(p, p_len - p_keep, p_len)  # keep each prompt's end
        n = tf.shape(p_len)[0]
        parts = [p, r]
        weights = [tf.zeros_like(p), tf.ones_like(r)]
        if self.start_id is not None:
            start = tf.RaggedTensor.from_tensor(tf.fill([n, 1], self.start_id))
            parts.insert(0, start)
            weights.insert(0, tf.zeros_like(start))
        if self.end_id is not None:
            end = tf.RaggedTensor.from_tensor(tf.fill([n, 1], self.end_id))
            parts.append(end)
            weights.append(tf.ones_like(end))
        seq = tf.concat(parts, axis=1)
        weight = tf.concat(weights, axis=1)
        inputs, nexts, valid = seq[:, :-1], seq[:, 1:], weight[:, 1:]
        labels = nexts.with_flat_values(tf.where(valid.flat_values > 0, nexts.flat_values, IGNORED))
        longest = tf.cast(tf.reduce_max(inputs.row_lengths()), tf.int32)
        m = self.pad_multiple
        width = tf.minimum((longest + m - 1) // m * m, self.sequence_length)
        width = tf.maximum(width, 1)
        pad = [[0, 0], [0, width - longest]]  # width >= longest: round up, never cut

        def dense(rt: Any, value: int) -> Any:
            return tf.pad(rt.to_tensor(default_value=value), pad, constant_values=value)

        token_ids = dense(inputs, self.pad_id)
        mask = dense(tf.ones_like(inputs), 0)
        y = dense(labels, IGNORED)
        return {"token_ids": token_ids, "padding_mask": mask}, y


def _rows(rt: Any, starts: Any, ends: Any) -> Any:
    """Row ``i`` of ragged ``rt`` cut to ``[starts[i], ends[i])``."""
    import tensorflow as tf

    idx = tf.ragged.range(starts, ends) + tf.expand_dims(rt.row_starts(), 1)
    return tf.gather(rt.flat_values, idx)


# --------------------------------------------------------------------------- the task


class Generative(Task):
    """Prompts -> responses with a causal language model (KerasHub ``CausalLM``).

    Build the data with ``DatasetAdapter.from_prompts`` and the backbone with
    ``Backbone.from_preset`` (a decoder preset, Hugging Face folder or
    ``.gguf`` file); pass a ``Generative(...)`` as the data's ``task=`` for
    other settings.

    Args:
        lora: ``True`` (default): train LoRA adapters -- of the Trainer's
            ``lora_rank``, or :data:`DEFAULT_LORA_RANK` (8) when it is
            ``None`` -- on the attention query / value projections.
            ``False``: fine-tune every weight of the model.

    Attributes:
        packing: the :class:`Packing` of the training batches, set on the
            copy of the task that :meth:`build_model` hands to the engine
            (``None`` on the task the user built).

    Examples:
        >>> from finetunekit import tasks
        >>> tasks.Generative(lora=False).get_config()
        {'lora': False}
    """

    name: ClassVar[str] = "generative"
    headline_metric: ClassVar[str] = "exact_match"
    #: the LoRA / full fine-tuning rate of ``Trainer(learning_rate="auto")``
    #: (measured in docs/generative.md)
    default_fine_tune_learning_rate: ClassVar[float | None] = DEFAULT_RATE

    def __init__(self, lora: bool = True) -> None:
        self.lora = check_bool("lora", lora, error=ConfigError)
        self.packing: Packing | None = None

    def get_config(self) -> dict[str, Any]:
        """The settings, JSON-serialisable (saved with the result)."""
        return {"lora": self.lora}

    # ------------------------------------------------------------------ step 1: targets
    def encode(
        self,
        y: Any,
        *,
        class_names: list[str] | None = None,
        name: str = "y",
        check_single_class: bool | None = None,
    ) -> tuple[np.ndarray, LabelEncoding]:
        """Refuses labels: generative data are prompt / response pairs."""
        raise LabelError(
            format_error(
                "The generative task learns from prompt / response pairs, not labels",
                expected="DatasetAdapter.from_prompts(prompts, responses)",
                received={name: y if np.size(y) <= 5 else f"{np.size(y)} labels"},
                fix="Build the data with DatasetAdapter.from_prompts",
            )
        )

    def target_dim(self, encoding: LabelEncoding) -> int:
        return 1

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        """Placeholders ``(B, 1)``: the labels are made from the inputs (:class:`Packing`)."""
        import tensorflow as tf

        return tf.reshape(tf.cast(stored, tf.float32), (-1, 1))

    # ------------------------------------------------------------------ step 3: head / loss
    def size(self, encoding: LabelEncoding) -> int:
        return 0

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        """:class:`ResponseLoss`: mean cross-entropy over the response tokens."""
        return ResponseLoss()

    def metrics(self, num_classes: int | None) -> list[Any]:
        """Token accuracy over the response tokens."""
        return [ResponseTokenAccuracy()]

    # ------------------------------------------------------------------ the recipe
    def default_trainer(self) -> Any:
        """``Trainer(epochs=0, fine_tune_epochs=3)``: the causal LM trains in phase 2 only.

        Its rate is :attr:`default_fine_tune_learning_rate`. Used when the
        recipe has no ``with_trainer``.

        Examples:
            >>> from finetunekit import tasks
            >>> tasks.Generative().default_trainer()
            Trainer(epochs=0, fine_tune_epochs=3)
        """
        from finetunekit.training.trainer import Trainer

        return Trainer(epochs=0, fine_tune_epochs=DEFAULT_EPOCHS)

    def check_recipe(self, train: Any, validation: Any, *, head: Any, trainer: Any) -> None:
        """Raises before anything is built when the head, Trainer or data do not fit.

        Refused: ``HeadReplacer`` settings (an LM keeps its head), a frozen
        phase (``epochs > 0``: nothing to train), no ``fine_tune_epochs``,
        ``lora_rank`` with ``Generative(lora=False)``, ``gradual_unfreeze``
        with LoRA, ``label_smoothing``, ``class_weight``, and validation data
        of another task.
        """
        for arg, value, default in (
            ("num_classes", head.num_classes, "auto"),
            ("hidden_units", tuple(head.hidden_units or ()), ()),
            ("activation", head.activation, "auto"),
            ("loss", head.loss, "auto"),
            ("scale_targets", head.scale_targets, False),
        ):
            if value != default:
                raise HeadError(
                    format_error(
                        f"HeadReplacer({arg}=...) does not apply to the generative task: a "
                        "causal LM keeps its own language-model head",
                        expected=f"{arg}={default!r} (the default HeadReplacer)",
                        received={arg: value},
                        fix="Leave the head out of the recipe",
                    )
                )
        if trainer.epochs or not trainer.fine_tune_epochs:
            raise TrainerError(
                format_error(
                    "The generative task trains the language model in the Trainer's phase 2 "
                    "(fine_tune_epochs); phase 1 (epochs) would train a new head on a frozen "
                    "backbone, and a causal LM has no new head",
                    expected="epochs=0 and fine_tune_epochs >= 1",
                    received={
                        "epochs": trainer.epochs,
                        "fine_tune_epochs": trainer.fine_tune_epochs,
                    },
                    fix="Pass Trainer(epochs=0, fine_tune_epochs=3), or no Trainer at all (the "
                    "task's default)",
                )
            )
        if not self.lora and trainer.lora_rank is not None:
            raise TrainerError(
                format_error(
                    "Trainer(lora_rank=...) asks for LoRA but Generative(lora=False) for full "
                    "fine-tuning",
                    expected="one of the two",
                    received={"lora_rank": trainer.lora_rank, "lora": False},
                    fix="Drop lora_rank, or use Generative(lora=True)",
                )
            )
        if self.lora and trainer.gradual_unfreeze is not None:
            raise TrainerError(
                format_error(
                    "gradual_unfreeze cannot be combined with LoRA (on by default for the "
                    "generative task): only the adapters train",
                    expected="gradual_unfreeze=None",
                    received={"gradual_unfreeze": trainer.gradual_unfreeze},
                    fix="Drop gradual_unfreeze, or pass the data's task=Generative(lora=False)",
                )
            )
        if trainer.label_smoothing:
            raise TrainerError(
                format_error(
                    "label_smoothing does not apply to the generative task",
                    expected="label_smoothing=0",
                    received={"label_smoothing": trainer.label_smoothing},
                    fix="Drop label_smoothing",
                )
            )
        if trainer.class_weight is not None:
            raise TrainerError(
                format_error(
                    "class_weight does not apply to the generative task (no classes)",
                    expected="class_weight=None",
                    received={"class_weight": trainer.class_weight},
                    fix="Drop class_weight",
                )
            )
        if validation is not None and validation.task != self.name:
            raise DataError(
                format_error(
                    f"The validation data are {validation.task!r} data, the training data "
                    "prompt / response pairs",
                    expected="validation data from DatasetAdapter.from_prompts",
                    received={"validation": validation},
                    fix="Build the validation data with from_prompts, or split: "
                    "with_data(data, validation=0.1)",
                )
            )

    def build_model(self, backbone: Any, train: Any, *, head: Any, trainer: Any, units: int) -> Any:
        """Loads the preset's ``CausalLM``, checks the lengths, enables LoRA.

        Returns a :class:`~finetunekit.training.engine.BuiltModel` whose
        ``model`` is a functional view of the ``CausalLM`` (token ids and
        padding mask -> logits, compiled by the engine), ``inference_model``
        the ``CausalLM`` itself (what the result keeps), ``backbone_model``
        its KerasHub backbone and ``task`` a copy of this task holding the
        :class:`Packing` of the training batches.

        Raises:
            BackboneError: the backbone is not a text preset / GGUF file.
            DataError: a response does not fit ``sequence_length``.
        """
        from finetunekit import _compat
        from finetunekit.data.prompts import token_lengths
        from finetunekit.training.engine import BuiltModel
        from finetunekit.training.lora import apply_lora

        if not callable(getattr(backbone, "causal_lm", None)):
            raise BackboneError(
                format_error(
                    f"The generative task needs a causal language model, but the backbone is "
                    f"{getattr(backbone, 'name', backbone)!r}",
                    expected="Backbone.from_preset(<decoder preset, Hugging Face folder or "
                    ".gguf file>) or Backbone.from_gguf(path)",
                    received={"backbone": getattr(backbone, "name", backbone)},
                    fix="Pass e.g. Backbone.from_preset('gemma-3-270m.gguf', sequence_length=128)",
                )
            )
        lm = backbone.causal_lm()
        packing = Packing.of(lm.preprocessor, backbone.sequence_length)
        pairs = train.sample_inputs(len(train))
        stats = _check_lengths(packing, pairs, token_lengths)
        targets = [
            layer
            for layer in (_compat.flatten_layers(lm.backbone) or [])
            if layer.name in set(lm.backbone.default_lora_layer_names()) and layer.weights
        ]
        info: dict[str, Any] = {
            "backbone": backbone.name,
            "source": "gguf" if str(backbone.preset).lower().endswith(".gguf") else "preset",
            "preset": backbone.preset,
            "backbone_config": backbone.get_config(),
            "causal_lm": type(lm).__name__,
            "sequence_length": packing.sequence_length,
            "input_dtype": "string",
            "tokens": stats,
            "fine_tuning": "lora" if self.lora else "full",
        }
        if self.lora and trainer.lora_rank is None:  # LoRA by default, before epoch 1
            info["lora"] = apply_lora(
                lm.backbone,
                DEFAULT_LORA_RANK,
                alpha=trainer.lora_alpha,
                kinds=trainer.lora_layers,
                unfreeze=trainer.unfreeze,
                train_bn=trainer.train_bn,
                targets=targets,
            )
        training = keras.Model(lm.input, lm.output, name="causal_lm_training")
        bound = copy.copy(self)
        bound.packing = packing
        return BuiltModel(
            model=training,
            backbone_model=lm.backbone,
            features=None,
            task=bound,
            loss=ResponseLoss(),
            info=info,
            lora_targets=targets,
            inference_model=lm,
            cache_problem="a causal LM trains end to end on token sequences: no frozen "
            "features to cache",
        )

    def training_batches(self, dataset: Any, *, trainer: Any, training: bool) -> Any:
        """Maps ``(pairs (B, 2), placeholder)`` batches to ``(token inputs, labels)``."""
        import tensorflow as tf

        packing = self.packing
        if packing is None:  # pragma: no cover - build_model binds it
            raise TrainerError("The generative task's batches need the model (build_model).")

        def pack(x: Any, y: Any) -> Any:
            return packing(x[:, 0], x[:, 1])

        return dataset.map(pack, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------ results
    def expected_widths(
        self, class_names: list[str], y_true: np.ndarray
    ) -> tuple[set[int], str] | None:
        return None

    def evaluate_model(
        self, model: Any, data: Any, *, evaluator: Any, thresholds: Any = None
    ) -> EvaluationReport | None:
        """Teacher-forced token scores and generated answers of ``model`` on ``data``.

        See :func:`finetunekit.evaluation.generative.evaluate_generative`.
        """
        from finetunekit.evaluation.generative import evaluate_generative

        _no_thresholds(self.name, thresholds)
        return evaluate_generative(model, data, batch_size=evaluator.batch_size)

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        """Scores generated strings against expected ones (exact match, chrF, BLEU).

        Examples:
            >>> report = Generative().evaluate(["4", "6"], ["4", "7"], class_names=None,
            ...                                evaluator=None)
            >>> report.metrics["exact_match"]
            0.5
        """
        from finetunekit.evaluation.generative import text_report

        _no_thresholds(self.name, thresholds)
        return text_report(
            [str(v) for v in np.asarray(y_true).reshape(-1).tolist()],
            [str(v) for v in np.asarray(y_pred).reshape(-1).tolist()],
        )

    def generate(
        self,
        model: Any,
        prompts: Any,
        *,
        max_length: int | None = None,
        sampler: Any = "greedy",
        batch_size: int = 16,
    ) -> list[str]:
        """The model's continuation of each prompt (the prompt itself left out).

        Args:
            model: a KerasHub ``CausalLM`` with its preprocessor (``result.model``).
            prompts: a string or a list of strings.
            max_length: total tokens (prompt + generated) at most; default the
                model's ``sequence_length``.
            sampler: a KerasHub sampler name (:data:`SAMPLERS`) or a
                ``keras_hub.samplers.Sampler``.
            batch_size: prompts generated together.

        Raises:
            ArgumentTypeError / DataError: prompts that are not strings or empty.
            EvaluationError: an unknown sampler, or a prompt that leaves no room
                to generate within ``max_length``.
        """
        from finetunekit.checks import check_int
        from finetunekit.data.prompts import _strings, token_lengths

        single = isinstance(prompts, str)
        texts = _strings([prompts] if single else prompts, "prompts")
        preprocessor = getattr(model, "preprocessor", None)
        if preprocessor is None or not callable(getattr(model, "generate", None)):
            raise EvaluationError(
                format_error(
                    "generate() needs a KerasHub CausalLM with its preprocessor",
                    expected="result.model of a generative result",
                    received={"model": type(model).__name__},
                )
            )
        length = check_int(
            "max_length",
            max_length if max_length is not None else int(preprocessor.sequence_length),
            minimum=2,
            error=EvaluationError,
        )
        batch_size = check_int("batch_size", batch_size, minimum=1, error=EvaluationError)
        _set_sampler(model, sampler)
        used = token_lengths(preprocessor.tokenizer, np.asarray(texts, dtype=str))
        used = used + int(bool(preprocessor.add_start_token))
        too_long = np.flatnonzero(used >= length)
        if len(too_long):
            raise EvaluationError(
                format_error(
                    f"{len(too_long)} prompt(s) leave no room to generate within "
                    f"max_length={length} tokens (longest: {int(used.max())} tokens)",
                    expected="max_length greater than every prompt's token count",
                    received={"max_length": length, "prompt": texts[int(too_long[0])][:80]},
                    fix=f"Pass max_length={int(used.max()) + 32} (or shorten the prompts)",
                )
            )
        out: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            generated = model.generate(chunk, max_length=length, strip_prompt=True)
            if isinstance(generated, str):
                generated = [generated]
            out.extend(str(g) for g in generated)
        return out[:1] if single else out

    def predict_model(
        self, model: Any, x: Any, *, batch_size: int = 16, class_names: Any = None
    ) -> list[str]:
        """``result.predict``: the greedy generation for each prompt (see :meth:`generate`)."""
        return self.generate(model, x, sampler="greedy", batch_size=batch_size)

    def export_result(
        self,
        result: Any,
        path: str,
        format: str,
        *,
        quantize: str | None,
        sample: Any,
        tolerance: float | None,
    ) -> Any:
        """A Hugging Face folder (``"transformers"``) or a ``.keras`` file, logits compared.

        See :func:`finetunekit.tasks.generative_export.export_causal_lm`.
        """
        from finetunekit.tasks.generative_export import export_causal_lm

        return export_causal_lm(
            result, path, format, quantize=quantize, sample=sample, tolerance=tolerance
        )

    def merge_lora(self, model: Any) -> Any:
        """``result.merge_lora``: the ``CausalLM`` with its adapters folded in (:func:`merge_causal_lm`)."""
        return merge_causal_lm(model)

    def save_adapters(self, result: Any, path: str | os.PathLike[str]) -> str:
        """``result.save_adapters``: see :func:`save_adapters`."""
        return save_adapters(result, path)


def _set_sampler(model: Any, sampler: Any) -> None:
    """Sets the ``CausalLM``'s sampler (``compile(sampler=...)``: KerasHub's public way)."""
    from finetunekit.backbones.text import require_keras_hub

    keras_hub = require_keras_hub()
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise EvaluationError(
                format_error(
                    f"Unknown sampler {sampler!r}",
                    expected=f"one of {list(SAMPLERS)} or a keras_hub.samplers.Sampler",
                    received={"sampler": sampler},
                    fix='Pass sampler="greedy" (deterministic) or "top_k"',
                )
            )
        sampler = keras_hub.samplers.get(sampler)
    elif not isinstance(sampler, keras_hub.samplers.Sampler):
        raise EvaluationError(
            format_error(
                "sampler must be a sampler name or a keras_hub.samplers.Sampler",
                expected=f"one of {list(SAMPLERS)}",
                received={"sampler": sampler},
            )
        )
    current = getattr(model, "sampler", None)
    if current is sampler or (
        current is not None
        and type(current) is type(sampler)
        and current.get_config() == sampler.get_config()
    ):
        return
    model.compile(sampler=sampler)


def _check_lengths(packing: Packing, pairs: np.ndarray, lengths: Any) -> dict[str, Any]:
    """Raises when a response does not fit; warns about prompts that will be cut."""
    p = lengths(packing.tokenizer, pairs[:, 0])
    r = lengths(packing.tokenizer, pairs[:, 1])
    room = packing.sequence_length - packing.extra  # at least one prompt token must remain
    long_r = np.flatnonzero(r > room)
    if len(long_r):
        worst = int(r.max())
        raise DataError(
            format_error(
                f"{len(long_r)} response(s) do not fit sequence_length="
                f"{packing.sequence_length} tokens (longest: {worst} tokens; example "
                f"{int(long_r[0])})",
                expected=f"responses of at most {room} tokens (start / end tokens and one "
                "prompt token take the rest)",
                received={"sequence_length": packing.sequence_length, "response": worst},
                fix=f"Pass Backbone.from_preset(..., sequence_length={worst + packing.extra + 32})"
                " or drop those examples",
            )
        )
    total = p + r + packing.extra
    cut = int(np.sum(total > packing.sequence_length + 1))
    if cut:
        warnings.warn(
            f"{cut} of {len(pairs)} prompts are longer than sequence_length="
            f"{packing.sequence_length} allows with their response; their first tokens are "
            f"cut (longest example: {int(total.max())} tokens)",
            UserWarning,
            stacklevel=4,
        )
    return {
        "prompt_max": int(p.max()),
        "response_max": int(r.max()),
        "total_max": int(total.max()),
        "total_mean": float(total.mean()),
        "prompts_cut": cut,
    }


# --------------------------------------------------------------------------- LoRA: merge, save


def merge_causal_lm(model: Any) -> Any:
    """A copy of a KerasHub ``CausalLM`` with its LoRA adapters folded into the kernels.

    A fresh backbone of the same config (no adapters) receives every base
    weight, each adapted kernel as ``W + (alpha / r) * A @ B``; the
    preprocessor is shared. Without LoRA, returns ``model``.

    Raises:
        TrainerError: the fresh backbone's weights do not match (another
            KerasHub version's layout).

    Examples:
        >>> merged = merge_causal_lm(result.model)  # doctest: +SKIP
    """
    from finetunekit.training.freezing import lora_layers
    from finetunekit.training.lora import _adapters, _merged_value

    adapted = lora_layers(model)
    if not adapted:
        return model
    merged = {id(_adapters(layer)[0]): _merged_value(layer) for layer in adapted}
    skip = {id(v) for layer in adapted for v in _adapters(layer)[1:]}
    old = model.backbone
    fresh = type(old).from_config(old.get_config())
    source = [v for v in old.weights if id(v) not in skip]
    target = list(fresh.weights)
    if len(source) != len(target) or any(
        tuple(s.shape) != tuple(t.shape) for s, t in zip(source, target, strict=False)
    ):
        raise TrainerError(
            format_error(
                f"The {type(old).__name__} rebuilt from its config does not match the trained "
                f"one ({len(target)} vs {len(source)} weights)",
                expected="a backbone that rebuilds identically from get_config()",
                received={"backbone": type(old).__name__},
                fix="Save the adapters alone (result.save_adapters) and load them on the base",
            )
        )
    for s, t in zip(source, target, strict=True):
        t.assign(merged.get(id(s), s))
    return type(model)(backbone=fresh, preprocessor=model.preprocessor)


def _base_fingerprint(layers: list[Any]) -> str:
    """A hash of the adapted layers' base kernels (shapes and rounded sums)."""
    from finetunekit.training.lora import _adapters

    digest = hashlib.sha256()
    for layer in layers:
        base = np.asarray(keras.ops.convert_to_numpy(_adapters(layer)[0]), np.float64)
        digest.update(
            f"{layer.path}:{base.shape}:{base.sum():.6e}:{np.abs(base).sum():.6e};".encode()
        )
    return digest.hexdigest()[:32]


def save_adapters(result: Any, path: str | os.PathLike[str]) -> str:
    """Writes the LoRA adapters of a generative result alone to an ``.npz`` file.

    The file holds each adapted layer's ``A`` and ``B`` (numpy arrays, no
    code), their rank and alpha, the backbone's config (to rebuild the base)
    and a fingerprint of the base kernels they were trained on; it is a few
    MB where the merged model is hundreds. :func:`load_adapters` puts them
    back on the same base model.

    Raises:
        LoadError: the path does not end in ``.npz``, or the model has no
            LoRA adapters (``Generative(lora=False)``: save the whole model).

    Examples:
        >>> result.save_adapters("adapters.npz")  # doctest: +SKIP
    """
    from finetunekit.files import atomic_path
    from finetunekit.training.freezing import lora_layers
    from finetunekit.training.lora import _adapters

    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise LoadError(
            format_error(
                "Adapters are saved as a .npz file",
                expected="a path ending in .npz",
                received={"path": path},
                fix=f"Use {os.path.splitext(path)[0]}.npz",
            )
        )
    layers = lora_layers(result.model)
    if not layers:
        raise LoadError(
            format_error(
                "The model has no LoRA adapters to save",
                expected="a result trained with LoRA (the generative default)",
                received={"task_config": result.task_config},
                fix="Save the whole model with result.save('model.keras')",
            )
        )
    backbone_config = result.info.get("backbone_config") or (result.recipe or {}).get("backbone")
    meta = {
        "format": _ADAPTERS_FORMAT,
        "version": 1,
        "layers": [layer.path for layer in layers],
        "rank": [int(layer.lora_rank) for layer in layers],
        "alpha": [float(layer.lora_alpha) for layer in layers],
        "base": _base_fingerprint(layers),
        "backbone_config": backbone_config,
        "task_config": result.task_config,
        "sequence_length": int(result.model.preprocessor.sequence_length),
    }
    arrays: dict[str, Any] = {"meta": np.asarray(json.dumps(meta))}
    for i, layer in enumerate(layers):
        _, a, b = _adapters(layer)
        arrays[f"a{i}"] = np.asarray(keras.ops.convert_to_numpy(a))
        arrays[f"b{i}"] = np.asarray(keras.ops.convert_to_numpy(b))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def load_adapters(path: str | os.PathLike[str], backbone: Any = None) -> Any:
    """Rebuilds a generative result from saved adapters and their base model.

    Args:
        path: a file written by ``result.save_adapters``.
        backbone: the base ``Backbone.from_preset(...)``; default: the one
            recorded in the file (its preset path or name must still resolve).

    Returns:
        A :class:`~finetunekit.FineTuneResult` whose model is the base
        ``CausalLM`` with the adapters enabled and set.

    Raises:
        LoadError: a missing or foreign file, or a base model other than the
            one the adapters were trained on (the fingerprint differs).

    Examples:
        >>> again = ftk.load_adapters("adapters.npz")  # doctest: +SKIP
        >>> again.generate(["2+2="])  # doctest: +SKIP
    """
    from finetunekit.backbones.backbone import Backbone
    from finetunekit.result import FineTuneResult
    from finetunekit.training.freezing import lora_layers
    from finetunekit.training.lora import _adapters

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LoadError(
            format_error(
                "The adapters file does not exist",
                expected="a .npz file written by result.save_adapters",
                received={"path": path},
                fix="Check the path",
            )
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {key: np.asarray(archive[key]) for key in archive.files if key != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise LoadError(
            format_error(
                f"The file is not an adapters file ({type(exc).__name__})",
                expected="a .npz file written by result.save_adapters",
                received={"path": path},
            )
        ) from exc
    if meta.get("format") != _ADAPTERS_FORMAT:
        raise LoadError(
            format_error(
                "The file is not a finetunekit adapters file",
                expected=f"format {_ADAPTERS_FORMAT!r}",
                received={"path": path, "format": meta.get("format")},
            )
        )
    if backbone is None:
        if not meta.get("backbone_config"):
            raise LoadError(
                format_error(
                    "The adapters file does not record its base model",
                    expected="backbone= the Backbone the adapters were trained on",
                    received={"path": path},
                    fix="Pass load_adapters(path, backbone=Backbone.from_preset(...))",
                )
            )
        backbone = Backbone.from_config(meta["backbone_config"])
    if not callable(getattr(backbone, "causal_lm", None)):
        raise LoadError(
            format_error(
                "Adapters load onto a causal LM backbone",
                expected="Backbone.from_preset(<the base model>)",
                received={"backbone": backbone},
            )
        )
    lm = backbone.causal_lm()
    lm.preprocessor.sequence_length = int(meta["sequence_length"])
    from finetunekit import _compat

    by_path = {layer.path: layer for layer in (_compat.flatten_layers(lm.backbone) or [])}
    missing = [p for p in meta["layers"] if p not in by_path]
    if missing:
        raise LoadError(
            format_error(
                f"The base model has no layer {missing[0]!r} the adapters were trained on",
                expected="the base model the adapters were saved from",
                received={"path": path, "backbone": getattr(backbone, "name", backbone)},
                fix="Pass backbone= the original Backbone.from_preset(...)",
            )
        )
    layers = [by_path[p] for p in meta["layers"]]
    for layer, rank, alpha in zip(layers, meta["rank"], meta["alpha"], strict=True):
        layer.enable_lora(int(rank), lora_alpha=float(alpha))
    if _base_fingerprint(layers) != meta["base"]:
        raise LoadError(
            format_error(
                "The base model's weights differ from those the adapters were trained on",
                expected="the same base model (same preset / GGUF file, same weights)",
                received={"path": path, "backbone": getattr(backbone, "name", backbone)},
                fix="Pass backbone= the original Backbone.from_preset(...)",
            )
        )
    for i, layer in enumerate(layers):
        _, a, b = _adapters(layer)
        a.assign(arrays[f"a{i}"])
        b.assign(arrays[f"b{i}"])
    assert len(lora_layers(lm)) == len(layers)
    return FineTuneResult(
        model=lm,
        task="generative",
        task_config=dict(meta.get("task_config") or {}),
        class_names=[],
        info={"backbone_config": meta.get("backbone_config"), "adapters": path},
    )
