"""The exception hierarchy. Each class carries its exit code; the CLI maps them in one place."""

from __future__ import annotations


class OpenLoopError(Exception):
    """An operation failed (exit 1). The message is shown to the user as one line."""

    exit_code = 1


class InputError(OpenLoopError):
    """Bad input: an argument, a value, or a file's content (exit 2). Nothing was changed."""

    exit_code = 2


class NotFoundError(InputError):
    """A named project, task or file does not exist (exit 2)."""


class ConfigError(InputError):
    """A control-plane or config file is unreadable or invalid: 'path: field: problem' (exit 2)."""


class BusyError(OpenLoopError):
    """Someone else holds the resource (another iteration of the same project, exit 1)."""


class StateError(OpenLoopError):
    """The requested change is not allowed from the current state (exit 1)."""


class UntrustedError(OpenLoopError):
    """The repository asks to run commands the user has not approved yet (exit 1)."""


class GitError(OpenLoopError):
    """A git command failed."""


class MissingFeatureError(OpenLoopError):
    """An optional dependency needed for this feature is missing (e.g. systemd-python)."""
