"""Prompt / response pairs: the data of the ``generative`` task (causal language models).

``DatasetAdapter.from_prompts`` checks its inputs here, before anything is
built, and builds the adapter of the :class:`~finetunekit.tasks.generative.
Generative` task. Three ways in:

* two lists of strings, ``from_prompts(prompts, responses)``;
* a file, ``from_prompts("pairs.jsonl")`` (JSON Lines, a JSON list of
  objects, or CSV with a header row) with ``prompt`` / ``response`` columns,
  or the columns ``prompt_column=`` / ``response_column=`` name;
* chat conversations, ``from_prompts(conversations, chat_template=...)``:
  each a list of ``{"role": ..., "content": ...}`` messages whose last one is
  the assistant's answer (the response) and the ones before it the prompt.
  KerasHub (0.32) ships no chat templates, so the template is named:
  ``"gemma"`` (Gemma's ``<start_of_turn>`` turn format) or a callable
  ``messages -> prompt string``. Without one the constructor raises.

The pairs are held as an ``(N, 2)`` string array (prompt, response) in a
:class:`~finetunekit.data.text.TextSource`, so shuffled training batches group
examples of similar length (``finetunekit.data.text.length_grouped_batches``)
and a batch costs its own longest example, not the data set's.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from finetunekit.errors import ArgumentTypeError, DataError, LabelError, format_error

__all__ = [
    "CHAT_TEMPLATES",
    "check_prompts",
    "prompt_data",
    "read_prompt_file",
    "render_chat",
    "token_length_stats",
]

_SHOWN = 5
_FILE_SUFFIXES = (".jsonl", ".json", ".csv")
#: the chat templates :func:`render_chat` knows by name
CHAT_TEMPLATES = ("gemma",)
_ANSWER_ROLES = ("assistant", "model")


# --------------------------------------------------------------------------- checks


def _strings(values: Any, name: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise ArgumentTypeError(
            format_error(
                f"{name} is a single string",
                expected="one string per example (a list or array of strings)",
                received={name: values},
                fix=f"Wrap it in a list: {name}=[{values!r}]",
            )
        )
    if not hasattr(values, "__len__") or isinstance(values, Mapping):
        raise ArgumentTypeError(
            format_error(
                f"{name} must be a list or array of strings",
                expected="one string per example",
                received={name: values},
                fix=f"Pass {name} as a list of str",
            )
        )
    flat = list(np.asarray(values, dtype=object).reshape(-1)) if len(values) else []
    if len(flat) != len(values):
        raise DataError(
            format_error(
                f"{name} is not one string per example",
                expected="a flat list of strings",
                received={name: _preview(values)},
                fix=f"Flatten {name} to a list of strings",
            )
        )
    bad = [i for i, v in enumerate(flat) if not isinstance(v, (str, np.str_, bytes, np.bytes_))]
    if bad:
        shown = ", ".join(f"{i}: {flat[i]!r}" for i in bad[:_SHOWN])
        raise DataError(
            format_error(
                f"{name} holds {len(bad)} value(s) that are not strings (index: value -> {shown})",
                expected="a string for every example",
                received={name: _preview(values)},
                fix="Drop those examples or convert them to text",
            )
        )
    out = [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in flat]
    empty = [i for i, v in enumerate(out) if not v.strip()]
    if empty:
        raise DataError(
            format_error(
                f"{name} holds {len(empty)} empty string(s) (indices {empty[:_SHOWN]}"
                f"{', ...' if len(empty) > _SHOWN else ''})",
                expected=f"a non-empty {name[:-1]} for every example (an empty "
                f"{'prompt gives the model nothing to answer' if name == 'prompts' else 'response teaches it to stop at once'})",
                received={name: [out[i] for i in empty[:_SHOWN]]},
                fix="Drop those examples",
            )
        )
    return out


def _preview(values: Any) -> str:
    try:
        items = list(values)[:3]
    except TypeError:
        return repr(values)[:80]
    return "[" + ", ".join(repr(v)[:40] for v in items) + (", ...]" if len(values) > 3 else "]")


def check_prompts(prompts: Any, responses: Any) -> np.ndarray:
    """Checks prompts and responses and returns them as an ``(N, 2)`` string array.

    Raises:
        ArgumentTypeError: a single string instead of a list.
        DataError: empty data, non-strings (``None``, numbers), empty strings,
            or different lengths.

    Examples:
        >>> check_prompts(["2+2=", "3+3="], ["4", "6"]).shape
        (2, 2)
    """
    p = _strings(prompts, "prompts")
    r = _strings(responses, "responses")
    if len(p) != len(r):
        raise DataError(
            format_error(
                f"prompts and responses have different lengths ({len(p)} and {len(r)})",
                expected="one response per prompt",
                received={"prompts": len(p), "responses": len(r)},
                fix="Pair each prompt with its response before building the adapter",
            )
        )
    if not p:
        raise DataError(
            format_error(
                "prompts is empty",
                expected="at least one prompt / response pair",
                received={"prompts": 0},
                fix="Pass non-empty data",
            )
        )
    return np.stack([np.asarray(p, dtype=str), np.asarray(r, dtype=str)], axis=1)


# --------------------------------------------------------------------------- files


def read_prompt_file(
    path: str | os.PathLike[str], prompt_column: str = "prompt", response_column: str = "response"
) -> tuple[list[Any], list[Any]]:
    """Reads the prompt and response columns of a JSONL, JSON or CSV file.

    Raises:
        DataError: the file is missing, of another kind, malformed, or lacks a
            column (the message lists the columns it has).

    Examples:
        >>> read_prompt_file("pairs.jsonl")  # doctest: +SKIP
        (['2+2=', ...], ['4', ...])
    """
    shown = os.fspath(path)
    if not os.path.isfile(shown):
        raise DataError(
            format_error(
                "The prompt file does not exist",
                expected="an existing .jsonl, .json or .csv file",
                received={"path": shown},
                fix="Check the path",
            )
        )
    suffix = os.path.splitext(shown)[1].lower()
    if suffix not in _FILE_SUFFIXES:
        raise DataError(
            format_error(
                f"Unknown prompt file type {suffix or '(none)'!r}",
                expected=f"a file ending in one of {list(_FILE_SUFFIXES)}",
                received={"path": shown},
                fix='Save the pairs as JSON Lines: one {"prompt": ..., "response": ...} per line',
            )
        )
    rows: list[Any]
    try:
        with open(shown, encoding="utf-8", newline="") as handle:
            if suffix == ".csv":
                rows = list(csv.DictReader(handle))
            elif suffix == ".json":
                rows = json.load(handle)
            else:
                rows = [json.loads(line) for line in handle if line.strip()]  # one object per line
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            format_error(
                f"The prompt file cannot be parsed ({type(exc).__name__}: {str(exc)[:120]})",
                expected="valid UTF-8 JSON Lines, JSON or CSV",
                received={"path": shown},
                fix="Fix the file (a JSON Lines file holds one JSON object per line)",
            )
        ) from exc
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise DataError(
            format_error(
                "The prompt file does not hold one object per example",
                expected='objects such as {"prompt": "...", "response": "..."}',
                received={"path": shown},
                fix="Write one JSON object (or CSV row) per example",
            )
        )
    columns = sorted({key for row in rows for key in row})
    for arg, column in (("prompt_column", prompt_column), ("response_column", response_column)):
        missing = [i for i, row in enumerate(rows) if column not in row]
        if missing:
            raise DataError(
                format_error(
                    f"Column {column!r} is missing from {len(missing)} of {len(rows)} rows "
                    f"(first: row {missing[0]})",
                    expected=f"a {column!r} field in every row; the file has {columns}",
                    received={arg: column, "path": shown},
                    fix=f"Pass {arg}= one of {columns}",
                )
            )
    return [row[prompt_column] for row in rows], [row[response_column] for row in rows]


# --------------------------------------------------------------------------- chat


def _is_conversations(values: Any) -> bool:
    if isinstance(values, (str, bytes, os.PathLike)) or not isinstance(values, Sequence):
        return False
    if not values:
        return False
    first = values[0]
    return (
        isinstance(first, Sequence)
        and not isinstance(first, str)
        and bool(first)
        and all(isinstance(m, Mapping) for m in first)
    )


def render_chat(messages: Sequence[Mapping[str, Any]], template: str) -> str:
    """Renders chat messages as the prompt the named template gives, ready for the answer.

    ``"gemma"``: each turn ``<start_of_turn>{role}\\n{content}<end_of_turn>\\n``
    (``assistant`` written as ``model``; a ``system`` message is put before the
    first user turn's text), then ``<start_of_turn>model\\n`` for the answer.

    Examples:
        >>> render_chat([{"role": "user", "content": "Hi"}], "gemma")
        '<start_of_turn>user\\nHi<end_of_turn>\\n<start_of_turn>model\\n'
    """
    if template != "gemma":  # pragma: no cover - checked by the caller
        raise ValueError(template)
    parts: list[str] = []
    system = ""
    for message in messages:
        role, content = str(message["role"]), str(message["content"])
        if role == "system":
            system += content + "\n\n"
            continue
        if role == "user" and system:
            content, system = system + content, ""
        role = "model" if role == "assistant" else role
        parts.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return "".join(parts) + "<start_of_turn>model\n"


def _chat_pairs(
    conversations: Sequence[Any], template: str | Callable[..., str] | None
) -> tuple[list[str], list[str]]:
    if template is None:
        raise DataError(
            format_error(
                "Chat conversations need a chat template to become prompts, and KerasHub "
                "provides none for its models",
                expected=f"chat_template= one of {list(CHAT_TEMPLATES)} or a callable "
                "messages -> prompt string",
                received={"chat_template": None},
                fix='Pass chat_template="gemma" for Gemma models, or render the prompts '
                "yourself and pass from_prompts(prompts, responses)",
            )
        )
    if isinstance(template, str) and template not in CHAT_TEMPLATES:
        raise DataError(
            format_error(
                f"Unknown chat template {template!r}",
                expected=f"one of {list(CHAT_TEMPLATES)} or a callable messages -> prompt",
                received={"chat_template": template},
                fix='Pass chat_template="gemma" or a function',
            )
        )
    prompts: list[str] = []
    responses: list[str] = []
    for i, conversation in enumerate(conversations):
        messages = list(conversation) if isinstance(conversation, Sequence) else []
        ok = bool(messages) and all(
            isinstance(m, Mapping) and "role" in m and isinstance(m.get("content"), str)
            for m in messages
        )
        if not ok or str(messages[-1]["role"]) not in _ANSWER_ROLES or len(messages) < 2:
            raise DataError(
                format_error(
                    f"Conversation {i} is not a list of messages ending with the answer",
                    expected='[{"role": "user", "content": "..."}, {"role": "assistant", '
                    '"content": "..."}]: the last message (role assistant or model) is the '
                    "response",
                    received={"conversation": _preview(messages)},
                    fix="End every conversation with the assistant's answer",
                )
            )
        history = messages[:-1]
        prompts.append(template(history) if callable(template) else render_chat(history, template))
        responses.append(str(messages[-1]["content"]))
    return prompts, responses


# --------------------------------------------------------------------------- the adapter


def prompt_data(
    prompts: Any,
    responses: Any = None,
    *,
    prompt_column: str = "prompt",
    response_column: str = "response",
    chat_template: str | Callable[..., str] | None = None,
    task: Any = None,
) -> tuple[Any, np.ndarray, Any]:
    """Checks prompt data and returns ``(source, targets, encoding)`` (``from_prompts``).

    ``targets`` are zeros, one per example: a causal LM learns from the
    response tokens themselves, which stay in the inputs.
    """
    from finetunekit.data.text import from_str_array
    from finetunekit.tasks.generative import Generative
    from finetunekit.tasks.labels import LabelEncoding, validate_task

    resolved = Generative() if task is None else validate_task(task)
    if not isinstance(resolved, Generative):
        raise LabelError(
            format_error(
                f"Prompt / response pairs train the generative task, not "
                f"task={getattr(resolved, 'name', task)!r}",
                expected='task=None, "generative" or a finetunekit.tasks.Generative(...)',
                received={"task": task},
                fix="Leave task=None",
            )
        )
    for arg, value in (("prompt_column", prompt_column), ("response_column", response_column)):
        if not isinstance(value, str) or not value:
            raise ArgumentTypeError(
                format_error(
                    f"{arg} must be a non-empty string",
                    expected="a column name",
                    received={arg: value},
                )
            )
    if isinstance(prompts, (str, os.PathLike)) and (
        isinstance(prompts, os.PathLike)
        or prompts.lower().endswith(_FILE_SUFFIXES)
        or os.path.exists(prompts)
    ):
        if responses is not None:
            raise ArgumentTypeError(
                format_error(
                    "A prompt file holds the responses itself",
                    expected="from_prompts(path) with prompt_column= / response_column=",
                    received={"prompts": os.fspath(prompts), "responses": _preview(responses)},
                    fix="Drop the responses argument",
                )
            )
        prompts, responses = read_prompt_file(prompts, prompt_column, response_column)
    elif _is_conversations(prompts):
        if responses is not None:
            raise ArgumentTypeError(
                format_error(
                    "Chat conversations hold their responses (the last message of each)",
                    expected="from_prompts(conversations, chat_template=...)",
                    received={"responses": _preview(responses)},
                    fix="Drop the responses argument",
                )
            )
        prompts, responses = _chat_pairs(prompts, chat_template)
    elif responses is None:
        raise ArgumentTypeError(
            format_error(
                "from_prompts needs the responses",
                expected="from_prompts(prompts, responses), a .jsonl / .json / .csv file path, "
                "or chat conversations",
                received={"prompts": _preview(prompts), "responses": None},
                fix="Pass the responses as the second argument",
            )
        )
    pairs = check_prompts(prompts, responses)
    encoding = LabelEncoding(task=resolved.name, class_names=(), raw="index")
    encoding = replace(encoding, task_object=resolved)
    return from_str_array(pairs), np.zeros(len(pairs), np.int64), encoding


# --------------------------------------------------------------------------- statistics


def _tokenizer_of(tokenizer: Any) -> Any:
    """A KerasHub tokenizer from a tokenizer, a causal LM / preprocessor, or a text Backbone."""
    for _ in range(3):
        if callable(getattr(tokenizer, "tokenize", None)):
            return tokenizer
        if hasattr(tokenizer, "causal_lm"):  # a finetunekit text Backbone: load its tokenizer
            tokenizer = tokenizer.tokenizer()
            continue
        inner = getattr(tokenizer, "preprocessor", None) or getattr(tokenizer, "tokenizer", None)
        if inner is None:
            break
        tokenizer = inner
    raise ArgumentTypeError(
        format_error(
            "token_length_stats needs a tokenizer",
            expected="a KerasHub tokenizer, causal LM or preprocessor, or a Backbone.from_preset",
            received={"tokenizer": tokenizer},
            fix="Pass e.g. Backbone.from_preset(path) or result.model.preprocessor.tokenizer",
        )
    )


def token_lengths(tokenizer: Any, texts: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The number of tokens of each text (no start / end tokens).

    Examples:
        >>> token_lengths(tokenizer, np.array(["a b", "c"]))  # doctest: +SKIP
        array([2, 1])
    """
    import tensorflow as tf

    tok = _tokenizer_of(tokenizer)
    out = []
    for start in range(0, len(texts), batch_size):
        ids = tok(tf.constant(texts[start : start + batch_size]))
        if isinstance(ids, tf.RaggedTensor):
            out.append(ids.row_lengths().numpy())
        else:  # a list of lists (the Python tokenizers)
            out.append(np.asarray([len(row) for row in ids], np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def token_length_stats(pairs: np.ndarray, tokenizer: Any) -> dict[str, dict[str, float]]:
    """Token counts of prompts, responses and whole examples: min, mean, median, p95, max.

    ``"total"`` counts what a training example holds: start token, prompt,
    response and end token. Use its ``max`` / ``p95`` to choose
    ``Backbone.from_preset(..., sequence_length=...)``.

    Examples:
        >>> data.token_length_stats(backbone)["total"]["max"]  # doctest: +SKIP
        41.0
    """
    prompt = token_lengths(tokenizer, pairs[:, 0])
    response = token_lengths(tokenizer, pairs[:, 1])

    def describe(values: np.ndarray) -> dict[str, float]:
        return {
            "min": float(values.min()),
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)),
            "max": float(values.max()),
        }

    return {
        "prompt": describe(prompt),
        "response": describe(response),
        "total": describe(prompt + response + 2),
    }
