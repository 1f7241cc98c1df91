"""vitkit's user-facing errors: one base class, so the command line can tell a user's mistake from a bug.

Every error vitkit raises on purpose about its input (a bad value, a missing file) is a `VitkitError`. The CLI
prints those as one line and exits with status 2 (`-v` adds the traceback); anything else is a bug in vitkit or
a dependency and keeps its traceback. The concrete classes also derive from the built-in exception they
replace, so code that catches `ValueError` or `FileNotFoundError` around vitkit's API keeps working.
"""

from __future__ import annotations


class VitkitError(Exception):
    """Base of the errors whose message tells the user what was wrong and how to fix it."""


class UsageError(VitkitError, ValueError):
    """A value given to vitkit (flag, recipe key, checkpoint, data) that it cannot use."""


class MissingPathError(VitkitError, FileNotFoundError):
    """A path vitkit was given (data, recipe, checkpoint, run directory) that does not exist or is incomplete."""
