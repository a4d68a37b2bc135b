"""How each setting of ``NMSGConfig`` is presented, declared once beside the field.

The command line, the widget's form, the batch resume key, the range checks and the set of
settings a saved model carries are all generated from these declarations, so a label,
range or choice list is never written out twice. A setting's group is the settings class
that declares it (its ``GROUP``).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# general: every stage; inference: carried by a fitted model; machine: the computer's, not
# the model's (a model fitted on a GPU may be applied on a laptop); preview: widget only
Group = Literal["general", "noise", "training", "inference", "machine", "preview"]


@dataclass(frozen=True)
class Setting:
    """Label, help, unit, range and choices of one setting, and where it is offered."""

    label: str
    help: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float = 1
    choices: Mapping[str, Any] | None = None  # shown label -> value
    auto: str = ""  # what ``None`` means, for settings that may be left to the method
    flag: str | None = None  # command-line flag; None: --field-name
    cli: bool = True
    widget: bool = True  # in the widget's form
    group: Group | None = None  # filled in by ``declared`` from the declaring class

    def option(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def option(default: Any, **setting: Any) -> Any:
    """A dataclass field with its presentation: ``x: int = option(3, label=..., ...)``."""
    return field(default=default, metadata={"setting": Setting(**setting)})


@dataclass(frozen=True)
class Declared:
    """One declared setting: its field name, presentation and value type."""

    name: str
    setting: Setting
    kind: type  # int, float, str or bool (None stripped; a Literal gives str)

    @property
    def optional(self) -> bool:
        """Whether ``None`` is a value (auto), not only "not given"."""
        return bool(self.setting.auto)


def declared(config_class: type) -> list[Declared]:
    """The declared settings of a config dataclass, in field order, each with the
    ``GROUP`` of the class that declares it."""
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        setting = f.metadata.get("setting")
        if setting is None:
            raise TypeError(f"{config_class.__name__}.{f.name} has no declared setting")
        group = _declaring_class(config_class, f.name).GROUP
        out.append(
            Declared(f.name, dataclasses.replace(setting, group=group), _value_type(hints[f.name]))
        )
    return out


def _declaring_class(config_class: type, name: str) -> type:
    return next(c for c in config_class.__mro__ if name in inspect.get_annotations(c))


def _value_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _value_type(args[0])
    if typing.get_origin(hint) is Literal:
        return type(args[0])
    return hint


def choice_values(alias: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` alias: choice lists are written once, as the type."""
    return typing.get_args(alias)


def labelled(values: tuple[str, ...]) -> dict[str, str]:
    """Choices shown as their own values."""
    return {v: v for v in values}
