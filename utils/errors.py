"""User errors: the input is wrong (a flag, a file, a dataset), not this program.

Every entry point prints these as one line and exits 1 (utils/engine/cli.run_main); anything else is a bug and keeps
its traceback. Each error below is also a ValueError, so callers of the Python API can catch them as such.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors a user can fix from the message alone."""


class ConfigError(UserError, ValueError):
    """A flag or setting out of range or inconsistent with another."""


class DeviceError(UserError, ValueError):
    """The requested device does not exist on this machine."""


class ModelConfigError(UserError, ValueError):
    """A model YAML that cannot be built (missing key, unknown module, bad arguments)."""


class DatasetError(UserError, ValueError):
    """A data YAML or the dataset it describes (or downloads) is unusable; the message is one line naming the file."""
