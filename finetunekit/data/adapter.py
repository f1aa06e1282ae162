"""Step 1 of fine-tuning: :class:`DatasetAdapter`, one view of the user's data.

A ``DatasetAdapter`` pairs a *source* of raw inputs (numpy arrays, a
``tf.data.Dataset`` or a folder of images) with small, validated, encoded
targets. It never copies or resizes the inputs: they stream through
``tf.data`` in their raw dtype and shape, and the model adapts them.
"""

from __future__ import annotations

import numbers
import os
import warnings
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import tensorflow as tf

from finetunekit.data.generators import generator_dataset
from finetunekit.data.options import without_autotune
from finetunekit.data.sources import (
    COLOR_CHANNELS,
    ArraySource,
    DirectorySource,
    TFDataSource,
    check_finite_inputs,
    check_input_array,
    find_unreadable_images,
    list_image_directory,
    normalize_tf_dataset,
    read_tf_labels,
    reshuffles_each_iteration,
)
from finetunekit.data.splitting import check_fraction, split_indices
from finetunekit.data.text import (
    TextSource,
    check_text_pairs,
    check_texts,
    check_texts_or_pairs,
    from_str_array,
    is_text_like,
)
from finetunekit.errors import ArgumentTypeError, DataError, LabelError, format_error
from finetunekit.tasks.base import Task
from finetunekit.tasks.labels import (
    LabelEncoding,
    encode_targets,
    reencode,
    task_of,
    validate_class_names,
    validate_task,
)

__all__ = ["DatasetAdapter", "as_adapter", "check_compatible"]

if TYPE_CHECKING:  # pairs.py is imported when pair data is made
    from finetunekit.data.pairs import PairSource

_Source: TypeAlias = "ArraySource | TFDataSource | DirectorySource | PairSource"
_INTERPOLATIONS = (
    "bilinear",
    "nearest",
    "bicubic",
    "area",
    "lanczos3",
    "lanczos5",
    "gaussian",
    "mitchellcubic",
)


def _positive_int(value: Any, name: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be an int",
                expected="an int >= 1",
                received={name: value},
                fix=f"Pass e.g. {name}={example}",
            )
        )
    if value < 1:
        raise DataError(
            format_error(
                f"{name} must be positive",
                expected="an int >= 1",
                received={name: value},
                fix=f"Pass e.g. {name}={example}",
            )
        )
    return int(value)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(
            format_error(f"{name} must be a bool", expected="True or False", received={name: value})
        )
    return bool(value)


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentTypeError(
            format_error("seed must be an int or None", expected="an int", received={"seed": seed})
        )
    return int(seed)


