"""Class names as data YAMLs give them (a list, or a mapping of int to name), checked into one form."""

from __future__ import annotations

from utils.errors import DatasetError


def parse_names(value, where: str, key: str = "'names'") -> dict[int, str]:
    """Class names given as a list or {int: str} -> {int: str}; `key` is how messages name the YAML key."""
    if isinstance(value, (list, tuple)):
        names = {i: str(v) for i, v in enumerate(value)}
    elif isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, int) or isinstance(k, bool)]
        if bad:
            raise DatasetError(f"{where}: {key} keys must be integers (e.g. 2: car), got {bad[0]!r}")
        names = {int(k): str(v) for k, v in sorted(value.items())}
    else:
        raise DatasetError(f"{where}: {key} must be a list or a mapping of int to name, got {value!r}")
    if not names:
        raise DatasetError(f"{where}: {key} is empty")
    return names
