"""Settings declared once: a dataclass field per argument drives check, default, config and repr.

A settings class is a frozen :func:`dataclasses.dataclass` whose fields are
made with :func:`setting`. The one declaration gives:

* the constructor (typed signature, defaults, positional / keyword-only);
* the check: ``check(value) -> value`` runs in ``__post_init__`` in field
  order (then :meth:`Settings.check_together` for rules across fields), so a
  bad argument raises before anything else happens;
* ``get_config`` (``to_config`` turns a value into JSON; ``config=False``
  leaves a field out, e.g. callbacks) and ``from_config`` (unknown keys raise
  ``ConfigError``; ``from_config`` turns JSON back into a value);
* ``repr``: the fields that differ from their defaults.

Examples:
    >>> import dataclasses
    >>> from finetunekit.checks import check_int
    >>> @dataclasses.dataclass(frozen=True, eq=False, repr=False)
    ... class Fit(Settings):
    ...     epochs: int = setting(3, check=lambda v: check_int("epochs", v, minimum=1))
    >>> Fit(epochs=5).get_config()
    {'epochs': 5}
    >>> Fit.from_config({"epochs": 2})
    Fit(epochs=2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from finetunekit.errors import ArgumentTypeError, check_config_keys, format_error

__all__ = ["Settings", "setting"]

_MISSING: Any = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    check: Callable[[Any], Any] | None = None,
    to_config: Callable[[Any], Any] | None = None,
    from_config: Callable[[Any], Any] | None = None,
    config: bool = True,
    kw_only: bool = True,
) -> Any:
    """Declares one setting: its default, its check and its JSON form.

    Args:
        default: the default value (immutable: use ``None`` for lists).
        check: validates and normalises a value, raising a ``FineTuneError``.
        to_config: turns the value into its JSON form (default: as is).
        from_config: turns the JSON form back (default: as is).
        config: whether ``get_config`` includes it.
        kw_only: keyword-only in the constructor (positional otherwise).
    """
    metadata: dict[str, Any] = {
        "check": check,
        "to_config": to_config,
        "from_config": from_config,
        "config": config,
    }
    return dataclasses.field(default=default, kw_only=kw_only, metadata=metadata)


class Settings:
    """Base of the classes that only hold validated settings (see the module docstring)."""

    #: the name shown in config errors and repr (default: the class name)
    config_owner: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            check = field.metadata.get("check")
            if check is not None:
                object.__setattr__(self, field.name, check(getattr(self, field.name)))
        self.check_together()

    def check_together(self) -> None:
        """Rules that involve several settings; raise a ``FineTuneError``. Default: none."""

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (fields with ``config=False`` left out)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            if not field.metadata.get("config", True):
                continue
            value = getattr(self, field.name)
            convert = field.metadata.get("to_config")
            out[field.name] = convert(value) if convert is not None else value
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """Rebuilds the settings from :meth:`get_config`; unknown keys raise ``ConfigError``."""
        owner = cls.config_owner or cls.__name__
        if not isinstance(config, Mapping):
            raise ArgumentTypeError(
                format_error(
                    f"{owner}.from_config needs a dict",
                    expected=f"the dict returned by {owner}.get_config()",
                    received={"config": config},
                    fix="Load the JSON with json.load first",
                )
            )
        fields = {
            f.name: f
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.metadata.get("config", True)
        }
        check_config_keys(owner, config, fields)
        kwargs = {}
        for key, value in config.items():
            convert = fields[key].metadata.get("from_config")
            kwargs[key] = convert(value) if convert is not None else value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (checked like the constructor's arguments).

        Examples:
            >>> import finetunekit as ftk
            >>> ftk.Trainer(epochs=2).replace(epochs=5).epochs
            5
        """
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            default = field.default
            check = field.metadata.get("check")
            if default is not _MISSING and check is not None:
                default = check(default)  # compare with the normalised default ([] for None)
            if default is _MISSING or not _same(value, default):
                shown.append(f"{field.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # arrays, odd objects: shown
        return False
