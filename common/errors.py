"""The library's error for bad input, as opposed to a bug or a broken environment.

Library code (input pipelines, spec decoding, zoo look-ups, weights files, search state) raises subclasses of
`InputError` with one line naming what is wrong and where; only the command-line layer (``recipes.cli``) turns
them into one line on stderr and exit status 2. In-process users catch them like any ``ValueError``.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (a flag, spec, file or dataset): the message names what is wrong and where."""


class DataError(InputError):
    """Unusable data: a one-line message naming what is wrong and where (path or dataset name)."""


class Diverged(InputError):
    """A run whose loss (or weights, or architecture parameters) became NaN or infinite: the flags — a learning
    rate, weight decay, λ or temperature too large for the model — made training diverge. Raised before anything is
    written as a result (no weights, card or derived spec), so the run ends with one line and exit status 2."""


class UsageError(InputError):
    """A bad flag or flag combination: reported as one line on stderr, exit status 2 (`recipes.cli`)."""
