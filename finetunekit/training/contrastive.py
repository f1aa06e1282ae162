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

Under a ``tf.distribute`` strategy with several replicas (``Trainer(strategy=
"mirrored")``, multi-worker, TPU) every loss first gathers the embeddings
and targets of all replicas (``ReplicaContext.all_gather``): each replica
scores its own rows against the columns of the GLOBAL batch, so the in-batch
negatives and the duplicate masking span ``batch_size`` examples, not
``batch_size / replicas``. A replica returns the sum of its rows' losses
divided by the global count, so the replicas' losses add up to the
one-device loss and their summed gradients (all_gather's gradient sums the
column gradients of every replica) to the one-device gradient.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "CosineSimilarityLoss",
    "GradientCache",
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


def _replica_context() -> Any:
    """The replica context of a step that runs on several replicas, else ``None``."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()  # None in a cross-replica context
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def _placed(value: Any) -> Any:
    """``value`` on a device: collectives need one, and under MultiWorkerMirroredStrategy
    with one local device the step's tensors carry none (TensorFlow: "destinations can not
    be empty"). The worker's first local device, then."""
    import tensorflow as tf

    if getattr(value, "device", "placed"):
        return value
    with tf.device(tf.distribute.get_strategy().extended.worker_devices[0]):
        return tf.identity(value)


