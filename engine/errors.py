"""Exception hierarchy: every error assay raises on purpose derives from :class:`AssayError`.

The CLI prints an ``AssayError`` as one line and exits non-zero; anything else is a bug and keeps
its traceback (shown with ``--debug``).
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class of the errors assay raises on purpose, with a message meant for the user."""


class ConfigError(AssayError, ValueError):
    """A configuration or command-line value is invalid."""


class InputError(AssayError, ValueError):
    """Input data (a suite, a source file) is malformed or unreadable."""


class StorageError(AssayError):
    """The storage backend failed or holds something assay did not expect."""


class RetryableError(AssayError):
    """A failure that may succeed when tried again (a timeout, a 5xx, a dropped connection)."""


class FatalError(AssayError):
    """A failure that will not go away by retrying (a model that fails to load, a bad request)."""


class MissingDependencyError(AssayError, ImportError):
    """An optional dependency is not installed; the message carries the pip command."""

    def __init__(self, package: str, extra: str | None = None) -> None:
        """Names the missing package and the extra that installs it."""
        hint = f'pip install "assay[{extra}]"' if extra else f"pip install {package}"
        super().__init__(f"{package} is not installed: {hint}")
        self.package = package
