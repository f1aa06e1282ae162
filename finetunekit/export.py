"""Export a fine-tuned model, verified on the spot in the target runtime.

``export(result, path, format=...)`` writes the model as ``"keras"``,
``"saved_model"``, ``"onnx"`` or ``"litert"`` (TensorFlow Lite) through
Keras' own ``model.export`` / ``model.save``, writes the class names and the
input spec beside it, then runs the exported artifact in its own runtime
(finetunekit for .keras, TensorFlow for SavedModel, onnxruntime for ONNX, the
LiteRT interpreter for .tflite) on a sample and compares with the Keras model.
An export whose outputs disagree beyond the tolerance raises
:class:`ExportError` instead of being called good.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from finetunekit.errors import ExportError, format_error

__all__ = ["ExportError", "ExportReport", "FORMATS", "export", "run_exported"]

FORMATS = ("keras", "saved_model", "onnx", "litert", "transformers")
QUANTIZATIONS = (None, "dynamic", "int8")
_SUFFIX = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite"}
_DEFAULT_TOLERANCE = {None: 1e-4, "dynamic": 0.15, "int8": 0.3}
_MIN_AGREEMENT = {None: 0.99, "dynamic": 0.9, "int8": 0.8}


@dataclass
class ExportReport:
    """What :func:`export` wrote and how well the artifact matches the Keras model.

    Attributes:
        path: the exported artifact.
        format: ``"keras"``, ``"saved_model"``, ``"onnx"`` or ``"litert"``.
        quantize: ``None``, ``"dynamic"`` or ``"int8"``.
        metadata_path: the JSON with class names and input spec.
        num_samples: examples compared.
        max_abs_diff: largest absolute output difference against Keras.
        top1_agreement: share of examples with the same predicted class
            (``None`` for regression).
        tolerance: the largest ``max_abs_diff`` accepted.
        size_bytes: size of the artifact on disk.
        ok: whether the artifact passed the check.
    """

    path: str
    format: str
    quantize: str | None
    metadata_path: str
    num_samples: int
    max_abs_diff: float
    top1_agreement: float | None
    tolerance: float
    size_bytes: int
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as a JSON-serialisable dict."""
        return asdict(self)

    def __str__(self) -> str:
        agree = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.4f}"
        return (
            f"export {self.format}{' (' + self.quantize + ')' if self.quantize else ''} -> "
            f"{self.path} [{self.size_bytes / 1e6:.2f} MB]: max |diff| {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:g}), top-1 agreement {agree} on {self.num_samples} "
            f"examples: {'OK' if self.ok else 'DISAGREES'}"
        )


def export(
    result: Any,
    path: str | os.PathLike[str],
    format: str = "saved_model",
    *,
    quantize: str | None = None,
    sample: Any = None,
    representative_data: Any = None,
    tolerance: float | None = None,
) -> ExportReport:
    """Exports ``result.model`` and checks the artifact in its own runtime.

    A model trained with ``Trainer(lora_rank=...)`` is exported merged (its
    LoRA adapters folded into the kernels, see ``FineTuneResult.merge_lora``).

    Args:
        result: a ``FineTuneResult``.
        path: where to write (a folder for ``"saved_model"``, a file otherwise).
        format: ``"keras"``, ``"saved_model"``, ``"onnx"`` or ``"litert"``;
            ``"transformers"`` (a Hugging Face folder) for a generative model
            whose KerasHub architecture can be exported (docs/generative.md).
        quantize: LiteRT post-training quantisation: ``None``, ``"dynamic"``
            (dynamic-range int8 weights) or ``"int8"`` (full integer, needs
            ``representative_data``).
        sample: raw inputs to compare on (numpy); default: 32 random inputs
            drawn from the model's input spec.
        representative_data: raw training inputs (numpy) for ``"int8"``
            calibration, e.g. a few hundred training examples.
        tolerance: the largest accepted max absolute difference; default
            1e-4 for float exports, 0.15 (dynamic) and 0.3 (int8); quantised
            exports must also keep top-1 agreement >= 0.9 (dynamic) or 0.8 (int8).

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: bad arguments, a missing runtime, a failed conversion,
            a quantised export that stayed float, or outputs that disagree.

    Examples:
        >>> report = export(result, "digits.tflite", "litert", sample=x_test[:64])  # doctest: +SKIP
        >>> report.ok  # doctest: +SKIP
        True
    """
    path = os.fspath(path)
    _check_arguments(path, format, quantize, representative_data, tolerance)
    own = result.task_object.export_result(  # detection, generative text: their own artifacts
        result, path, format, quantize=quantize, sample=sample, tolerance=tolerance
    )
    if own is not None:
        return own  # type: ignore[no-any-return]
    if format == "transformers":
        raise ExportError(
            format_error(
                f"format='transformers' (a Hugging Face folder) is for causal language models; "
                f"this is a {result.task} model",
                expected="format 'keras', 'saved_model', 'onnx' or 'litert'",
                received={"format": format, "task": result.task},
                fix="Pass format='saved_model' (or 'onnx' / 'litert')",
            )
        )
    from finetunekit.training.lora import merged_result

    result = merged_result(result)  # LoRA adapters folded into the kernels: a plain model
    model = result.model
    sample = _sample(model, sample, result)
    expected = np.asarray(model.predict(sample, verbose=0))
    _write(result, path, format, quantize, representative_data)
    got = run_exported(path, format, sample)
    int8_tensors = _count_int8(path) if format == "litert" else None
    if quantize and int8_tensors == 0:
        raise ExportError(
            format_error(
                f"The {quantize!r} LiteRT export holds no int8 tensor: it silently stayed float",
                expected="int8 weights after quantisation",
                received={"quantize": quantize, "path": path},
                fix="Check the converter messages; pass representative_data for 'int8'",
            )
        )
    diff = float(np.max(np.abs(got.astype("float64") - expected.astype("float64"))))
    agreement = _agreement(result.task_object, expected, got)
    metadata_path = _write_metadata(result, path, format, quantize)
    return checked_report(
        path, format, quantize, metadata_path, int(len(sample)), diff, agreement, tolerance
    )


