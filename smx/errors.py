"""Errors a user can act on: the CLI prints them as one line and exits with ``exit_code``."""

from __future__ import annotations

import sys


def note(message: str) -> None:
    """One ``smx: note:`` line on stderr: something the user should know that is no error
    (an option a plugin switch dropped, a batch size capped to the data)."""
    print(f"smx: note: {' '.join(message.splitlines())}", file=sys.stderr)


class SmxError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        if where is not None and len(where) > 240:  # a path of 100,000 characters
            where = f"{where[:160]}...{where[-60:]}"
        self.where = where
        text = f"{where}: {message}" if where else message
        super().__init__(" ".join(text.splitlines()))  # the CLI prints exactly one line


class ConfigError(SmxError):
    """The YAML or a command-line override is malformed or out of range."""


class DataError(SmxError):
    """A dataset is missing, unreadable or unusable (NaN, one class, ragged...)."""


class PluginError(SmxError):
    """An unknown or unusable backend, optimizer, schedule or dataset."""


class BackendUnavailable(PluginError):
    """A requested backend or device cannot be used on this machine."""


class ModelFileError(SmxError):
    """A model or checkpoint file is corrupted, truncated or does not fit the data."""


class RunFolderError(SmxError):
    """The run folder exists (and --overwrite was not given) or cannot be written."""


class DivergenceError(SmxError):
    """The loss or the parameters stopped being finite."""

    exit_code = 3


class ParityMismatch(SmxError):
    """Backends disagree beyond the documented tolerance."""

    exit_code = 1
