"""Errors a user can cause and fix: missing files, malformed inputs, missing assets.

CLIs catch :class:`UserFacingError` and print its message alone (no traceback), so the message
must name the file or field at fault and say how to fix it.
"""


class UserFacingError(Exception):
    """Base class for errors caused by user input or missing assets."""


class InputFileError(UserFacingError, ValueError):
    """A file exists but its content is malformed (bad JSON, missing field, wrong shape)."""


class MissingFileError(UserFacingError, FileNotFoundError):
    """A required file or folder does not exist."""