def checked_report(
    path: str,
    format: str,
    quantize: str | None,
    metadata_path: str,
    num_samples: int,
    diff: float,
    agreement: float | None,
    tolerance: float | None,
    what: str = "model",
) -> ExportReport:
    """The :class:`ExportReport` of a compared export; raises ``ExportError`` if it disagrees."""
    limit = _DEFAULT_TOLERANCE[quantize] if tolerance is None else float(tolerance)
    ok = diff <= limit and (agreement is None or agreement >= _MIN_AGREEMENT[quantize])
    report = ExportReport(
        path=path,
        format=format,
        quantize=quantize,
        metadata_path=metadata_path,
        num_samples=num_samples,
        max_abs_diff=diff,
        top1_agreement=agreement,
        tolerance=limit,
        size_bytes=_size(path),
        ok=ok,
    )
    if not ok:
        raise ExportError(
            format_error(
                f"The exported {what} disagrees with the Keras model ({report})",
                expected=f"max |diff| <= {limit:g} and top-1 agreement >= "
                f"{_MIN_AGREEMENT[quantize]}",
                received={"format": format, "quantize": quantize},
                fix="Do not ship this artifact; try quantize=None, more representative_data, "
                "or a larger tolerance if the difference is acceptable",
            ),
            report,
        )
    return report


def run_exported(path: str, format: str, inputs: np.ndarray) -> np.ndarray:
    """Runs an exported artifact in its own runtime on ``inputs``; returns the outputs.

    Examples:
        >>> run_exported("digits.onnx", "onnx", x[:4]).shape  # doctest: +SKIP
        (4, 10)
    """
    if format == "keras":
        from finetunekit.result import load

        return np.asarray(load(path).predict(inputs))
    if format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return np.asarray(loaded.serve(tf.constant(inputs)))
    if format == "onnx":
        ort = _require("onnxruntime", "onnxruntime", "onnx")
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.asarray(session.run(None, {name: inputs})[0])
    interpreter = _litert_interpreter(path)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs.astype(detail["dtype"]))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


# ---------------------------------------------------------------------- helpers
def _check_arguments(
    path: str, format: str, quantize: str | None, representative: Any, tolerance: Any
) -> None:
    if format not in FORMATS:
        raise ExportError(
            format_error(
                "Unknown export format",
                expected=f"one of {FORMATS}",
                received={"format": format},
                fix="Use format='saved_model' for TensorFlow Serving, 'litert' for mobile",
            )
        )
    if quantize not in QUANTIZATIONS:
        raise ExportError(
            format_error(
                "Unknown quantize option",
                expected=f"one of {QUANTIZATIONS}",
                received={"quantize": quantize},
                fix="Use quantize='dynamic' for int8 weights",
            )
        )
    if quantize and format != "litert":
        raise ExportError(
            format_error(
                "Post-training quantisation is available for LiteRT exports only",
                expected="format='litert' with quantize",
                received={"format": format, "quantize": quantize},
                fix="Pass format='litert', or quantize=None",
            )
        )
    if quantize == "int8" and representative is None:
        raise ExportError(
            format_error(
                "Full-integer quantisation needs a representative sample of the training data",
                expected="representative_data=<a few hundred raw training inputs>",
                received={"representative_data": None},
                fix="Pass representative_data=x_train[:200]",
            )
        )
    suffix = _SUFFIX.get(format)
    if suffix and not path.endswith(suffix):
        raise ExportError(
            format_error(
                f"A {format} export is written to a '{suffix}' file",
                expected=f"a path ending in {suffix}",
                received={"path": path},
                fix=f"Use {os.path.splitext(path)[0]}{suffix}",
            )
        )
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ExportError(
            format_error(
                "tolerance must be a number >= 0",
                expected="e.g. 1e-4",
                received={"tolerance": tolerance},
                fix="Leave tolerance=None for the defaults",
            )
        )


