"""Errors the command reports as one line (no traceback), with the exit code they map to."""
from __future__ import annotations

import importlib

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """An expected failure: printed as ``forgegrad: error: <message>``, exit code ``code``."""

    code = EXIT_RUNTIME

    def __init__(self, message: str, code: int = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CLIError):
    """Bad arguments: unknown names, bad values, paths that do not exist (exit code 2)."""

    code = EXIT_USAGE


def require(module: str, extra: str = None, what: str = None):
    """Import ``module`` or raise CLIError saying which extra installs it.

    ``extra=None`` marks a part of forgegrad itself (reported as missing from this build).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        need = what or module
        if extra is None:
            raise CLIError(f"{need} is not available in this build of forgegrad ({e})") from None
        raise CLIError(f"{need} needs the optional dependency {module.split('.')[0]!r}: "
                       f'pip install "forgegrad[{extra}]"') from None


def optional(module: str):
    """The module, or None when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
