"""The two kinds of failure users must be told about in one clear line."""


class InputError(ValueError):
    """The input (file, array or setting) cannot be used; nothing has been written."""


class OutputError(OSError):
    """The output could not be written; no partial file is left behind."""
