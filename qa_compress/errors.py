"""The one exception type for mistakes a user can make and fix."""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Bad input (config value, file, model path): Hydra prints its one-line message, no traceback, exit code 1."""
