"""Contrastive losses of the ``embedding`` task, and the pair wrapper it trains.

Every loss receives the batch targets of embedding data (see
``finetunekit/tasks/embedding.py``) and the stacked embeddings the training
model outputs:

* grouped items: ``y_pred`` ``(B, D)``, ``y_true`` ``(B, 1)`` group ids;
* pairs: ``y_pred`` ``(B, 2, D)`` (anchor, positive), ``y_true`` ``(B, 1)``
  group ids;
* triplets: ``y_pred`` ``(B, 3, D)`` (anchor, positive, negative),
  ``y_true`` ``(B, 2)``: the anchor's group and the negative's group;
* scored pairs: ``y_pred`` ``(B, 2, D)``, ``y_true`` ``(B, 1)`` scores.

Examples that share a group id are never each other's negatives: the group
of a pair joins every anchor and positive connected through identical items,
so a duplicate positive, or a second positive of the same anchor, in the
same batch is masked out of the denominator instead of being pushed away.
The embeddings are L2-normalised inside the losses as well, so a score is
always a cosine similarity.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "CosineSimilarityLoss",
    "InfoNCELoss",
    "MergeSlots",
    "SplitSlots",
    "TripletLoss",
    "pair_model",
]

_NEG = -1e9  # a masked logit: exp() underflows to exactly 0 in float32


def _unit(x: Any) -> Any:
    return ops.normalize(ops.cast(x, "float32"), axis=-1, order=2)


def _groups(y_true: Any, column: int = 0) -> Any:
    return ops.cast(ops.reshape(y_true[:, column], (-1,)), "float32")


def _same(a: Any, b: Any) -> Any:
    return ops.equal(ops.expand_dims(a, 1), ops.expand_dims(b, 0))


def _slots(y_pred: Any) -> int:
    return 1 if len(y_pred.shape) == 2 else int(y_pred.shape[1])


def _masked_mean(values: Any, valid: Any) -> Any:
    valid = ops.cast(valid, "float32")
    return ops.sum(values * valid) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="finetunekit")
class InfoNCELoss(keras.losses.Loss):
    """In-batch negatives contrastive loss (multiple-negatives ranking, InfoNCE).

    Pairs: for anchor ``i`` the logits are ``cos(a_i, p_j) / temperature``
    over every positive ``j`` of the batch (plus every hard negative for
    triplets), and the loss is the cross-entropy of picking ``p_i``. Columns
    of the anchor's own group other than ``p_i`` are masked (set to -1e9),
    so duplicates never count as negatives. Grouped items (``(B, D)``): the
    supervised contrastive loss (Khosla et al., 2020): for every item, the
    mean over its same-group items of ``-log softmax`` over all other items;
    items without a same-group partner in the batch are left out of the mean.

    Args:
        temperature: divides the cosine similarities (0.05 is
            sentence-transformers' scale of 20).

    Examples:
        >>> import numpy as np
        >>> emb = np.array([[[1, 0], [1, 0]], [[0, 1], [0, 1]]], "float32")
        >>> round(float(InfoNCELoss(0.05)(np.array([[0.0], [1.0]]), emb)), 6)
        0.0
    """

    def __init__(
        self,
        temperature: float = 0.05,
        reduction: str = "sum_over_batch_size",
        name: str = "infonce",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = float(temperature)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        k = _slots(y_pred)
        groups = _groups(y_true)
        if k == 1:
            return self._grouped(groups, _unit(y_pred))
        anchors, positives = _unit(y_pred[:, 0]), _unit(y_pred[:, 1])
        logits = ops.matmul(anchors, ops.transpose(positives)) / self.temperature
        n = ops.shape(anchors)[0]
        eye = ops.cast(ops.eye(n), "bool")
        mask = ops.logical_and(_same(groups, groups), ops.logical_not(eye))
        if k == 3:
            negatives = _unit(y_pred[:, 2])
            neg_logits = ops.matmul(anchors, ops.transpose(negatives)) / self.temperature
            logits = ops.concatenate([logits, neg_logits], axis=1)
            mask = ops.concatenate([mask, _same(groups, _groups(y_true, 1))], axis=1)
        logits = ops.where(mask, _NEG, logits)
        labels = ops.arange(n)
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return ops.mean(losses)

    def _grouped(self, groups: Any, emb: Any) -> Any:
        logits = ops.matmul(emb, ops.transpose(emb)) / self.temperature
        n = ops.shape(emb)[0]
        eye = ops.cast(ops.eye(n), "bool")
        positives = ops.logical_and(_same(groups, groups), ops.logical_not(eye))
        logits = ops.where(eye, _NEG, logits)
        log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
        count = ops.sum(ops.cast(positives, "float32"), axis=1)
        mean_pos = ops.sum(ops.where(positives, log_prob, 0.0), axis=1) / ops.maximum(count, 1.0)
        return _masked_mean(-mean_pos, count > 0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="finetunekit")
class TripletLoss(keras.losses.Loss):
    """Triplet loss with a margin, on cosine similarities.

    Triplets: ``max(0, cos(a, n) - cos(a, p) + margin)`` per example. Pairs
    without explicit negatives: the hardest in-batch negative (the most
    similar positive of another group). Grouped items: batch-hard (Hermans
    et al., 2017): the least similar item of the same group against the most
    similar item of another group. Anchors without a positive or a negative
    in the batch are left out of the mean.

    Args:
        margin: the gap in cosine similarity the positive must keep over the
            negative (cosine distance ``1 - cos`` differs by the same amount).

    Examples:
        >>> import numpy as np
        >>> emb = np.array([[[1, 0], [1, 0], [0, 1]]], "float32")
        >>> float(TripletLoss(0.2)(np.array([[0.0, 1.0]]), emb))
        0.0
    """

    def __init__(
        self,
        margin: float = 0.2,
        reduction: str = "sum_over_batch_size",
        name: str = "triplet",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        k = _slots(y_pred)
        groups = _groups(y_true)
        if k == 3:
            a, p, n = _unit(y_pred[:, 0]), _unit(y_pred[:, 1]), _unit(y_pred[:, 2])
            pos, neg = ops.sum(a * p, axis=-1), ops.sum(a * n, axis=-1)
            return ops.mean(ops.relu(neg - pos + self.margin))
        same = _same(groups, groups)
        if k == 2:
            a, p = _unit(y_pred[:, 0]), _unit(y_pred[:, 1])
            sim = ops.matmul(a, ops.transpose(p))
            pos = ops.sum(a * p, axis=-1)
            other = ops.logical_not(same)
            hardest = ops.max(ops.where(other, sim, -2.0), axis=1)
            valid = ops.any(other, axis=1)
        else:
            emb = _unit(y_pred)
            sim = ops.matmul(emb, ops.transpose(emb))
            eye = ops.cast(ops.eye(ops.shape(emb)[0]), "bool")
            partners = ops.logical_and(same, ops.logical_not(eye))
            other = ops.logical_not(same)
            pos = ops.min(ops.where(partners, sim, 2.0), axis=1)
            hardest = ops.max(ops.where(other, sim, -2.0), axis=1)
            valid = ops.logical_and(ops.any(partners, axis=1), ops.any(other, axis=1))
        return _masked_mean(ops.relu(hardest - pos + self.margin), valid)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="finetunekit")
class CosineSimilarityLoss(keras.losses.Loss):
    """Scored pairs: the mean squared error between ``cos(first, second)`` and the score.

    Examples:
        >>> import numpy as np
        >>> emb = np.array([[[1, 0], [0, 1]]], "float32")
        >>> float(CosineSimilarityLoss()(np.array([[0.5]]), emb))
        0.25
    """

    def __init__(
        self,
        reduction: str = "sum_over_batch_size",
        name: str = "cosine_similarity_mse",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        cos = ops.sum(_unit(y_pred[:, 0]) * _unit(y_pred[:, 1]), axis=-1)
        return ops.mean(ops.square(cos - _groups(y_true)))


# --------------------------------------------------------------------------- the pair wrapper


@keras.saving.register_keras_serializable(package="finetunekit")
class MergeSlots(keras.layers.Layer):
    """``(B, k, *item)`` -> ``(B * k, *item)``: every item of every example, in one batch.

    Examples:
        >>> import numpy as np
        >>> tuple(MergeSlots()(np.zeros((4, 2, 3))).shape)
        (8, 3)
    """

    def call(self, inputs: Any) -> Any:
        return ops.reshape(inputs, (-1, *inputs.shape[2:]))

    def compute_output_spec(self, inputs: Any) -> Any:
        batch = None if inputs.shape[0] is None else inputs.shape[0] * inputs.shape[1]
        return keras.KerasTensor((batch, *inputs.shape[2:]), dtype=inputs.dtype)


@keras.saving.register_keras_serializable(package="finetunekit")
class SplitSlots(keras.layers.Layer):
    """``(B * k, D)`` -> ``(B, k, D)``: the inverse of :class:`MergeSlots` on the embeddings.

    Args:
        slots: ``k``, the items per example.

    Examples:
        >>> import numpy as np
        >>> tuple(SplitSlots(2)(np.zeros((8, 3))).shape)
        (4, 2, 3)
    """

    def __init__(self, slots: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slots = int(slots)

    def call(self, inputs: Any) -> Any:
        return ops.reshape(inputs, (-1, self.slots, *inputs.shape[1:]))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        batch = None if input_shape[0] is None else input_shape[0] // self.slots
        return (batch, self.slots, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "slots": self.slots}


def pair_model(encoder: keras.Model, slots: int, item_shape: tuple[Any, ...], dtype: str) -> Any:
    """The training model of pair data: one ``encoder`` applied to every item of an example.

    ``(B, slots, *item_shape)`` raw items -> one encoder call on the ``B *
    slots`` items -> ``(B, slots, D)`` embeddings. The encoder is shared, not
    copied: training the wrapper trains ``encoder``.

    Examples:
        >>> import keras
        >>> enc = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> pair_model(enc, 2, (4,), "float32").output_shape
        (None, 2, 3)
    """
    inputs = keras.Input((slots, *item_shape), dtype=dtype, name="items")
    items = MergeSlots(name="pairs_merge")(inputs)
    embeddings = encoder(items)
    outputs = SplitSlots(slots, name="pairs_split")(embeddings)
    return keras.Model(inputs, outputs, name=f"{encoder.name}_pairs")
