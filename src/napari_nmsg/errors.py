"""The kinds of failure users must be told about in one clear line."""

from __future__ import annotations

from collections.abc import Callable


class InputError(ValueError):
    """The input (file, array or setting) cannot be used; nothing has been written."""


class OutputError(OSError):
    """The output could not be written; no partial file is left behind."""


class SettingsError(InputError):
    """Settings outside their range, or that cannot run together.

    Each problem names its setting, so each front end says it in its own words: the field
    name from Python, the flag the user typed on the command line.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems  # (setting, text with a ``{name}`` placeholder)
        super().__init__(self.describe(str))

    def describe(self, name_of: Callable[[str], str]) -> str:
        return "; ".join(text.format(name=name_of(setting)) for setting, text in self.problems)
