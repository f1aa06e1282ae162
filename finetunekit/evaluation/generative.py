"""Evaluation of generative text: token scores, generated answers, the worst examples.

:func:`evaluate_generative` (what ``result.evaluate(data)`` runs for the
``generative`` task) measures a causal LM on held-out prompt / response pairs
in two ways:

* **teacher-forced**, one forward pass over ``[start] prompt response [end]``
  exactly as in training (:class:`~finetunekit.tasks.generative.Packing`):
  ``token_accuracy`` (argmax = the next response token) and ``perplexity``
  (``exp`` of the mean cross-entropy per response token, pooled over all
  tokens of the set), plus ``loss`` (that mean cross-entropy);
* **generated**, greedy decoding from each prompt: ``exact_match`` (the
  generated text equals the expected response, both stripped of surrounding
  whitespace) and, with the optional ``sacrebleu`` package (``pip install
  'finetunekit[generative]'``), corpus ``chrf`` and ``bleu`` (0-100).

The :class:`GenerativeReport` adds ``examples``: the worst examples (wrong
first, then lowest chrF, then highest loss) with prompt, expected and
generated text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from finetunekit.evaluation.report import EvaluationReport

__all__ = [
    "GenerativeReport",
    "evaluate_generative",
    "text_report",
    "text_scores",
    "token_scores",
]

WORST_SHOWN = 5
_LOGIT_BUDGET = 2**25  # logits per forward pass while scoring tokens (float64: 256 MiB)
_GENERATE_MARGIN = 8  # tokens generated beyond the longest expected response


class GenerativeReport(EvaluationReport):
    """An :class:`EvaluationReport` with the worst examples and notes.

    Attributes:
        examples: up to 5 dicts ``{"prompt", "expected", "generated",
            "exact", "chrf", "loss"}``, worst first.
        notes: what was not measured and why (e.g. ``sacrebleu`` missing).

    Examples:
        >>> report = text_report(["4"], ["5"], prompts=["2+2="])
        >>> report.examples[0]["generated"], report.metrics["exact_match"]
        ('5', 0.0)
    """

    def __init__(
        self,
        *,
        examples: list[dict[str, Any]] | None = None,
        notes: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.examples = list(examples or [])
        self.notes = list(notes or [])

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values, with ``examples`` and ``notes``."""
        out = super().to_dict()
        out["examples"] = [dict(e) for e in self.examples]
        out["notes"] = list(self.notes)
        return out

    def __str__(self) -> str:
        lines = [super().__str__()]
        if self.examples:
            lines += ["", f"Worst {len(self.examples)} examples"]
            for e in self.examples:
                lines.append(f"  prompt:    {_clip(e.get('prompt', ''))}")
                lines.append(f"  expected:  {_clip(e['expected'])}")
                lines.append(f"  generated: {_clip(e['generated'])}")
                lines.append("")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip()


def _clip(text: str, limit: int = 100) -> str:
    flat = " ".join(str(text).split("\n"))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError:
        return None
    return sacrebleu


def text_scores(expected: list[str], generated: list[str]) -> tuple[dict[str, float], list[str]]:
    """Exact match, and corpus chrF / BLEU when ``sacrebleu`` is installed.

    Returns:
        ``(metrics, notes)``; ``notes`` says which metrics are missing and why.

    Examples:
        >>> scores, _ = text_scores(["a cat", "6"], [" a cat ", "7"])
        >>> scores["exact_match"]
        0.5
    """
    exact = [e.strip() == g.strip() for e, g in zip(expected, generated, strict=True)]
    metrics = {"exact_match": float(np.mean(exact)) if exact else 0.0}
    notes: list[str] = []
    bleu = _sacrebleu()
    if bleu is None:
        notes.append("chrf / bleu need sacrebleu: pip install 'finetunekit[generative]'")
    else:
        metrics["chrf"] = float(bleu.corpus_chrf(generated, [expected]).score)
        metrics["bleu"] = float(bleu.corpus_bleu(generated, [expected]).score)
    return metrics, notes


