"""finetunekit: fine-tune pretrained Keras models in five composable steps.

``import finetunekit`` is light: it does not import TensorFlow. The public
names load on first use (PEP 562), all at once, so the first ``ftk.X``
registers every finetunekit Keras layer; this keeps ``finetunekit --help``
and the command line's argument checks fast. When Keras is already imported,
or as soon as it is, everything loads at once, so ``keras.saving.load_model``
reads finetunekit files in either import order (``ftk.load`` needs nothing).

Examples:
    >>> import finetunekit as ftk
    >>> "vgg16" in ftk.Backbone.available()
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import TYPE_CHECKING, Any

from finetunekit.errors import (
    ArgumentTypeError,
    BackboneError,
    CheckpointError,
    ConfigError,
    DataError,
    EvaluationError,
    ExportError,
    FineTuneError,
    HeadError,
    InputShapeError,
    LabelError,
    LoadError,
    TrainerError,
    UnknownBackboneError,
    WeightsError,
)

if TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers and docs
    from finetunekit import tasks
    from finetunekit.backbones import Backbone
    from finetunekit.data import DatasetAdapter
    from finetunekit.evaluation import EvaluationReport, Evaluator
    from finetunekit.heads import HeadReplacer
    from finetunekit.pipeline import FineTuner
    from finetunekit.result import FineTuneResult, load
    from finetunekit.tasks import Task
    from finetunekit.tasks.generative import load_adapters
    from finetunekit.training import Trainer
    from finetunekit.training.lr_finder import LRFinderResult

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "Backbone",
    "BackboneError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetAdapter",
    "EvaluationError",
    "EvaluationReport",
    "Evaluator",
    "ExportError",
    "FineTuneError",
    "FineTuneResult",
    "FineTuner",
    "HeadError",
    "HeadReplacer",
    "InputShapeError",
    "LRFinderResult",
    "LabelError",
    "LoadError",
    "Trainer",
    "Task",
    "TrainerError",
    "UnknownBackboneError",
    "WeightsError",
    "__version__",
    "import_all",
    "load",
    "load_adapters",
    "tasks",
]

# public name -> the module it comes from (None: the name is that module)
_LAZY: dict[str, str | None] = {
    "tasks": None,
    "Task": "finetunekit.tasks",
    "Backbone": "finetunekit.backbones",
    "DatasetAdapter": "finetunekit.data",
    "EvaluationReport": "finetunekit.evaluation",
    "Evaluator": "finetunekit.evaluation",
    "HeadReplacer": "finetunekit.heads",
    "FineTuner": "finetunekit.pipeline",
    "FineTuneResult": "finetunekit.result",
    "load": "finetunekit.result",
    "load_adapters": "finetunekit.tasks.generative",
    "Trainer": "finetunekit.training",
    "LRFinderResult": "finetunekit.training.lr_finder",
}


def import_all() -> None:
    """Imports every module behind the public names (TensorFlow, Keras, finetunekit's layers).

    Called on the first use of a public name such as ``ftk.FineTuner``; call
    it yourself before ``keras.saving.load_model`` on a finetunekit file when
    no finetunekit name was used yet (``ftk.load`` does).

    Examples:
        >>> import finetunekit
        >>> finetunekit.import_all()
        >>> "Backbone" in vars(finetunekit)
        True
    """
    namespace = globals()
    _remove_hook()
    _STATE["loading"] = True
    try:
        for name, module in _LAZY.items():
            if name in namespace:
                continue
            if module is None:
                namespace[name] = importlib.import_module(f"finetunekit.{name}")
            else:
                namespace[name] = getattr(importlib.import_module(module), name)
    finally:
        _STATE["loading"] = False


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import_all()
        return globals()[name]
    raise AttributeError(f"module 'finetunekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Loads the public names right after ``keras`` is imported (and then removes itself).

    So ``import finetunekit; import keras; keras.saving.load_model(path)`` reads
    finetunekit files: the layers are registered as soon as Keras exists, while
    ``import finetunekit`` alone (the command line's argument checks) stays light.
    """

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "keras" or _STATE["loading"]:
            return None
        _remove_hook()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            loader_exec(module)
            try:
                import_all()
            except Exception:  # noqa: BLE001 - never break `import keras`; the names stay lazy
                pass

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_STATE = {"loading": False}
_HOOK = _AfterKeras()


def _remove_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


if "keras" in sys.modules:
    # Keras already loaded (``import keras`` came first): nothing left to save, so register
    # the layers now and ``keras.saving.load_model`` reads finetunekit files at once.
    import_all()
else:
    sys.meta_path.insert(0, _HOOK)
