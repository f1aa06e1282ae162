"""The ``embedding`` task: an encoder that maps items to vectors, similar things close.

The data are not one target per input but *relations* between items
(``finetunekit/data/pairs.py``): pairs ``(anchor, positive)``, triplets
``(anchor, positive, negative)``, pairs with a similarity score, or items
with group ids (items of a group are each other's positives). The model the
pipeline builds -- raw item -> input adaptation -> backbone -> pooling ->
optional projection -> L2 normalisation -- is the *encoder*, and it is what
``result.model`` holds, saves and exports. For pair data the engine trains a
wrapper around it (:meth:`Embedding.training_model`) that embeds every item
of an example with the same encoder; the task's loss compares them
(``finetunekit/training/contrastive.py``).

Layouts (the adapter's ``slots`` and targets):

| layout | ``data.slots`` | stored targets | default loss |
| --- | --- | --- | --- |
| groups | ``()`` | group id ``(N,)`` | InfoNCE (supervised contrastive) |
| pairs | ``("anchor", "positive")`` | ``(N, 3)``: group, anchor id, positive id | InfoNCE |
| triplets | ``("anchor", "positive", "negative")`` | ``(N, 5)``: group, the negative's group, 3 item ids | InfoNCE with the negatives |
| scored | ``("first", "second")`` | score ``(N,)`` in [-1, 1] | cosine-similarity MSE |
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from finetunekit.checks import check_choice, check_int, check_number
from finetunekit.errors import (
    ConfigError,
    DataError,
    EvaluationError,
    HeadError,
    LabelError,
    TrainerError,
    format_error,
)
from finetunekit.tasks.base import Task, _no_thresholds

if TYPE_CHECKING:  # pragma: no cover - typing only
    from finetunekit.evaluation.report import EvaluationReport
    from finetunekit.tasks.labels import LabelEncoding

__all__ = ["LAYOUTS", "LOSSES", "Embedding", "layout_of"]

LOSSES = ("auto", "infonce", "triplet", "cosine")
#: slot names -> layout (``()`` and ``("item",)``: grouped items)
LAYOUTS: dict[tuple[str, ...], str] = {
    (): "groups",
    ("item",): "groups",
    ("anchor", "positive"): "pairs",
    ("anchor", "positive", "negative"): "triplets",
    ("first", "second"): "scored",
}
_MAX_GROUP_ID = 2**24  # group ids reach the loss as float32: exact up to 2**24
_VERIFY_PAIRS = 2_000_000  # at most this many item pairs in the groups' verification scores


def layout_of(data: Any) -> str:
    """The layout of an embedding adapter: ``"groups"``, ``"pairs"``, ``"triplets"`` or ``"scored"``.

    Examples:
        >>> import finetunekit as ftk
        >>> layout_of(ftk.DatasetAdapter.from_pairs(["q1", "q2"], ["p1", "p2"]))
        'pairs'
    """
    return LAYOUTS[tuple(getattr(data, "slots", ()))]


class Embedding(Task):
    """Items -> L2-normalised vectors, trained so that related items are close.

    Build the data with ``DatasetAdapter.from_pairs``, ``from_triplets``,
    ``from_scored_pairs`` or ``from_groups`` (or ``from_arrays(x, groups,
    task="embedding")``); pass an ``Embedding(...)`` as their ``task=`` for
    other settings.

    Args:
        loss: ``"auto"`` (InfoNCE for pairs, triplets and groups; the cosine
            loss for scored pairs), ``"infonce"`` (in-batch negatives),
            ``"triplet"`` (margin) or ``"cosine"`` (scored pairs only).
        temperature: InfoNCE's temperature (0.05: similarities x 20).
        margin: the triplet loss's margin, in cosine similarity.
        projection_dim: a ``Dense`` projection of the pooled features to this
            width before the normalisation (``head_projection``); ``None``:
            the pooled features themselves (keeps a pretrained sentence
            encoder's space).
        chunk_size: gradient caching: each training step embeds the batch
            ``chunk_size`` examples at a time, takes the loss on the whole
            batch, and recomputes the chunks with gradients
            (:class:`~finetunekit.training.contrastive.GradientCache`): the
            in-batch negatives of ``batch_size`` examples with the
            activation memory of ``chunk_size``, for one extra forward pass.
            ``None``: the whole batch at once.

    Examples:
        >>> from finetunekit import tasks
        >>> task = tasks.Embedding(temperature=0.1, projection_dim=64)
        >>> task.get_config()
        {'loss': 'auto', 'temperature': 0.1, 'margin': 0.2, 'projection_dim': 64, 'chunk_size': None}
    """

    name: ClassVar[str] = "embedding"
    headline_metric: ClassVar[str] = "recall_at_1"

    def __init__(
        self,
        loss: str = "auto",
        *,
        temperature: float = 0.05,
        margin: float = 0.2,
        projection_dim: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.loss_name = check_choice("loss", loss, LOSSES, error=ConfigError)
        self.temperature = check_number(
            "temperature", temperature, minimum=0, min_open=True, maximum=10, error=ConfigError
        )
        self.margin = check_number("margin", margin, minimum=0, maximum=2, error=ConfigError)
        self.projection_dim = check_int(
            "projection_dim", projection_dim, minimum=1, allow_none=True, error=ConfigError
        )
        self.chunk_size = check_int(
            "chunk_size", chunk_size, minimum=1, allow_none=True, error=ConfigError
        )

    def get_config(self) -> dict[str, Any]:
        """The settings, JSON-serialisable (saved with the result)."""
        return {
            "loss": self.loss_name,
            "temperature": self.temperature,
            "margin": self.margin,
            "projection_dim": self.projection_dim,
            "chunk_size": self.chunk_size,
        }

    # ------------------------------------------------------------------ step 1: targets
    def encode(
        self,
        y: Any,
        *,
        class_names: list[str] | None = None,
        name: str = "y",
        check_single_class: bool | None = None,
    ) -> tuple[np.ndarray, LabelEncoding]:
        """Reads group labels (ints or strings): the layout ``groups``.

        Raises:
            LabelError: not one int / string label per item, negative or
                huge ids, a group with a single member, or a single group.
        """
        from finetunekit.tasks.labels import LabelEncoding

        arr = np.asarray(y)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1 or len(arr) == 0 or arr.dtype.kind not in "iuU":
            raise LabelError(
                format_error(
                    "Embedding groups must be one int or string label per item",
                    expected="a 1-D list or array of group ids (items with the same id are "
                    "each other's positives)",
                    received={name: arr if arr.size <= 10 else f"array {arr.shape} {arr.dtype}"},
                    fix="Pass one group label per item, or use DatasetAdapter.from_pairs for pairs",
                )
            )
        if arr.dtype.kind == "U":
            names, ids = np.unique(arr, return_inverse=True)
            encoding = LabelEncoding(
                task=self.name, class_names=(), raw="string", raw_names=tuple(names.tolist())
            )
        else:
            ids = arr.astype(np.int64)
            if ids.min() < 0 or ids.max() >= _MAX_GROUP_ID:
                raise LabelError(
                    format_error(
                        "Integer group ids must lie in [0, 2**24)",
                        expected="ids from 0 to 16,777,215 (they reach the loss as float32)",
                        received={name: f"min {ids.min()}, max {ids.max()}"},
                        fix="Renumber the groups, e.g. np.unique(groups, return_inverse=True)[1]",
                    )
                )
            encoding = LabelEncoding(task=self.name, class_names=(), raw="index")
        ids = np.asarray(ids, np.int64).reshape(-1)
        _, dense = np.unique(ids, return_inverse=True)
        from finetunekit.data.pairs import check_groups

        check_groups(dense.reshape(-1), name)
        if dense.max() == 0:
            raise LabelError(
                format_error(
                    "Every item is in one group: there is nothing to tell apart",
                    expected="at least two groups (the other groups' items are the negatives)",
                    received={name: f"one group of {len(ids)} items"},
                    fix="Add items of other groups",
                )
            )
        return ids, encoding

    def target_dim(self, encoding: LabelEncoding) -> int:
        """The width of the batch targets: 2 for triplets (both groups), else 1."""
        return 2 if encoding.target_shape == (5,) else 1

    def batch_targets(self, stored: Any, encoding: LabelEncoding) -> Any:
        """Group ids (triplets: the anchor's and the negative's) or scores, float32 ``(B, w)``."""
        import tensorflow as tf

        width = self.target_dim(encoding)
        values = tf.cast(stored, tf.float32)
        if not encoding.target_shape:
            return tf.reshape(values, (-1, 1))
        return values[:, :width]

    # ------------------------------------------------------------------ step 3: head
    def size(self, encoding: LabelEncoding) -> int:
        """The projection width, or 0 without a projection."""
        return self.projection_dim or 0

    def output_units(self, size: int) -> int:
        return size

    def output_layer(self, x: Any, units: int, *, activation: str | None = None) -> Any:
        """Optional ``head_projection`` (Dense ``units``), then ``head_output``: L2 normalisation."""
        import keras

        if units:
            x = keras.layers.Dense(units, name="head_projection")(x)
        return keras.layers.UnitNormalization(axis=-1, dtype="float32", name="head_output")(x)

    def loss(self, *, label_smoothing: float = 0.0, target_std: list[float] | None = None) -> Any:
        """The loss of pairs (``"auto"``: InfoNCE); :meth:`training_model` picks per layout."""
        return self.loss_for("pairs")

    def loss_for(self, layout: str) -> Any:
        """The Keras loss for ``layout`` (``"auto"`` resolved: cosine for scored pairs)."""
        from finetunekit.training import contrastive

        name = self.resolved_loss(layout)
        if name == "cosine":
            return contrastive.CosineSimilarityLoss()
        if name == "triplet":
            return contrastive.TripletLoss(self.margin)
        return contrastive.InfoNCELoss(self.temperature)

    def resolved_loss(self, layout: str) -> str:
        """``loss`` with ``"auto"`` resolved for ``layout``."""
        if self.loss_name != "auto":
            return str(self.loss_name)
        return "cosine" if layout == "scored" else "infonce"

    def metrics(self, num_classes: int | None) -> list[Any]:
        """None while training: the loss is the signal; ``evaluate`` ranks."""
        return []

    # ------------------------------------------------------------------ the recipe
    def check_recipe(self, train: Any, validation: Any, *, head: Any, trainer: Any) -> None:
        """Raises before anything is built when the head, Trainer or data do not fit.

        Refused: ``HeadReplacer(num_classes=..., activation=..., loss=...,
        scale_targets=True)`` (the task owns the output), a loss that does not
        fit the layout, a frozen phase (``epochs``) with no head weights to
        train, in-batch losses with ``batch_size=1``, and validation data of
        another layout, and a ``chunk_size`` not below ``batch_size``.
        """
        for arg, value, default in (
            ("num_classes", head.num_classes, "auto"),
            ("activation", head.activation, "auto"),
            ("loss", head.loss, "auto"),
            ("scale_targets", head.scale_targets, False),
        ):
            if value != default:
                raise HeadError(
                    format_error(
                        f"HeadReplacer({arg}=...) does not apply to embeddings: the task owns "
                        "the output (projection, L2 normalisation) and the loss",
                        expected=f"{arg}={default!r}",
                        received={arg: value},
                        fix="Set the width with Embedding(projection_dim=...) and the loss with "
                        "Embedding(loss=...), passed as the data's task=",
                    )
                )
        layout = layout_of(train)
        loss = self.resolved_loss(layout)
        if (loss == "cosine") != (layout == "scored"):
            raise ConfigError(
                format_error(
                    f"Embedding(loss={loss!r}) does not fit {layout} data",
                    expected="loss='cosine' for scored pairs; 'infonce' or 'triplet' for pairs, "
                    "triplets and groups",
                    received={"loss": loss, "layout": layout},
                    fix="Leave loss='auto'",
                )
            )
        if trainer.epochs and not self.projection_dim and not head.hidden_units:
            raise TrainerError(
                format_error(
                    f"Trainer(epochs={trainer.epochs}) trains the head alone on the frozen "
                    "backbone, but this embedding head has no weights (no projection)",
                    expected="epochs=0 with fine_tune_epochs >= 1, or a projection to train",
                    received={"epochs": trainer.epochs},
                    fix="Pass Trainer(epochs=0, fine_tune_epochs=3) to fine-tune the encoder, "
                    "or Embedding(projection_dim=256) for a head to train first",
                )
            )
        in_batch = loss == "infonce" or (loss == "triplet" and layout != "triplets")
        if in_batch and trainer.batch_size < 2:
            raise TrainerError(
                format_error(
                    f"batch_size={trainer.batch_size} leaves no in-batch negatives for the "
                    f"{loss} loss",
                    expected="batch_size >= 2 (the other examples of a batch are the negatives; "
                    "larger batches give more)",
                    received={"batch_size": trainer.batch_size},
                    fix="Pass Trainer(batch_size=32) or more",
                )
            )
        if self.chunk_size is not None and self.chunk_size >= trainer.batch_size:
            raise ConfigError(
                format_error(
                    f"Embedding(chunk_size={self.chunk_size}) is not smaller than "
                    f"batch_size={trainer.batch_size}: gradient caching would only add a "
                    "forward pass",
                    expected="chunk_size < batch_size (the examples embedded at a time)",
                    received={"chunk_size": self.chunk_size, "batch_size": trainer.batch_size},
                    fix="Leave chunk_size=None, or raise Trainer(batch_size=...) above it",
                )
            )
        if validation is not None and layout_of(validation) != layout:
            raise DataError(
                format_error(
                    f"The validation data are {layout_of(validation)} but the training data "
                    f"are {layout}",
                    expected=f"{layout} validation data (the same loss scores both)",
                    received={"validation": validation},
                    fix="Build the validation data with the same constructor, or leave "
                    "validation=None and evaluate afterwards with result.evaluate(data)",
                )
            )

    def training_model(self, built: Any, train: Any) -> Any:
        """The model the engine trains: the encoder itself (groups) or a pair wrapper.

        For pairs, triplets and scored pairs the wrapper embeds the
        ``(B, slots, ...)`` items with the one encoder (``training/contrastive.
        pair_model``); the result keeps the encoder (``inference_model``). The
        feature cache cannot cut the wrapper (its features are per item, the
        examples per pair), which ``result.info["feature_cache"]`` reports.
        With ``chunk_size`` the model is wrapped in a
        :class:`~finetunekit.training.contrastive.GradientCache`.
        """
        from finetunekit.training.contrastive import GradientCache

        built = self._training_model(built, train)
        if self.chunk_size is None:
            return built
        return dataclasses.replace(
            built,
            model=GradientCache(built.model, self.chunk_size),
            features=None,
            inference_model=built.result_model,
            cache_problem=f"gradient caching (Embedding(chunk_size={self.chunk_size})) "
            "recomputes every chunk through the encoder each step: no features to cache",
        )

    def _training_model(self, built: Any, train: Any) -> Any:
        from finetunekit.training.contrastive import pair_model

        layout = layout_of(train)
        info = dict(built.info)
        info["embedding"] = {
            "layout": layout,
            "loss": self.resolved_loss(layout),
            "dimension": int(built.model.output_shape[-1]),
            "slots": list(getattr(train, "slots", ())),
            "chunk_size": self.chunk_size,
        }
        loss = self.loss_for(layout)
        slots = tuple(getattr(train, "slots", ()))
        if not slots:
            return dataclasses.replace(built, loss=loss, info=info)
        wrapper = pair_model(
            built.model, len(slots), tuple(train.input_shape), str(train.input_dtype)
        )
        return dataclasses.replace(
            built,
            model=wrapper,
            features=None,
            loss=loss,
            info=info,
            inference_model=built.model,
            cache_problem=f"embedding {layout}: every example holds {len(slots)} items, each "
            "embedded by the trained encoder (the wrapper has no per-example features to cache)",
        )

    # ------------------------------------------------------------------ results
    def expected_widths(
        self, class_names: list[str], y_true: np.ndarray
    ) -> tuple[set[int], str] | None:
        return None  # any embedding width

    def evaluate_model(
        self, model: Any, data: Any, *, evaluator: Any, thresholds: Any = None
    ) -> EvaluationReport | None:
        """Embeds every item of ``data`` with ``model`` (the encoder) and ranks.

        Called by :meth:`finetunekit.Evaluator.evaluate`; see :meth:`evaluate`.
        """
        slots = tuple(getattr(data, "slots", ()))
        # pair data: the encoder itself runs on every item (no wrapper model to trace per call)
        source = _ItemsOf(data) if slots else data
        outputs = np.asarray(evaluator.predict_outputs(model, source), np.float64)
        outputs = outputs.reshape(len(data), -1)
        report: EvaluationReport = evaluator.compute(
            data.targets(),
            outputs,
            task=self,
            class_names=list(slots) or None,
            thresholds=thresholds,
        )
        return report

    def evaluate(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        *,
        class_names: list[str] | None,
        evaluator: Any,
        thresholds: Any = None,
    ) -> EvaluationReport:
        """Retrieval, verification or correlation metrics of embeddings.

        ``class_names`` name the items of each example, and ``y_pred`` holds
        their embeddings side by side, ``(N, slots x D)``:

        * ``None`` / ``[]`` (grouped items): ``y_true`` group ids; every item
          queries all the others (itself excluded), relevant = same group.
          Also verification over all item pairs (same group or not).
        * ``["anchor", "positive"]``: ``y_true`` group ids ``(N,)`` or the
          stored ``(N, 3)`` (group, item ids: identical items are ranked
          once). The distinct anchors query the distinct positives; relevant
          = same group. Verification: relevant against other cells.
        * ``["anchor", "positive", "negative"]``: the corpus holds positives
          and negatives; verification and ``triplet_accuracy`` (``cos(a, p) >
          cos(a, n)``) over the triplets.
        * ``["first", "second"]``: ``y_true`` scores: ``spearman`` and
          ``pearson`` of ``cos(first, second)``; with 0/1 scores also
          verification (same = 1).

        Retrieval metrics: ``recall_at_1/5/10``, ``mrr``, ``ndcg_at_10``
        (:func:`finetunekit.evaluation.ranking.ranking_metrics`);
        verification: ``roc_auc``, ``best_threshold``, ``balanced_accuracy``
        (:func:`~finetunekit.evaluation.ranking.verification_metrics`).

        Examples:
            >>> import numpy as np, finetunekit as ftk
            >>> vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
            >>> report = ftk.Evaluator().compute([0, 0, 1, 1], vectors, task="embedding")
            >>> report.metrics["recall_at_1"], report.metrics["roc_auc"]
            (1.0, 1.0)
        """
        from finetunekit.evaluation.report import EvaluationReport

        _no_thresholds(self.name, thresholds)
        slots = tuple(class_names or ())
        layout = LAYOUTS.get(slots)
        if layout is None:
            raise EvaluationError(
                format_error(
                    f"class_names {list(slots)} do not name an embedding layout",
                    expected=f"one of {[list(k) for k in LAYOUTS if k]} or None (grouped items)",
                    received={"class_names": list(slots)},
                    fix="Pass the data's slots (data.slots) as class_names",
                )
            )
        k = max(len(slots), 1)
        n = len(y_pred)
        if y_pred.ndim != 2 or y_pred.shape[1] % k:
            raise EvaluationError(
                format_error(
                    f"y_pred of shape {y_pred.shape} does not hold {k} embeddings per example",
                    expected=f"(N, {k} x D): the embeddings of {list(slots) or 'each item'} "
                    "side by side",
                    received={"y_pred": y_pred.shape},
                )
            )
        vectors = ranking_unit(y_pred.reshape(n, k, -1))
        targets = np.asarray(y_true)
        if layout == "scored":
            metrics = self._scored(targets.reshape(-1), vectors)
            headline = "spearman"
        else:
            metrics = self._retrieval(layout, targets, vectors)
            headline = self.headline_metric
        metrics["dimension"] = int(vectors.shape[-1])
        return EvaluationReport(
            task=self.name,
            metrics=metrics,
            per_class={},
            confusion_matrix=None,
            class_names=[],
            num_examples=n,
            headline=headline,
        )

    @staticmethod
    def _scored(scores: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
        from finetunekit.evaluation import ranking

        cos = np.sum(vectors[:, 0] * vectors[:, 1], axis=1)
        metrics: dict[str, Any] = {
            "spearman": ranking.spearman(cos, scores),
            "pearson": ranking.pearson(cos, scores),
        }
        if np.isin(scores, (0.0, 1.0)).all() and len(np.unique(scores)) == 2:
            metrics.update(ranking.verification_metrics(cos[scores == 1], cos[scores == 0]))
        return metrics

    @staticmethod
    def _retrieval(layout: str, targets: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
        from finetunekit.evaluation import ranking

        n = len(vectors)
        if layout == "groups":
            groups = targets.reshape(-1)
            emb = vectors[:, 0]
            scores = emb @ emb.T
            same = groups[:, None] == groups[None, :]
            eye = np.eye(n, dtype=bool)
            metrics: dict[str, Any] = ranking.ranking_metrics(scores, same, exclude=eye)
            upper = np.triu_indices(n, 1)
            if len(upper[0]) > _VERIFY_PAIRS:  # a fixed sample of the item pairs
                pick = np.random.default_rng(0).choice(len(upper[0]), _VERIFY_PAIRS, False)
                upper = (upper[0][pick], upper[1][pick])
            pair_same = same[upper]
            pair_scores = scores[upper]
            metrics.update(
                ranking.verification_metrics(pair_scores[pair_same], pair_scores[~pair_same])
            )
            return metrics
        triplets = layout == "triplets"
        ids_from = 2 if triplets else 1
        if targets.ndim == 2 and targets.shape[1] >= ids_from + (3 if triplets else 2):
            ids = targets[:, ids_from:].astype(np.int64)
        else:  # bare group ids: every item distinct
            ids = np.arange(n * vectors.shape[1]).reshape(vectors.shape[1], n).T
        group = targets.reshape(n, -1)[:, 0]
        neg_group = targets.reshape(n, -1)[:, 1] if triplets else None
        q_rows = _first_rows(ids[:, 0])
        corpus_ids = [ids[:, 1]]
        corpus_vecs = [vectors[:, 1]]
        corpus_groups = [group]
        if neg_group is not None:  # triplets
            corpus_ids.append(ids[:, 2])
            corpus_vecs.append(vectors[:, 2])
            corpus_groups.append(neg_group)
        all_ids = np.concatenate(corpus_ids)
        c_rows = _first_rows(all_ids)
        c_ids = all_ids[c_rows]
        c_vecs = np.concatenate(corpus_vecs)[c_rows]
        c_groups = np.concatenate(corpus_groups)[c_rows]
        scores = vectors[q_rows, 0] @ c_vecs.T
        relevant = group[q_rows][:, None] == c_groups[None, :]
        exclude = ids[q_rows, 0][:, None] == c_ids[None, :]
        metrics = ranking.ranking_metrics(scores, relevant, exclude=exclude)
        if triplets:
            pos = np.sum(vectors[:, 0] * vectors[:, 1], axis=1)
            neg = np.sum(vectors[:, 0] * vectors[:, 2], axis=1)
            metrics.update(ranking.verification_metrics(pos, neg))
            metrics["triplet_accuracy"] = float(np.mean(pos > neg))
        else:
            keep = ~exclude
            metrics.update(
                ranking.verification_metrics(scores[relevant & keep], scores[~relevant & keep])
            )
        metrics["corpus_size"] = len(c_ids)
        return metrics


class _ItemsOf:
    """The items of pair data one by one, in example order: ``(B * slots, *item)`` batches."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def inputs_dataset(self, batch_size: int) -> Any:
        import tensorflow as tf

        def merge(x: Any) -> Any:
            return tf.reshape(x, (-1, *x.shape[2:]))

        return self._data.inputs_dataset(batch_size).map(merge)


def ranking_unit(vectors: np.ndarray) -> np.ndarray:
    """Vectors scaled to unit length along the last axis (cosine = dot product)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), np.float64)


def _first_rows(ids: np.ndarray) -> np.ndarray:
    """The rows where each distinct id first appears, in row order."""
    _, first = np.unique(ids, return_index=True)
    return np.sort(first)