class _Batch:
    """This replica's rows of the batch and the columns of the global batch.

    One device: the rows and the columns are the batch. Several replicas (in
    a replica context with ``num_replicas_in_sync > 1``): the columns are
    every replica's rows gathered in replica order (which is the order of
    the global batch), ``start`` is the global index of this replica's first
    row and the sums of :meth:`mean` run over all replicas. The targets are
    gathered apart from the embeddings: they carry no gradient.
    """

    def __init__(self, y_true: Any, y_pred: Any, *, columns: bool = True) -> None:
        self.context = _replica_context()
        self.rows = ops.shape(y_pred)[0]
        self.y_true, self.y_pred = y_true, y_pred
        self.start: Any = 0
        self.size: Any = self.rows  # the examples of the global batch
        if self.context is None:
            return
        size = _placed(ops.reshape(ops.cast(self.rows, "int32"), (1,)))
        if columns:
            sizes, self.y_true = self.context.all_gather((size, _placed(y_true)), axis=0)
            self.y_pred = self.context.all_gather(_placed(y_pred), axis=0)
        else:
            sizes = self.context.all_gather(size, axis=0)
        self.start = ops.sum(sizes[: self.context.replica_id_in_sync_group])
        self.size = ops.sum(sizes)

    def eye(self) -> Any:
        """``(rows, columns)`` bool: True where the column is the row's own example."""
        rows = ops.arange(self.rows) + ops.cast(self.start, "int32")
        columns = ops.arange(ops.shape(self.y_pred)[0])
        return ops.equal(ops.expand_dims(rows, 1), ops.expand_dims(columns, 0))

    def total(self, values: Any) -> Any:
        """``sum(values)`` over every replica's rows."""
        total = ops.sum(values)
        if self.context is None:
            return total
        import tensorflow as tf

        return self.context.all_reduce(tf.distribute.ReduceOp.SUM, _placed(total))

    def mean(self, values: Any, valid: Any = None) -> Any:
        """This replica's share of the mean of ``values`` over the global batch's valid rows.

        The sum of this replica's (valid) rows over the count of valid rows
        of all replicas: the replicas' shares add up to the one-device mean.
        """
        if valid is None:
            weight = ops.ones_like(values)
            count = ops.cast(self.size, "float32")
        else:
            weight = ops.cast(valid, "float32")
            count = ops.stop_gradient(self.total(weight))
        share = ops.sum(values * weight) / ops.maximum(count, 1.0)
        if self.context is None:
            return share
        # The gradient is the share's; the value is the global loss / replicas, which is what
        # Keras' loss tracker needs (it logs a replica's loss times the replica count, averaged
        # over the replicas weighted by their rows) to log the one-device loss, uneven last
        # batches included.
        replicas = float(self.context.num_replicas_in_sync)
        whole = self.total(ops.stop_gradient(share))
        return share + ops.stop_gradient(whole / replicas - share)


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
        batch = _Batch(y_true, y_pred)
        groups, columns = _groups(y_true), _groups(batch.y_true)
        eye = batch.eye()
        same = _same(groups, columns)
        if k == 1:
            return self._grouped(batch, _unit(y_pred), _unit(batch.y_pred), same, eye)
        anchors, positives = _unit(y_pred[:, 0]), _unit(batch.y_pred[:, 1])
        logits = ops.matmul(anchors, ops.transpose(positives)) / self.temperature
        mask = ops.logical_and(same, ops.logical_not(eye))
        if k == 3:
            negatives = _unit(batch.y_pred[:, 2])
            neg_logits = ops.matmul(anchors, ops.transpose(negatives)) / self.temperature
            logits = ops.concatenate([logits, neg_logits], axis=1)
            mask = ops.concatenate([mask, _same(groups, _groups(batch.y_true, 1))], axis=1)
        logits = ops.where(mask, _NEG, logits)
        labels = ops.arange(batch.rows) + ops.cast(batch.start, "int32")
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return batch.mean(losses)

    def _grouped(self, batch: _Batch, rows: Any, columns: Any, same: Any, eye: Any) -> Any:
        logits = ops.matmul(rows, ops.transpose(columns)) / self.temperature
        positives = ops.logical_and(same, ops.logical_not(eye))
        logits = ops.where(eye, _NEG, logits)
        log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
        count = ops.sum(ops.cast(positives, "float32"), axis=1)
        mean_pos = ops.sum(ops.where(positives, log_prob, 0.0), axis=1) / ops.maximum(count, 1.0)
        return batch.mean(-mean_pos, count > 0)

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
        if k == 3:  # no in-batch comparison: the rows alone, over the global count
            batch = _Batch(y_true, y_pred, columns=False)
            a, p, n = _unit(y_pred[:, 0]), _unit(y_pred[:, 1]), _unit(y_pred[:, 2])
            pos, neg = ops.sum(a * p, axis=-1), ops.sum(a * n, axis=-1)
            return batch.mean(ops.relu(neg - pos + self.margin))
        batch = _Batch(y_true, y_pred)
        same = _same(_groups(y_true), _groups(batch.y_true))
        other = ops.logical_not(same)
        if k == 2:
            a, p = _unit(y_pred[:, 0]), _unit(y_pred[:, 1])
            sim = ops.matmul(a, ops.transpose(_unit(batch.y_pred[:, 1])))
            pos = ops.sum(a * p, axis=-1)
            hardest = ops.max(ops.where(other, sim, -2.0), axis=1)
            valid = ops.any(other, axis=1)
        else:
            sim = ops.matmul(_unit(y_pred), ops.transpose(_unit(batch.y_pred)))
            partners = ops.logical_and(same, ops.logical_not(batch.eye()))
            pos = ops.min(ops.where(partners, sim, 2.0), axis=1)
            hardest = ops.max(ops.where(other, sim, -2.0), axis=1)
            valid = ops.logical_and(ops.any(partners, axis=1), ops.any(other, axis=1))
        return batch.mean(ops.relu(hardest - pos + self.margin), valid)

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
        batch = _Batch(y_true, y_pred, columns=False)
        cos = ops.sum(_unit(y_pred[:, 0]) * _unit(y_pred[:, 1]), axis=-1)
        return batch.mean(ops.square(cos - _groups(y_true)))


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


# --------------------------------------------------------------------------- gradient caching


