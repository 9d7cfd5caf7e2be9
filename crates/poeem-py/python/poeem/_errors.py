"""Exceptions raised by poeem.

File-system problems raise the built-in ``OSError`` subclasses (``FileNotFoundError``,
``PermissionError``, ...), with the path as ``filename``.
"""


class PoeemError(Exception):
    """Base class of poeem's own exceptions."""


class InvalidArgumentError(PoeemError, ValueError):
    """A bad array or argument: wrong dtype, shape or dimension, NaN or infinity (the message
    names the row and column), an empty input, an impossible setting."""


class CorruptIndexError(PoeemError, ValueError):
    """A file that is not a valid poeem index: wrong magic, unsupported version, truncated,
    a checksum mismatch, inconsistent sections."""