def text_report(
    expected: list[str],
    generated: list[str],
    *,
    prompts: list[str] | None = None,
    losses: np.ndarray | None = None,
    extra: dict[str, float] | None = None,
) -> GenerativeReport:
    """A :class:`GenerativeReport` from expected and generated texts (and token scores).

    Examples:
        >>> text_report(["4", "6"], ["4", "7"]).metrics["exact_match"]
        0.5
    """
    metrics, notes = text_scores(expected, generated)
    metrics.update(extra or {})
    bleu = _sacrebleu()
    rows: list[dict[str, Any]] = []
    for i, (e, g) in enumerate(zip(expected, generated, strict=True)):
        chrf = float(bleu.sentence_chrf(g, [e]).score) if bleu is not None else None
        loss = float(losses[i]) if losses is not None else None
        rows.append(
            {
                "prompt": prompts[i] if prompts is not None else "",
                "expected": e,
                "generated": g,
                "exact": e.strip() == g.strip(),
                "chrf": chrf,
                "loss": loss,
            }
        )
    order = sorted(
        range(len(rows)),
        key=lambda i: (
            rows[i]["exact"],
            rows[i]["chrf"] if rows[i]["chrf"] is not None else 0.0,
            -(rows[i]["loss"] or 0.0),
            i,
        ),
    )
    return GenerativeReport(
        task="generative",
        metrics=metrics,
        per_class={},
        confusion_matrix=None,
        class_names=[],
        num_examples=len(expected),
        headline="exact_match",
        examples=[rows[i] for i in order[:WORST_SHOWN]],
        notes=notes,
    )


def token_scores(model: Any, pairs: np.ndarray, packing: Any) -> dict[str, np.ndarray]:
    """Teacher-forced scores per example: summed cross-entropy, correct and counted tokens.

    Runs ``model`` (token ids and padding mask -> logits) on the packed
    ``pairs`` (``(N, 2)`` prompt, response) and compares the logits with the
    labels in numpy (log-softmax in float64).

    Returns:
        ``{"loss_sum", "correct", "count"}``, one value per example.
    """
    import tensorflow as tf

    vocab = int(model.backbone.vocabulary_size) if hasattr(model, "backbone") else 1
    per_pass = max(1, _LOGIT_BUDGET // max(1, packing.sequence_length * vocab))
    loss_sum, correct, count = [], [], []
    for start in range(0, len(pairs), per_pass):
        chunk = pairs[start : start + per_pass]
        x, y = packing(tf.constant(chunk[:, 0]), tf.constant(chunk[:, 1]))
        logits = np.asarray(model(x, training=False), np.float64)
        labels = np.asarray(y)
        valid = labels >= 0
        shifted = logits - logits.max(axis=-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(logp, np.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        loss_sum.append(np.where(valid, -picked, 0.0).sum(axis=1))
        correct.append(((logits.argmax(axis=-1) == labels) & valid).sum(axis=1))
        count.append(valid.sum(axis=1))
    return {
        "loss_sum": np.concatenate(loss_sum),
        "correct": np.concatenate(correct),
        "count": np.concatenate(count),
    }


def evaluate_generative(
    model: Any, data: Any, *, batch_size: int = 16, max_length: int | None = None
) -> GenerativeReport:
    """Scores a KerasHub ``CausalLM`` on prompt / response pairs (see the module docstring).

    Args:
        model: the ``CausalLM`` with its preprocessor (``result.model``).
        data: a ``DatasetAdapter.from_prompts`` adapter.
        batch_size: prompts generated together.
        max_length: total tokens for generation; default: the longest prompt
            and expected response plus 8 tokens.

    Examples:
        >>> report = result.evaluate(test)  # doctest: +SKIP
        >>> report.metrics["exact_match"], report.metrics["perplexity"]  # doctest: +SKIP
    """
    from finetunekit.data.prompts import token_lengths
    from finetunekit.tasks.generative import Generative, Packing

    pairs = np.asarray(data.sample_inputs(len(data)), dtype=str)
    packing = Packing.of(model.preprocessor)
    scores = token_scores(model, pairs, packing)
    tokens = int(scores["count"].sum())
    mean_ce = float(scores["loss_sum"].sum() / max(tokens, 1))
    extra = {
        "loss": mean_ce,
        "perplexity": float(math.exp(min(mean_ce, 700.0))),
        "token_accuracy": float(scores["correct"].sum() / max(tokens, 1)),
        "response_tokens": float(tokens),
    }
    if max_length is None:
        p = token_lengths(packing.tokenizer, pairs[:, 0])
        r = token_lengths(packing.tokenizer, pairs[:, 1])
        max_length = int(p.max() + r.max()) + packing.extra + _GENERATE_MARGIN
        limit = getattr(model.backbone, "max_sequence_length", None)
        if limit is not None:
            max_length = min(max_length, int(limit))
    generated = Generative().generate(
        model, list(pairs[:, 0]), max_length=max_length, sampler="greedy", batch_size=batch_size
    )
    losses = scores["loss_sum"] / np.maximum(scores["count"], 1)
    return text_report(
        list(pairs[:, 1]), generated, prompts=list(pairs[:, 0]), losses=losses, extra=extra
    )