@keras.saving.register_keras_serializable(package="finetunekit")
class GradientCache(keras.Model):
    """Trains ``model`` on large batches with the activation memory of ``chunk_size`` examples.

    Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning
    Batch Size under Memory Limited Setup"): a contrastive loss couples every
    example of a batch, so the batch cannot simply be split into
    accumulated micro-batches. Each training step instead

    1. embeds the batch ``chunk_size`` examples at a time, without a tape
       (only the ``(B, ..., D)`` embeddings are kept);
    2. computes the loss on all the embeddings and its gradient with
       respect to them, ``g`` (cheap: no encoder in the tape);
    3. embeds each chunk again, with a tape, and adds the gradient of
       ``sum(embeddings_chunk * g_chunk)`` with respect to the weights.

    By the chain rule the sum over chunks is the gradient of the full-batch
    loss: the same step as training on the whole batch at once, with the
    activations of one chunk in memory, for one extra forward pass. Dropout
    draws the same masks in both passes (the random-seed states of every
    chunk are replayed); layers that update state in the forward pass
    (BatchNormalization in training mode) see every chunk twice, and their
    batch statistics are those of a chunk, not of the batch.

    Evaluation and prediction run ``model`` on the whole batch.

    Args:
        model: the training model (the encoder, or the pair wrapper of
            :func:`pair_model`); its weights are trained.
        chunk_size: examples per chunk (for pairs: ``chunk_size x slots``
            items per encoder call).

    Examples:
        >>> import keras, numpy as np
        >>> enc = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model = GradientCache(enc, chunk_size=2)
        >>> model.compile("sgd", InfoNCELoss(0.5))
        >>> x, y = np.ones((6, 4), "float32"), np.array([[0], [0], [1], [1], [2], [2]], "float32")
        >>> len(model.fit(x, y, batch_size=6, verbose=0).history["loss"])
        1
    """

    def __init__(self, model: keras.Model, chunk_size: int, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"{model.name}_gradient_cache")
        super().__init__(**kwargs)
        self.inner = model
        self.chunk_size = int(chunk_size)

    def call(self, inputs: Any, training: Any = None) -> Any:
        return self.inner(inputs, training=training)

    def train_step(self, data: Any) -> Any:
        """One optimizer step on the batch ``data``, chunk by chunk (see the class)."""
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        size = self.chunk_size
        chunks = (n + size - 1) // size

        def chunk(i: Any) -> Any:
            return tf.nest.map_structure(lambda t: t[i * size : (i + 1) * size], x)

        seeds = [v for v in self.inner.variables if v.name == "seed_generator_state"]
        out_shape = tf.TensorShape([None, *self.inner.output_shape[1:]])

        # 1. the embeddings, chunk by chunk, without gradients; the seed states of every chunk
        def embed(i: Any, embeddings: Any, *states: Any) -> Any:
            states = tuple(s.write(i, v.value) for s, v in zip(states, seeds, strict=True))
            e = tf.stop_gradient(tf.cast(self.inner(chunk(i), training=True), "float32"))
            return (i + 1, embeddings.write(i, e), *states)

        start = (
            tf.constant(0),
            tf.TensorArray(tf.float32, size=chunks, infer_shape=False, element_shape=out_shape),
            *(tf.TensorArray(v.dtype, size=chunks, element_shape=v.shape) for v in seeds),
        )
        # one chunk at a time (TensorFlow would run up to 10 iterations at once otherwise, and
        # their memory with them), and the seed states read and set in order
        _, embeddings, *states = tf.while_loop(
            lambda i, *_: i < chunks, embed, start, parallel_iterations=1
        )
        embeddings = tf.ensure_shape(embeddings.concat(), out_shape)

        # 2. the loss on the whole batch, and its gradient with respect to the embeddings
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = self.compute_loss(x=x, y=y, y_pred=embeddings, sample_weight=sample_weight)
            scaled = self.optimizer.scale_loss(loss)
        upstream = tape.gradient(scaled, embeddings)

        # 3. each chunk again with a tape: the gradient of <embeddings, upstream> per weight
        weights = self.trainable_weights

        def backward(i: Any, *grads: Any) -> Any:
            for state, v in zip(states, seeds, strict=True):
                v.assign(state.read(i))  # the masks of pass 1
            rows = upstream[i * size : (i + 1) * size]
            with tf.GradientTape() as inner_tape:
                e = tf.cast(self.inner(chunk(i), training=True), "float32")
                surrogate = tf.reduce_sum(e * rows)
            new = inner_tape.gradient(surrogate, weights)
            return (
                i + 1,
                *(g if d is None else g + d for g, d in zip(grads, new, strict=True)),
            )

        zeros = tuple(tf.zeros(w.shape, w.dtype) for w in weights)
        _, *grads = tf.while_loop(
            lambda i, *_: i < chunks, backward, (tf.constant(0), *zeros), parallel_iterations=1
        )
        if self.losses:  # weight regularizers (in the loss): the weights' own gradient
            with tf.GradientTape() as reg_tape:
                penalty = tf.add_n([tf.reduce_sum(r) for r in self.losses])
                penalty = self.optimizer.scale_loss(penalty)
            extra = reg_tape.gradient(penalty, weights)
            grads = [g if d is None else g + d for g, d in zip(grads, extra, strict=True)]
        self.optimizer.apply_gradients(zip(grads, weights, strict=True))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":  # Keras logs a replica's loss times the replica count
                metric.update_state(loss * replicas, sample_weight=n)
        return self.compute_metrics(x, y, embeddings, sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.inner),
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GradientCache:
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        return cls(model, **config)
