"""Export a fine-tuned causal LM: a Hugging Face folder or a ``.keras`` file, checked on the spot.

``result.export("out", format="transformers")`` folds the LoRA adapters into
the kernels and writes the model the way KerasHub's own exporter does
(``CausalLM.export_to_transformers``: ``config.json``, ``model.safetensors``,
the tokenizer files and, for Gemma 3, ``generation_config.json``); the
architectures are KerasHub's (:func:`transformers_architectures`). The
folder is then read back by KerasHub's Hugging Face converter (the path
``Backbone.from_preset("out")`` takes) and its logits are compared with the
fine-tuned model's on sample prompts: max absolute difference and the share
of positions whose next-token argmax agrees. ``format="keras"`` writes the
merged ``CausalLM`` and compares the same way after ``keras`` loads it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from finetunekit.errors import ExportError, format_error

__all__ = ["DEFAULT_PROMPTS", "export_causal_lm", "transformers_architectures"]

#: prompts compared when ``sample`` is not given
DEFAULT_PROMPTS = (
    "The capital of France is",
    "Question: what is two plus two?\nAnswer:",
    "Translate to German: good morning ->",
    "1, 2, 3, 4,",
)


def transformers_architectures() -> tuple[str, ...]:
    """The KerasHub backbones its Hugging Face exporter writes (this KerasHub version).

    Examples:
        >>> "Gemma3Backbone" in transformers_architectures()  # doctest: +SKIP
        True
    """
    try:
        from keras_hub.src.utils.transformers.export.hf_exporter import MODEL_EXPORTERS
    except ImportError:  # an older KerasHub: no exporter at all
        return ()
    return tuple(sorted(MODEL_EXPORTERS))


def _prompts(sample: Any) -> list[str]:
    if sample is None:
        return list(DEFAULT_PROMPTS)
    prompts = [sample] if isinstance(sample, str) else list(sample)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ExportError(
            format_error(
                "A generative model's export is compared on prompts",
                expected="sample=a list of non-empty strings (or None for built-in prompts)",
                received={"sample": sample if isinstance(sample, str) else type(sample).__name__},
                fix="Pass sample=['a prompt', ...] or leave it out",
            )
        )
    return prompts


def _logits(model: Any, x: dict[str, Any]) -> np.ndarray:
    """The model's logits on the token inputs ``x``, float64."""
    import keras

    logits = model(x, training=False)  # (predict would run the string preprocessor first)
    return np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float64)


def _compare(want: np.ndarray, got: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Max absolute logit difference and next-token argmax agreement over real tokens."""
    diff = float(np.max(np.abs(got[mask] - want[mask])))
    agree = float(np.mean(got[mask].argmax(-1) == want[mask].argmax(-1)))
    return diff, agree


def export_causal_lm(
    result: Any,
    path: str,
    format: str,
    *,
    quantize: str | None = None,
    sample: Any = None,
    tolerance: float | None = None,
) -> Any:
    """Writes the merged causal LM as ``format`` and checks it against the fine-tuned model.

    Args:
        result: a generative ``FineTuneResult``.
        path: a folder for ``"transformers"``, a ``.keras`` file for ``"keras"``.
        format: ``"transformers"`` or ``"keras"``.
        quantize: must be ``None``.
        sample: prompts to compare the logits on (default :data:`DEFAULT_PROMPTS`).
        tolerance: largest accepted max absolute logit difference (default 1e-4).

    Returns:
        An ``ExportReport`` (``max_abs_diff`` over the logits of the prompts'
        tokens, ``top1_agreement`` of the next-token argmax).

    Raises:
        ExportError: another format or a quantisation, an architecture
            KerasHub cannot export, or logits that disagree.

    Examples:
        >>> report = result.export("gemma-dates", format="transformers")  # doctest: +SKIP
        >>> report.ok  # doctest: +SKIP
        True
    """
    from finetunekit.export import checked_report, metadata_path
    from finetunekit.tasks.generative import merge_causal_lm

    if format not in ("transformers", "keras") or quantize is not None:
        raise ExportError(
            format_error(
                f"A causal language model exports as a Hugging Face folder or a .keras file, "
                f"not format={format!r} with quantize={quantize!r}",
                expected="format='transformers' or 'keras', quantize=None",
                received={"format": format, "quantize": quantize},
                fix="Pass format='transformers' (or save with result.save('lm.keras'))",
            )
        )
    prompts = _prompts(sample)
    model = result.model
    architecture = type(model.backbone).__name__
    if format == "transformers" and architecture not in transformers_architectures():
        raise ExportError(
            format_error(
                f"KerasHub cannot write a {architecture} as a Hugging Face checkpoint",
                expected=f"one of {transformers_architectures()}",
                received={"backbone": architecture},
                fix="Save it as a Keras file: result.export('lm.keras', format='keras')",
            )
        )
    import tensorflow as tf

    from finetunekit.tasks.generative import Packing

    packing = Packing.of(model.preprocessor)  # [start] prompt: the same token ids for both
    x, _ = packing(tf.constant(prompts), tf.constant([""] * len(prompts)))
    x = {k: np.asarray(v) for k, v in x.items()}
    expected = _logits(model, x)
    merged = merge_causal_lm(model)  # adapters folded in: a plain CausalLM
    if format == "transformers":
        merged.export_to_transformers(path)
        import keras_hub

        again = keras_hub.models.CausalLM.from_preset(path)
    else:
        import keras

        merged.save(path)
        again = keras.saving.load_model(path)
    diff, agree = _compare(expected, _logits(again, x), x["padding_mask"].astype(bool))
    meta = {
        "format": format,
        "task": "generative",
        "architecture": architecture,
        "causal_lm": type(model).__name__,
        "compared_prompts": prompts,
        "info": result.info,
    }
    target = metadata_path(path, format)
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, default=str)
    return checked_report(
        os.fspath(path), format, None, target, len(prompts), diff, agree, tolerance, "causal LM"
    )