def _sample(model: Any, sample: Any, result: Any) -> np.ndarray:
    spec = model.inputs[0]
    dtype = str(spec.dtype)
    if sample is not None:
        return np.asarray(sample).astype(dtype, copy=False)
    shape = [32] + [int(d) if d else 32 for d in spec.shape[1:]]
    rng = np.random.default_rng(0)
    if dtype.startswith(("uint", "int")):
        return rng.integers(0, 256, shape).astype(dtype)
    low, high = {"0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}.get(
        result.info.get("input_range", ""), (0.0, 255.0)
    )
    return rng.uniform(low, high, shape).astype(dtype)


def _write(result: Any, path: str, format: str, quantize: str | None, representative: Any) -> None:
    model = result.model
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        if format == "keras":
            result.save(path)
        elif format == "saved_model":
            model.export(path, format="tf_saved_model", verbose=False)
        elif format == "onnx":
            _require("tf2onnx", "tf2onnx onnx onnxruntime", "onnx")
            model.export(path, format="onnx", verbose=False)
        else:
            kwargs: dict[str, Any] = {}
            if quantize:
                import tensorflow as tf

                kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
            if quantize == "int8":
                data = np.asarray(representative).astype(str(model.inputs[0].dtype))

                def representative_dataset() -> Any:
                    for row in data[:500]:
                        yield [row[None]]

                kwargs["representative_dataset"] = representative_dataset
            model.export(path, format="litert", verbose=False, **kwargs)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            format_error(
                f"Keras could not export the model as {format} ({str(exc)[:300]})",
                expected="a model the converter supports",
                received={"format": format, "path": path},
                fix="Try format='saved_model', which supports every TensorFlow op",
            )
        ) from exc


def metadata_path(path: str, format: str) -> str:
    """Where the JSON beside an export goes: inside a SavedModel folder, else ``<stem>.finetunekit.json``."""
    if format in ("saved_model", "transformers"):  # folders
        return os.path.join(path, "finetunekit.json")
    return os.path.splitext(path)[0] + ".finetunekit.json"


def _write_metadata(result: Any, path: str, format: str, quantize: str | None) -> str:
    spec = result.model.inputs[0]
    meta = {
        "format": format,
        "quantize": quantize,
        "task": result.task,
        "class_names": list(result.class_names),
        "input": {"shape": [None, *[d for d in spec.shape[1:]]], "dtype": str(spec.dtype)},
        "output": {"shape": [None, *list(result.model.outputs[0].shape[1:])]},
        "info": result.info,
    }
    target = metadata_path(path, format)
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, default=str)
    if format == "onnx":
        import onnx

        proto = onnx.load(path)
        entry = proto.metadata_props.add()
        entry.key, entry.value = "finetunekit", json.dumps(meta, default=str)
        onnx.save(proto, path)
    return target


def _agreement(task: Any, expected: np.ndarray, got: np.ndarray) -> float | None:
    """The fraction of the task's decisions two runtimes agree on (``None`` for values)."""
    a, b = task.decide(expected), task.decide(got)
    if a is None or b is None:
        return None
    return float(np.mean(a == b))


def _litert_interpreter(path: str) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the deprecated TensorFlow copy still works
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter(model_path=path)


def _count_int8(path: str) -> int:
    interpreter = _litert_interpreter(path)
    return sum(1 for t in interpreter.get_tensor_details() if np.dtype(t["dtype"]) == np.int8)


def _require(module: str, packages: str, format: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(
            format_error(
                f"The {format} export needs the package {module!r}",
                expected=f"{packages} installed",
                received={"format": format},
                fix=f"pip install {packages}   (or pip install 'finetunekit[export]')",
            )
        ) from exc


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, f))
            for root, _, files in os.walk(path)
            for f in files
        )
    return os.path.getsize(path)