class DatasetAdapter:
    """Inputs and labels for fine-tuning, validated up front and streamed with ``tf.data``.

    Build one with :meth:`from_arrays`, :meth:`from_tf_dataset` or
    :meth:`from_directory` (not with ``DatasetAdapter(...)``). The task is
    inferred from the labels unless given:

    * ints -> class indices (``K = max + 1``, names ``"0" .. "K-1"``);
      strings -> class names (sorted); bools -> ``["False", "True"]``;
      exactly 2 classes -> ``"binary"``, more -> ``"multiclass"``.
    * one-hot rows -> ``"multiclass"`` (``"binary"`` with 2 columns);
      0/1 rows that are not one-hot -> ``"multilabel"``; an ``(N, 1)`` column
      of 0/1 -> ``"binary"``.
    * floats (1-D, or 2-D with values other than 0/1) -> ``"regression"``.
      Pass ``task="multiclass"`` to treat integer-valued floats as classes.

    Stored targets (:meth:`targets`) and batch targets (:meth:`as_dataset`):

    * multiclass: int64 indices (N,) -> one-hot float32 (B, K)
    * binary: int64 in {0, 1} (N,) -> float32 (B, 1); 1 means ``class_names[1]``
    * multilabel: float32 multi-hot (N, K) -> (B, K)
    * regression: float32 (N,) or (N, D) -> (B, D)

    Examples:
        >>> import numpy as np
        >>> data = DatasetAdapter.from_arrays(np.zeros((6, 8, 8), "uint8"), [0, 1, 2] * 2)
        >>> data.task, data.num_classes, len(data)
        ('multiclass', 3, 6)
    """

    _source: _Source
    _targets: np.ndarray
    _encoding: LabelEncoding
    _reshuffles: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ArgumentTypeError(
            format_error(
                "DatasetAdapter is not built directly",
                expected="one of its constructors",
                received={"args": args, "kwargs": kwargs},
                fix="Use DatasetAdapter.from_arrays(x, y), DatasetAdapter.from_tf_dataset(ds) "
                "or DatasetAdapter.from_directory(path)",
            )
        )

    @classmethod
    def _create(
        cls,
        source: _Source,
        targets: np.ndarray,
        encoding: LabelEncoding,
        *,
        reshuffles: bool = False,
    ) -> DatasetAdapter:
        self = object.__new__(cls)
        self._source = source
        self._targets = targets
        self._encoding = encoding
        self._reshuffles = reshuffles
        return self

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_arrays(
        cls,
        x: Any,
        y: Any,
        *,
        task: str | Task | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
    ) -> DatasetAdapter:
        """Wraps in-memory inputs and labels (no copy of ``x`` beyond ``np.asarray``).

        Args:
            x: Inputs of shape (N, D) features, (N, H, W) grayscale, (N, H, W, C)
                images or (N, T, H, W, C) clips, any numeric dtype; or strings:
                (N,) texts or (N, 2) sentence pairs (see :meth:`from_texts`).
            y: N labels: ints, strings, bools, one-hot / multi-hot rows or float
                targets (see the class docstring for the inference rules).
            task: ``"multiclass"``, ``"binary"``, ``"multilabel"``,
                ``"regression"``, a :class:`~finetunekit.Task` object (your own
                kind of target, see ``docs/tasks.md``) or None to infer it
                from ``y``.
            class_names: The classes in index order (string labels are mapped
                into it; ints index it). For regression: target names.

        Returns:
            A validated adapter.

        Raises:
            DataError: ``x`` is empty, ragged, object-valued, has fewer than 2
                dimensions, holds NaN/inf, or its length differs from ``y``'s.
            LabelError: The labels cannot be used or contradict ``task`` /
                ``class_names``.
            ArgumentTypeError: An argument has the wrong type.

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.ones((4, 3)), ["cat", "dog", "dog", "cat"])
            >>> data.task, data.class_names
            ('binary', ['cat', 'dog'])
        """
        task = validate_task(task)
        names = validate_class_names(class_names)
        if is_text_like(x):  # texts (N,) or sentence pairs (N, 2): see from_texts
            texts = check_texts_or_pairs(x)
            return cls._from_text_array(texts, y, task=task, class_names=names)
        x_arr = check_input_array(x)
        if _not_a_label_sequence(y):
            raise ArgumentTypeError(
                format_error(
                    "y must be an array of labels",
                    expected="a list or array with one label (or one target row) per example",
                    received={"y": y},
                    fix="Pass y as a list or numpy array",
                )
            )
        n_y = len(y)
        if n_y != len(x_arr):
            raise DataError(
                format_error(
                    f"x and y have different lengths ({len(x_arr)} inputs, {n_y} labels)",
                    expected="one label per input",
                    received={"x": x_arr, "y": np.shape(y) if n_y else y},
                    fix="Check that x and y come from the same examples, in the same order",
                )
            )
        targets, encoding = encode_targets(y, task=task, class_names=names, name="y")
        check_finite_inputs(x_arr)
        return cls._create(ArraySource(x_arr), targets, encoding)

    @classmethod
    def from_texts(
        cls,
        texts: Any,
        y: Any,
        *,
        task: str | Task | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
    ) -> DatasetAdapter:
        """Wraps raw texts (one string per example) and their labels.

        The texts stay strings: the model built on a text backbone
        (``Backbone.from_preset``) tokenizes them itself, so it also predicts
        on raw strings. ``from_arrays`` with a string array does the same.

        Args:
            texts: N strings (list, tuple or numpy array).
            y: N labels, as in :meth:`from_arrays`.
            task: As in :meth:`from_arrays`.
            class_names: As in :meth:`from_arrays`.

        Returns:
            A validated adapter with ``input_shape == ()`` and ``input_dtype == "string"``.

        Raises:
            DataError: A text is not a string (e.g. ``None``), or lengths differ.
            LabelError: The labels cannot be used.

        Examples:
            >>> data = DatasetAdapter.from_texts(["great match", "rain again"], ["sport", "weather"])
            >>> data.task, data.input_shape, data.input_dtype
            ('binary', (), 'string')
        """
        return cls._from_text_array(
            check_texts(texts),
            y,
            task=validate_task(task),
            class_names=validate_class_names(class_names),
        )

    @classmethod
    def from_text_pairs(
        cls,
        first: Any,
        second: Any,
        y: Any,
        *,
        task: str | Task | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
    ) -> DatasetAdapter:
        """Wraps sentence pairs (matching, answer selection, entailment) and their labels.

        Each example is ``(first[i], second[i])``; the model's preprocessor
        packs both segments (``[CLS] first [SEP] second [SEP]`` for BERT).
        Inputs are stored as an ``(N, 2)`` string array, so the fine-tuned
        model predicts on such arrays (or ``result.predict((first, second))``).

        Args:
            first: N first segments.
            second: N second segments.
            y: N labels, as in :meth:`from_arrays`.
            task: As in :meth:`from_arrays`.
            class_names: As in :meth:`from_arrays`.

        Returns:
            A validated adapter with ``input_shape == (2,)`` and ``input_dtype == "string"``.

        Examples:
            >>> data = DatasetAdapter.from_text_pairs(["a cat", "a cat"], ["a kitten", "rain"],
            ...                                       ["same", "different"])
            >>> data.input_shape, data.class_names
            ((2,), ['different', 'same'])
        """
        return cls._from_text_array(
            check_text_pairs(first, second),
            y,
            task=validate_task(task),
            class_names=validate_class_names(class_names),
        )

    @classmethod
    def _from_text_array(
        cls, texts: np.ndarray, y: Any, *, task: Task | None, class_names: list[str] | None
    ) -> DatasetAdapter:
        if _not_a_label_sequence(y):
            raise ArgumentTypeError(
                format_error(
                    "y must be an array of labels",
                    expected="a list or array with one label per text",
                    received={"y": y},
                    fix="Pass y as a list or numpy array",
                )
            )
        if len(y) != len(texts):
            raise DataError(
                format_error(
                    f"The texts and y have different lengths ({len(texts)} texts, {len(y)} labels)",
                    expected="one label per text",
                    received={"texts": len(texts), "y": len(y)},
                    fix="Check that the texts and labels come from the same examples",
                )
            )
        targets, encoding = encode_targets(y, task=task, class_names=class_names, name="y")
        return cls._create(from_str_array(texts), targets, encoding)

    # ------------------------------------------------------------------ embeddings

    @classmethod
    def from_pairs(cls, anchors: Any, positives: Any, *, task: Any = None) -> DatasetAdapter:
        """Pairs of related items for the ``embedding`` task: ``(anchors[i], positives[i])``.

        Texts (lists of strings) or arrays (images, features) of one shape
        and dtype. While training, the other positives of a batch are each
        anchor's negatives; pairs linked through identical items (a query
        with two passages, a passage shared by two queries) form one group
        and are never each other's negatives. See ``docs/embeddings.md``.

        Args:
            anchors: N items (queries).
            positives: N items (the passage answering each query).
            task: ``None`` or a :class:`~finetunekit.tasks.Embedding` with
                other settings (loss, temperature, projection).

        Returns:
            An adapter with ``task == "embedding"``, ``slots == ("anchor",
            "positive")`` and ``input_shape`` the shape of ONE item.

        Raises:
            DataError: lengths differ, empty strings, items of different
                kinds / shapes, NaN.

        Examples:
            >>> data = DatasetAdapter.from_pairs(["how to boil an egg", "is it raining"],
            ...                                  ["Boil it for 8 minutes.", "Rain until noon."])
            >>> data.task, data.slots, data.input_shape, len(data)
            ('embedding', ('anchor', 'positive'), (), 2)
        """
        from finetunekit.data.pairs import pair_data

        return cls._create(*pair_data({"anchors": anchors, "positives": positives}, task))

    @classmethod
    def from_triplets(
        cls, anchors: Any, positives: Any, negatives: Any, *, task: Any = None
    ) -> DatasetAdapter:
        """Triplets ``(anchor, positive, hard negative)`` for the ``embedding`` task.

        As :meth:`from_pairs`, plus a negative per anchor (an item that looks
        related but is not); it may not be linked to the anchor as a positive
        anywhere in the data.

        Examples:
            >>> data = DatasetAdapter.from_triplets(["q1", "q2"], ["p1", "p2"], ["n1", "n2"])
            >>> data.slots
            ('anchor', 'positive', 'negative')
        """
        from finetunekit.data.pairs import pair_data

        slots = {"anchors": anchors, "positives": positives, "negatives": negatives}
        return cls._create(*pair_data(slots, task))

    @classmethod
    def from_scored_pairs(
        cls, first: Any, second: Any, scores: Any, *, task: Any = None
    ) -> DatasetAdapter:
        """Pairs with a similarity score in [-1, 1] (``embedding`` task, cosine loss).

        The model learns ``cos(embed(first), embed(second)) ~ score``; 0/1
        scores are same / different labels (verification), and the
        evaluation adds ROC AUC and the best threshold.

        Examples:
            >>> data = DatasetAdapter.from_scored_pairs(["a cat", "a cat"], ["a kitten", "a car"],
            ...                                         [0.9, 0.1])
            >>> data.slots, data.targets().tolist()
            (('first', 'second'), [0.8999999761581421, 0.10000000149011612])
        """
        from finetunekit.data.pairs import pair_data

        return cls._create(*pair_data({"first": first, "second": second}, task, scores))

    @classmethod
    def from_groups(cls, items: Any, groups: Any, *, task: Any = None) -> DatasetAdapter:
        """Items with group labels (``embedding`` task): items of one group are positives.

        E.g. photos labelled by person or product, texts by topic. Every group
        needs at least two items. While training, each batch's items of the
        same group pull together and the others push apart (supervised
        contrastive loss); batches are drawn at random, so use batches large
        enough to hold several items of a group.

        Args:
            items: N texts or an array of N items.
            groups: N group labels (ints or strings).
            task: ``None`` or a :class:`~finetunekit.tasks.Embedding`.

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_groups(np.zeros((4, 8, 8), "uint8"), [0, 0, 1, 1])
            >>> data.task, data.slots, data.input_shape
            ('embedding', (), (8, 8))
        """
        from finetunekit.data.pairs import group_data

        return cls._create(*group_data(items, groups, task))

    # ------------------------------------------------------------------ generative text

    @classmethod
    def from_prompts(
        cls,
        prompts: Any,
        responses: Any = None,
        *,
        prompt_column: str = "prompt",
        response_column: str = "response",
        chat_template: Any = None,
        task: Any = None,
    ) -> DatasetAdapter:
        """Prompt / response pairs for the ``generative`` task (a causal language model).

        The model learns to continue each prompt with its response; the loss
        counts the response tokens only. See ``docs/generative.md``.

        Args:
            prompts: N prompt strings; or the path of a ``.jsonl`` / ``.json``
                / ``.csv`` file with prompt and response columns; or N chat
                conversations (lists of ``{"role", "content"}`` messages, the
                last one the assistant's answer).
            responses: N response strings (not with a file or conversations).
            prompt_column: the file's prompt column.
            response_column: the file's response column.
            chat_template: conversations only: ``"gemma"`` or a callable
                ``messages -> prompt`` (KerasHub ships no chat templates).
            task: ``None`` or a :class:`~finetunekit.tasks.Generative`.

        Returns:
            An adapter with ``task == "generative"``, ``input_shape == (2,)``
            (prompt, response) and ``input_dtype == "string"``.

        Raises:
            ArgumentTypeError: a single string, or responses given twice.
            DataError: empty data or strings, non-strings, different lengths,
                a missing file, or an unknown column.

        Examples:
            >>> data = DatasetAdapter.from_prompts(["2+2=", "3+3="], ["4", "6"])
            >>> data.task, data.input_shape, len(data)
            ('generative', (2,), 2)
        """
        from finetunekit.data.prompts import prompt_data

        return cls._create(
            *prompt_data(
                prompts,
                responses,
                prompt_column=prompt_column,
                response_column=response_column,
                chat_template=chat_template,
                task=task,
            )
        )

    def token_length_stats(self, tokenizer: Any) -> dict[str, dict[str, float]]:
        """Token counts of the prompts, responses and whole examples (generative data).

        Args:
            tokenizer: a KerasHub tokenizer or causal LM, or a
                ``Backbone.from_preset(...)`` (its tokenizer is loaded).

        Returns:
            ``{"prompt" | "response" | "total": {"min", "mean", "median",
            "p95", "max"}}``; ``"total"`` adds the start and end tokens.

        Raises:
            DataError: the adapter does not hold prompt / response pairs.

        Examples:
            >>> data.token_length_stats(ftk.Backbone.from_preset("gpt2_dir"))  # doctest: +SKIP
        """
        from finetunekit.data.prompts import token_length_stats

        if self.task != "generative":
            raise DataError(
                format_error(
                    "token_length_stats() needs prompt / response pairs",
                    expected="an adapter from DatasetAdapter.from_prompts",
                    received={"task": self.task},
                )
            )
        return token_length_stats(self._source.sample(len(self)), tokenizer)

    # ------------------------------------------------------------------ detection

    @classmethod
    def from_detection(
        cls,
        images: Any,
        boxes: Any,
        labels: Any,
        *,
        box_format: str = "xyxy",
        class_names: list[str] | tuple[str, ...] | None = None,
        task: Any = None,
    ) -> DatasetAdapter:
        """Images with boxes and a class per box, for the ``detection`` task.

        Boxes are checked and stored as absolute ``xyxy`` pixels of each
        image (``targets()``: ``(N, M, 5)``, padding rows ``-1``); see
        ``docs/detection.md`` and :mod:`finetunekit.data.detection`.
        ``as_dataset`` yields ``(images, {"boxes": (B, M, 4), "labels": (B,
        M)})``, images of different sizes padded at the bottom and right to
        the batch's largest.

        Args:
            images: an array ``(N, H, W, C)`` / ``(N, H, W)``, or a list of
                ``(H, W, C)`` arrays of different sizes (one dtype and channel
                count).
            boxes: one ``(k, 4)`` array per image (``k`` may be 0).
            labels: one ``(k,)`` array per image: class indices, or class
                names (strings).
            box_format: ``"xyxy"``, ``"xywh"``, ``"yxyx"``, ``"cxcywh"`` in
                pixels, or the same with ``"rel_"`` for fractions of the
                image's width and height.
            class_names: the classes in index order (default: ``"0"`` ..
                up to the largest index, or the sorted names).
            task: ``None`` or a :class:`~finetunekit.tasks.Detection`.

        Raises:
            DataError: counts that differ, a box outside its image (beyond 1
                px, which is clipped), zero or negative width or height, an
                unknown ``box_format``, NaN, no box at all.
            LabelError: a label out of range or a box without a label.

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_detection(
            ...     np.zeros((2, 32, 32, 3), "uint8"),
            ...     boxes=[[[4, 4, 12, 20], [0, 0, 32, 8]], []], labels=[[0, 1], []],
            ...     box_format="xyxy", class_names=["cat", "dog"])
            >>> data.task, len(data), data.class_counts(), data.targets().shape
            ('detection', 2, {'cat': 1, 'dog': 1}, (2, 2, 5))
        """
        from finetunekit.data.detection import detection_data

        return cls._create(
            *detection_data(
                images, boxes, labels, box_format=box_format, class_names=class_names, task=task
            )
        )

    @classmethod
    def from_coco(
        cls,
        annotations_json: str | os.PathLike[str] | dict[str, Any],
        image_dir: str | os.PathLike[str],
        *,
        task: Any = None,
        validate: bool = False,
    ) -> DatasetAdapter:
        """A COCO ``instances`` annotation file and its image folder (``detection`` task).

        Category ids map to class indices in ascending id order, with the
        categories' names as ``class_names``; ``bbox`` is ``[x, y, width,
        height]`` in pixels. Crowd annotations (``iscrowd: 1``) are left out:
        they mark a region of many objects, not one box. Images without
        annotations are kept (no boxes). Files are decoded (RGB, uint8) while
        a dataset is iterated; ``validate=True`` decodes every file now and
        checks its size against the annotation.

        Raises:
            DataError: missing keys, an annotation of an unlisted image or
                category, a bad box, a listed image absent from ``image_dir``.

        Examples:
            >>> data = DatasetAdapter.from_coco("instances_val.json", "val2017/")  # doctest: +SKIP
        """
        from finetunekit.data.detection import coco_data

        validate = _check_bool(validate, "validate")
        return cls._create(*coco_data(annotations_json, image_dir, task=task, validate=validate))

    @classmethod
    def from_voc(
        cls,
        folder: str | os.PathLike[str],
        *,
        class_names: list[str] | tuple[str, ...] | None = None,
        include_difficult: bool = True,
        task: Any = None,
        validate: bool = False,
    ) -> DatasetAdapter:
        """A Pascal VOC folder: ``Annotations/*.xml`` and ``JPEGImages/`` (``detection`` task).

        VOC's 1-based, inclusive pixel boxes become ``[xmin - 1, ymin - 1,
        xmax, ymax]``. Class names default to the sorted object names found;
        ``include_difficult=False`` drops objects marked ``<difficult>1``.

        Raises:
            DataError: malformed XML or missing tags, a bad box, an image
                absent from ``JPEGImages/``.
            LabelError: an object name not in ``class_names``.

        Examples:
            >>> data = DatasetAdapter.from_voc("VOC2012/")  # doctest: +SKIP
        """
        from finetunekit.data.detection import voc_data

        include_difficult = _check_bool(include_difficult, "include_difficult")
        validate = _check_bool(validate, "validate")
        return cls._create(
            *voc_data(
                folder,
                class_names=class_names,
                include_difficult=include_difficult,
                task=task,
                validate=validate,
            )
        )

    @classmethod
    def from_generator(
        cls,
        generator: Any,
        *,
        task: str | Task | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
    ) -> DatasetAdapter:
        """Wraps a generator function yielding ``(x, y)`` examples (e.g. clips read from disk).

        ``generator`` is called anew for every pass (so it must yield the same
        examples in the same order each time); the shapes and dtypes are taken
        from its first example. Nothing is held in memory but the labels (read
        in one pass), so clips ``(T, H, W, C)`` that do not fit in memory stream
        from their files. Built on ``tf.data.Dataset.from_generator`` and
        :meth:`from_tf_dataset`.

        Args:
            generator: A callable with no arguments returning an iterator of
                ``(x, y)`` pairs, one example each.
            task: As in :meth:`from_arrays`.
            class_names: As in :meth:`from_arrays`.

        Returns:
            A validated adapter.

        Raises:
            ArgumentTypeError: ``generator`` is not callable (e.g. a generator
                object, which can only be iterated once).
            DataError: It yields nothing or something other than ``(x, y)``.

        Examples:
            >>> import numpy as np
            >>> def clips():
            ...     for i in range(4):
            ...         yield np.full((3, 8, 8, 1), i, "uint8"), i % 2
            >>> data = DatasetAdapter.from_generator(clips)
            >>> data.input_shape, len(data)
            ((3, 8, 8, 1), 4)
        """
        return cls.from_tf_dataset(
            generator_dataset(generator), task=task, class_names=class_names, batched=False
        )

    @classmethod
    def from_tf_dataset(
        cls,
        ds: tf.data.Dataset,
        *,
        task: str | Task | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
        batched: bool | None = None,
    ) -> DatasetAdapter:
        """Wraps a ``tf.data.Dataset`` of ``(x, y)`` pairs (or ``{"x": ..., "y": ...}``).

        Makes ONE pass over the labels only (``ds.map(lambda x, y: y)``; note
        that work done upstream of that map, such as decoding in an earlier
        ``map``, still runs) to infer the task, length and class counts; the
        labels are kept in numpy, the inputs stay in the dataset.

        The dataset must be finite and re-iterable, yielding the same examples
        in the same order on every pass (no ``shuffle`` with
        ``reshuffle_each_iteration=True``; use ``as_dataset(shuffle=True)``
        instead). A reshuffling dataset only warns here, but :meth:`split`
        refuses it and :meth:`targets` would not line up with predictions.
        NaN/inf in the inputs are not checked (that would need a full pass).

        Args:
            ds: The dataset, batched or not.
            task: As in :meth:`from_arrays`.
            class_names: As in :meth:`from_arrays`.
            batched: Whether ``ds`` yields batches. None detects it: x and y
                both with an unknown leading dimension (``ds.batch(n)``), or a
                trailing ``batch(n, drop_remainder=True)``.

        Returns:
            A validated adapter.

        Raises:
            DataError: Wrong structure (not ``(x, y)``), infinite or empty.
            LabelError: The labels cannot be used.

        Examples:
            >>> import numpy as np, tensorflow as tf
            >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), [0, 1, 1, 0]))
            >>> DatasetAdapter.from_tf_dataset(ds.batch(2)).task
            'binary'
        """
        task = validate_task(task)
        names = validate_class_names(class_names)
        pairs, examples, x_spec, _, batched = normalize_tf_dataset(ds, batched)
        reshuffles = reshuffles_each_iteration(ds)
        if reshuffles:
            warnings.warn(
                "ds reshuffles on every pass (shuffle(..., reshuffle_each_iteration=True)). "
                "Training works, but split() is refused and targets() will not line up with "
                "predictions. Pass an unshuffled dataset and use as_dataset(shuffle=True).",
                UserWarning,
                stacklevel=2,
            )
        labels = read_tf_labels(pairs, batched, ds)
        targets, encoding = encode_targets(labels, task=task, class_names=names, name="ds.y")
        source = TFDataSource(examples, x_spec, len(labels))
        return cls._create(source, targets, encoding, reshuffles=reshuffles)

    @classmethod
    def from_directory(
        cls,
        path: str | os.PathLike[str],
        *,
        image_size: tuple[int, int] | int = (224, 224),
        color_mode: str = "rgb",
        class_names: list[str] | tuple[str, ...] | None = None,
        task: str | Task | None = None,
        interpolation: str = "bilinear",
        validate: bool = False,
    ) -> DatasetAdapter:
        """Images in one sub-folder per class (``photos/cat/*.jpg``, ``photos/dog/*.jpg``).

        Files are listed with ``keras.utils.image_dataset_from_directory``
        (formats ``.bmp .gif .jpeg .jpg .png``, hidden folders skipped); class
        counts come from the file list, nothing is decoded. Images are decoded
        and resized to ``image_size`` one by one, in parallel, only while a
        dataset is iterated (float32, values 0..255, like Keras).

        An unreadable or corrupt image file makes iteration fail with a
        TensorFlow decode error when it is reached; ``validate=True`` decodes
        every file now (slow for big folders) and reports all bad files in one
        :class:`DataError`.

        Args:
            path: The folder holding the class sub-folders.
            image_size: ``(height, width)`` every image is resized to.
            color_mode: ``"rgb"``, ``"rgba"`` or ``"grayscale"``.
            class_names: Sub-folders to use, in class order (default: all,
                sorted).
            task: None (2 classes -> ``"binary"``, else ``"multiclass"``),
                ``"multiclass"`` or ``"binary"``.
            interpolation: Resize method (as in Keras), default ``"bilinear"``.
            validate: Decode every file now and report unreadable ones.

        Returns:
            A validated adapter.

        Raises:
            DataError: Missing path, no sub-folders, no images, bad files.
            LabelError: Unknown class names, or a single class with images.

        Examples:
            >>> data = DatasetAdapter.from_directory("photos/", image_size=(160, 160))  # doctest: +SKIP
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ArgumentTypeError(
                format_error(
                    "path must be a string or os.PathLike",
                    expected="the path of a folder",
                    received={"path": path},
                    fix="Use DatasetAdapter.from_arrays / from_tf_dataset for in-memory data",
                )
            )
        path_str = os.fspath(path)
        size = _check_image_size(image_size)
        if not isinstance(color_mode, str) or color_mode not in COLOR_CHANNELS:
            raise DataError(
                format_error(
                    "Unknown color_mode",
                    expected=f"one of {list(COLOR_CHANNELS)}",
                    received={"color_mode": color_mode},
                )
            )
        if not isinstance(interpolation, str) or interpolation.lower() not in _INTERPOLATIONS:
            raise DataError(
                format_error(
                    "Unknown interpolation",
                    expected=f"one of {list(_INTERPOLATIONS)}",
                    received={"interpolation": interpolation},
                )
            )
        validate = _check_bool(validate, "validate")
        task = validate_task(task)
        if task is not None and not task.single_label:
            raise LabelError(
                format_error(
                    f'from_directory cannot build task="{task.name}": each image has one class',
                    expected='task=None, "multiclass" or "binary"',
                    received={"task": task.name},
                    fix="Use from_arrays / from_tf_dataset for multi-label or regression targets",
                )
            )
        names = validate_class_names(class_names)
        files, labels, folder_names, x_spec = list_image_directory(
            path_str,
            image_size=size,
            color_mode=color_mode,
            class_names=names,
            interpolation=interpolation.lower(),
        )
        counts = np.bincount(labels, minlength=len(folder_names))
        if names is None and np.count_nonzero(counts) < 2:
            with_images = [n for n, c in zip(folder_names, counts, strict=True) if c]
            raise LabelError(
                format_error(
                    f"Only one class has images: {with_images} (sub-folders: {folder_names})",
                    expected="images in at least two class sub-folders",
                    received={"path": path_str},
                    fix="Add a sub-folder of images per class",
                )
            )
        empty = [n for n, c in zip(folder_names, counts, strict=True) if c == 0]
        if empty:
            warnings.warn(
                f"Class sub-folders without images: {empty}; they stay classes with 0 examples.",
                UserWarning,
                stacklevel=2,
            )
        if validate:
            bad = find_unreadable_images(files, COLOR_CHANNELS[color_mode])
            if bad:
                listed = "; ".join(f"{p} ({why})" for p, why in bad[:10])
                more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
                raise DataError(
                    format_error(
                        f"{len(bad)} of {len(files)} image files cannot be decoded: {listed}{more}",
                        expected="readable BMP, GIF, JPEG or PNG files",
                        received={"path": path_str},
                        fix="Delete or re-save those files",
                    )
                )
        targets, encoding = encode_targets(
            labels, task=task, class_names=folder_names, name="path", check_single_class=False
        )
        source = DirectorySource(
            np.asarray(files, dtype=str),
            x_spec,
            size,
            COLOR_CHANNELS[color_mode],
            interpolation.lower(),
            color_mode,
        )
        return cls._create(source, targets, encoding)

    # ------------------------------------------------------------------ properties

    @property
    def task(self) -> str:
        """The task's name: ``"multiclass"``, ``"binary"``, ``"multilabel"``, ``"regression"``
        or a user task's name (see :mod:`finetunekit.tasks`)."""
        return self._encoding.task

    @property
    def task_object(self) -> Task:
        """The :class:`~finetunekit.Task` that knows these targets.

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.zeros((3, 2)), [0, 1, 2])
            >>> data.task_object.activation
            'softmax'
        """
        return task_of(self._encoding)

    @property
    def num_classes(self) -> int | None:
        """K for multiclass/multilabel, 2 for binary, None for tasks without classes."""
        return self.task_object.num_classes(self._encoding)

    @property
    def class_names(self) -> list[str]:
        """The class names in index order (target names or ``[]`` for regression); a copy."""
        return list(self._encoding.class_names)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Raw per-example input shape, e.g. ``(28, 28)`` or ``(32, 32, 3)``."""
        return self._source.input_shape

    @property
    def input_dtype(self) -> str:
        """Raw input dtype name, e.g. ``"uint8"`` or ``"float32"``."""
        return self._source.input_dtype

    @property
    def image_sizes(self) -> np.ndarray | None:
        """Detection data: each image's ``(height, width)``, int64 ``(N, 2)``; else ``None``."""
        sizes = getattr(self._source, "sizes", None)
        return None if sizes is None else np.array(sizes, np.int64)

    @property
    def image_decoding(self) -> dict[str, Any] | None:
        """How a folder source decodes its files, ``None`` for other sources.

        ``{"image_size": [h, w], "color_mode": ..., "interpolation": ...}``: a
        model trained on this data takes images of any size with this colour
        mode and resizes them inside itself (``finetunekit.data.decode``).

        Examples:
            >>> import numpy as np
            >>> DatasetAdapter.from_arrays(np.zeros((2, 4, 4)), [0, 1]).image_decoding is None
            True
        """
        settings = getattr(self._source, "settings", None)
        return dict(settings) if settings else None

    @property
    def target_dim(self) -> int:
        """Width of the batch targets: K, 1 (binary) or D (regression)."""
        return self.task_object.target_dim(self._encoding)

    @property
    def source(self) -> str:
        """Where the inputs come from: ``"arrays"``, ``"tf.data"`` or ``"directory"``
        (``"files"`` for ``from_coco`` / ``from_voc``)."""
        return self._source.kind

    @property
    def slots(self) -> tuple[str, ...]:
        """The items of each example: ``()`` for one input, else the slot names.

        ``("anchor", "positive")`` for :meth:`from_pairs`, ``("anchor",
        "positive", "negative")`` for :meth:`from_triplets`, ``("first",
        "second")`` for :meth:`from_scored_pairs`. Batches of such data are
        ``(B, len(slots), *input_shape)``.

        Examples:
            >>> import numpy as np
            >>> DatasetAdapter.from_arrays(np.zeros((2, 3)), [0, 1]).slots
            ()
        """
        return tuple(getattr(self._source, "slot_names", ()))

    @property
    def encoding(self) -> LabelEncoding:
        """How raw labels map to the stored targets (internal, read-only)."""
        return self._encoding

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        names = self._encoding.class_names
        if not self.task_object.has_classes:
            classes = f"target_dim={self.target_dim}"
        elif len(names) <= 6:
            classes = f"classes={list(names)}"
        else:
            classes = f"classes={len(names)} ({', '.join(repr(n) for n in names[:3])}, ...)"
        return (
            f"DatasetAdapter(task={self.task!r}, n={len(self)}, {classes}, "
            f"input_shape={self.input_shape}, input_dtype={self.input_dtype!r}, "
            f"source={self.source!r})"
        )

    # ------------------------------------------------------------------ labels

    def class_counts(self) -> dict[str, int]:
        """Number of examples of each class, in class order.

        For multilabel data: the number of examples carrying each label.

        Raises:
            DataError: The task has no classes (regression).

        Examples:
            >>> import numpy as np
            >>> DatasetAdapter.from_arrays(np.zeros((3, 2)), ["b", "a", "b"]).class_counts()
            {'a': 1, 'b': 2}
        """
        return self.task_object.class_counts(self._targets, list(self._encoding.class_names))

    def targets(self) -> np.ndarray:
        """The stored targets (a copy), in example order; see the class docstring.

        Examples:
            >>> import numpy as np
            >>> DatasetAdapter.from_arrays(np.zeros((3, 2)), ["b", "a", "b"]).targets()
            array([1, 0, 1])
        """
        return self._targets.copy()

    def relabelled(self, task: Task | None, class_names: list[str] | None) -> DatasetAdapter:
        """The same examples with their targets mapped onto ``task`` / ``class_names``.

        Lossless only, by class name (see :func:`finetunekit.tasks.labels.reencode`);
        the inputs are shared, not copied.

        Raises:
            LabelError: the classes or the task cannot be mapped.
        """
        targets, encoding = reencode(
            self._targets, self._encoding, task=task, class_names=class_names
        )
        return DatasetAdapter._create(self._source, targets, encoding, reshuffles=self._reshuffles)

    def with_length_grouping(self, enabled: bool = True) -> DatasetAdapter:
        """The same texts, with shuffled batches grouped by length (the default) or not.

        Training batches of texts group examples of similar length (see
        :func:`finetunekit.data.text.length_grouped_batches`) so that, with a
        text backbone's dynamic padding, a batch costs its own longest text.
        ``with_length_grouping(False)`` draws plain shuffled batches instead
        (the order of every other adapter). Validation and prediction keep
        the example order either way.

        Raises:
            DataError: the adapter does not hold texts.
            ArgumentTypeError: ``enabled`` is not a bool.

        Examples:
            >>> data = DatasetAdapter.from_texts(["a b", "c", "d e f", "g"], [0, 1, 0, 1])
            >>> data.with_length_grouping(False).length_grouping
            False
        """
        if not isinstance(self._source, TextSource):
            raise DataError(
                format_error(
                    "Length grouping applies to texts only",
                    expected="an adapter of texts (from_texts, from_text_pairs, from_groups, ...)",
                    received={"source": self.source},
                    fix="Leave the batching of non-text data as it is",
                )
            )
        return DatasetAdapter._create(
            self._source.grouped(enabled),
            self._targets,
            self._encoding,
            reshuffles=self._reshuffles,
        )

    @property
    def length_grouping(self) -> bool | None:
        """Whether shuffled batches group texts by length (``None``: not texts)."""
        return self._source.group_by_length if isinstance(self._source, TextSource) else None

    # ------------------------------------------------------------------ splitting

    def _subset(self, idx: np.ndarray) -> DatasetAdapter:
        return DatasetAdapter._create(
            self._source.subset(idx),
            self._targets[idx],
            self._encoding,
            reshuffles=self._reshuffles,
        )

    def split(self, fraction: float, seed: int = 0) -> tuple[DatasetAdapter, DatasetAdapter]:
        """Splits off ``fraction`` of the examples: returns ``(rest, held_out)``.

        Stratified by class for multiclass / binary (each class with >= 2
        examples lands in both parts; single-example classes stay in ``rest``),
        random for multilabel / regression. The same seed gives the same split;
        both parts keep the original example order, task and class names
        (even when a class is missing from a part). Nothing is copied: array
        parts index the parent's array, tf.data and directory parts select by
        example index / file.

        Args:
            fraction: Share held out, strictly between 0 and 1.
            seed: Seed of the split.

        Returns:
            ``(rest, held_out)``.

        Raises:
            DataError: ``fraction`` out of range, too few examples, or a
                ``tf.data`` source that reshuffles every pass.

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.zeros((10, 2)), [0, 1] * 5)
            >>> train, val = data.split(0.2, seed=0)
            >>> len(train), len(val)
            (8, 2)
        """
        fraction = check_fraction(fraction, seed)
        if self._reshuffles:
            raise DataError(
                format_error(
                    "Cannot split a tf.data source that reshuffles on every pass: the parts "
                    "would overlap and change each epoch",
                    expected="a dataset that yields the same examples in the same order "
                    "on every pass",
                    received={"fraction": fraction},
                    fix="Build the adapter from the dataset before .shuffle() (or with "
                    "reshuffle_each_iteration=False) and use as_dataset(shuffle=True)",
                )
            )
        rest, held = split_indices(
            self._targets,
            self.num_classes if self.task_object.single_label else None,
            fraction,
            seed,
        )
        return self._subset(rest), self._subset(held)

    # ------------------------------------------------------------------ datasets

    def as_dataset(
        self, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> tf.data.Dataset:
        """Batched, prefetched ``tf.data`` of ``(x, y)`` for ``model.fit``.

        ``x`` keeps the raw dtype and per-example shape (never resized here);
        ``y`` is float32 (one-hot for multiclass, ``(B, 1)`` for binary,
        ``(B, K)`` multi-hot, ``(B, D)`` regression). With ``shuffle=True`` the
        order changes every epoch; a ``seed`` makes that sequence repeatable.
        Array sources shuffle indices and gather whole batches; directory
        sources shuffle file names; tf.data sources shuffle in a buffer of
        about 256 MiB of examples. tf.data's autotuning is switched off
        (``finetunekit/data/options.py``: it can make deleting an iterator
        wait about a second).

        Args:
            batch_size: Examples per batch (the last batch may be smaller).
            shuffle: Shuffle every epoch.
            seed: Seed of the shuffle (None: not repeatable).

        Returns:
            The dataset.

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.zeros((5, 4), "uint8"), [0, 1, 2, 0, 1])
            >>> x, y = next(iter(data.as_dataset(2)))
            >>> x.dtype.name, y.shape
            ('uint8', TensorShape([2, 3]))
        """
        batch_size = _positive_int(batch_size, "batch_size", "32")
        shuffle = _check_bool(shuffle, "shuffle")
        seed = _check_seed(seed)
        ds = self._source.dataset(batch_size, self._targets, self._encoding, shuffle, seed)
        return without_autotune(ds)  # data/options.py: no second-long waits at each epoch's end

    def inputs_dataset(self, batch_size: int) -> tf.data.Dataset:
        """Batched ``tf.data`` of raw inputs only, in example order (for ``predict``).

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.zeros((5, 4)), [0, 1, 2, 0, 1])
            >>> [int(b.shape[0]) for b in data.inputs_dataset(2)]
            [2, 2, 1]
        """
        batch_size = _positive_int(batch_size, "batch_size", "32")
        return without_autotune(self._source.inputs(batch_size))

    def replay_problem(self) -> str | None:
        """Why the inputs may differ from pass to pass (``None`` when they never do).

        Feature caching relies on ``inputs_dataset`` yielding the same values
        in the same order on every pass: a ``tf.data`` source that reshuffles
        or draws random numbers (augmentation) does not.

        Examples:
            >>> import numpy as np
            >>> DatasetAdapter.from_arrays(np.zeros((4, 2)), [0, 1, 0, 1]).replay_problem() is None
            True
        """
        if self._reshuffles:
            return "the tf.data source reshuffles on every pass"
        if getattr(self._source, "order", None) is None:
            return f"the {self.source!r} source cannot replay its example order"
        check = getattr(self._source, "random_ops", None)
        found = check() if check is not None else []
        if found:
            return f"the tf.data source draws random numbers (augmentation?): {found[:3]}"
        return None

    def index_dataset(
        self, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> tf.data.Dataset:
        """Batched ``(indices, y)``: example indices in exactly the order of ``as_dataset``.

        ``as_dataset(batch_size, shuffle=shuffle, seed=seed)`` and this dataset,
        created at the same point of a seeded program, batch the same examples
        in every epoch; the indices count from 0 in ``inputs_dataset`` order.
        Used to train on cached features without changing the data order.

        Args:
            batch_size: Examples per batch.
            shuffle: Shuffle every epoch, as ``as_dataset`` does.
            seed: Seed of the shuffle.

        Raises:
            DataError: The source cannot replay its order (see :meth:`replay_problem`).

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.zeros((5, 4)), [0, 1, 2, 0, 1])
            >>> [i.numpy().tolist() for i, _ in data.index_dataset(2)]
            [[0, 1], [2, 3], [4]]
        """
        batch_size = _positive_int(batch_size, "batch_size", "32")
        shuffle = _check_bool(shuffle, "shuffle")
        seed = _check_seed(seed)
        problem = self.replay_problem()
        if problem is not None:
            raise DataError(
                format_error(
                    f"The example order cannot be replayed: {problem}",
                    expected="an array, directory or deterministic tf.data source",
                    received={"data": self},
                )
            )
        from finetunekit.tasks.labels import stored_to_batch_tf

        order = self._source.order(batch_size, shuffle, seed)
        encoding = self._encoding
        with tf.device("/CPU:0"):
            t_t = tf.convert_to_tensor(self._targets)
        ds = order.map(
            lambda idx: (idx, stored_to_batch_tf(tf.gather(t_t, idx), encoding)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return without_autotune(ds.prefetch(tf.data.AUTOTUNE))

    def sample_inputs(self, n: int = 256) -> np.ndarray:
        """The first ``n`` raw inputs as numpy (fewer when the data is smaller).

        Examples:
            >>> import numpy as np
            >>> data = DatasetAdapter.from_arrays(np.arange(10).reshape(5, 2), [0, 1, 2, 0, 1])
            >>> data.sample_inputs(2).tolist()
            [[0, 1], [2, 3]]
        """
        n = _positive_int(n, "n", "256")
        return self._source.sample(min(n, len(self)))


def _check_image_size(image_size: Any) -> tuple[int, int]:
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    ok = (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in image_size)
    )
    if not ok:
        raise ArgumentTypeError(
            format_error(
                "image_size must be (height, width)",
                expected="a tuple of 2 ints, e.g. (224, 224)",
                received={"image_size": image_size},
            )
        )
    if min(image_size) < 1:
        raise DataError(
            format_error(
                "image_size must be positive",
                expected="two ints >= 1",
                received={"image_size": image_size},
            )
        )
    return int(image_size[0]), int(image_size[1])


# --------------------------------------------------------------------------- helpers


def as_adapter(
    obj: Any,
    *,
    task: str | Task | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
) -> DatasetAdapter:
    """Turns what a user passes as data into a :class:`DatasetAdapter`.

    * an adapter is returned as is, unless ``task`` / ``class_names`` differ
      from its own: then it is re-encoded by class *name* when that is lossless
      (its classes are all in ``class_names``, e.g. a test set missing some
      classes, or reordered names; binary <-> multiclass), else
      :class:`LabelError` explains the mismatch;
    * an ``(x, y)`` tuple or list -> :meth:`DatasetAdapter.from_arrays`;
    * a ``tf.data.Dataset`` -> :meth:`DatasetAdapter.from_tf_dataset`.

    Raises:
        ArgumentTypeError: Anything else.
        LabelError: The classes do not match.

    Examples:
        >>> import numpy as np
        >>> as_adapter((np.zeros((3, 2)), [0, 1, 2])).num_classes
        3
    """
    task = validate_task(task)
    names = validate_class_names(class_names)
    if isinstance(obj, DatasetAdapter):
        same_task = task is None or task == obj.task_object
        if same_task and (names is None or names == obj.class_names):
            return obj
        return obj.relabelled(task, names)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return DatasetAdapter.from_arrays(obj[0], obj[1], task=task, class_names=names)
    if isinstance(obj, tf.data.Dataset):
        return DatasetAdapter.from_tf_dataset(obj, task=task, class_names=names)
    raise ArgumentTypeError(
        format_error(
            f"Cannot use a {type(obj).__name__} as data",
            expected="a DatasetAdapter, an (x, y) tuple of arrays or a tf.data.Dataset of (x, y)",
            received={"data": obj},
            fix="Wrap it with DatasetAdapter.from_arrays / from_tf_dataset / from_directory",
        )
    )


def check_compatible(
    train: DatasetAdapter, validation: DatasetAdapter, *, name: str = "validation"
) -> None:
    """Checks that ``validation`` can evaluate a model trained on ``train``.

    Args:
        train: The training data.
        validation: The validation (or test) data.
        name: How ``validation`` is called in messages.

    Raises:
        ArgumentTypeError: Either is not an adapter.
        LabelError: Different task or class names, or ``validation`` has a class
            with no training examples.
        DataError: Different (known) input shapes.

    Examples:
        >>> import numpy as np
        >>> data = DatasetAdapter.from_arrays(np.zeros((10, 2)), [0, 1] * 5)
        >>> check_compatible(*data.split(0.2))
    """
    for arg, value in (("train", train), (name, validation)):
        if not isinstance(value, DatasetAdapter):
            raise ArgumentTypeError(
                format_error(
                    f"{arg} must be a DatasetAdapter",
                    expected="a DatasetAdapter (see finetunekit.data.as_adapter)",
                    received={arg: value},
                )
            )
    if validation.task != train.task:
        raise LabelError(
            format_error(
                f'The {name} data has task="{validation.task}" but the training data has '
                f'task="{train.task}"',
                expected="the same task for both",
                received={name: validation},
                fix=f"Build the {name} data with task={train.task!r}, or with "
                "as_adapter(data, task=train.task, class_names=train.class_names)",
            )
        )
    if validation.class_names != train.class_names:
        extra = [c for c in validation.class_names if c not in train.class_names]
        missing = [c for c in train.class_names if c not in validation.class_names]
        detail = []
        if extra:
            detail.append(f"not in training: {extra[:5]}")
        if missing:
            detail.append(f"missing from {name}: {missing[:5]}")
        if not detail:
            detail.append("same classes in a different order")
        raise LabelError(
            format_error(
                f"The {name} classes differ from the training classes ({'; '.join(detail)})",
                expected=f"class_names={train.class_names[:10]}",
                received={name: validation},
                fix=f"Build the {name} data with class_names=train.class_names, or use "
                "as_adapter(data, class_names=train.class_names)",
            )
        )
    if train.task_object.has_classes:
        train_counts = train.class_counts()
        unseen = [c for c, k in validation.class_counts().items() if k and not train_counts[c]]
        if unseen:
            raise LabelError(
                format_error(
                    f"The {name} data has classes with no training examples: {unseen[:10]}",
                    expected=f"every class in {name} to appear in the training data",
                    received={name: validation},
                    fix="Add training examples of those classes, or split with a stratified "
                    "data.split(fraction)",
                )
            )
    elif validation.target_dim != train.target_dim:
        raise LabelError(
            format_error(
                f"The {name} targets have {validation.target_dim} columns, training has "
                f"{train.target_dim}",
                expected="the same number of target columns",
                received={name: validation},
            )
        )
    a, b = train.input_shape, validation.input_shape
    if len(a) != len(b) or any(
        p is not None and q is not None and p != q for p, q in zip(a, b, strict=False)
    ):
        raise DataError(
            format_error(
                f"The {name} inputs have shape {b} but the training inputs have shape {a}",
                expected="the same per-example input shape",
                received={name: validation},
                fix="Resize / reshape the inputs the same way for both",
            )
        )


def _not_a_label_sequence(y: Any) -> bool:
    """True when ``y`` cannot hold one label per example (scalars, strings, datasets)."""
    if isinstance(y, (tf.data.Dataset, str, bytes)) or not hasattr(y, "__len__"):
        return True
    return isinstance(y, np.ndarray) and y.ndim == 0
