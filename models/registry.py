"""Name -> class table that parse_model builds layers from, so model YAMLs are never evaluated as Python."""

from __future__ import annotations

from typing import TypeVar

import torch.nn as nn

T = TypeVar("T", bound=type)

MODULES: dict[str, type] = {}

# torch building blocks a YAML may name as 'nn.X'; parse_model decides their arguments from these kinds.
for _name in ("Upsample", "Conv2d", "ConvTranspose2d", "BatchNorm2d", "MaxPool2d", "Identity", "ZeroPad2d", "Dropout"):
    MODULES[f"nn.{_name}"] = getattr(nn, _name)


def register(cls: T) -> T:
    """Class decorator: make `cls` buildable from a model YAML under its class name."""
    name = cls.__name__
    if name in MODULES and MODULES[name] is not cls:
        raise ValueError(f"module name {name!r} is registered twice ({MODULES[name]} and {cls})")
    MODULES[name] = cls
    return cls


def lookup(name: str) -> type:
    """Return the registered class for a YAML module name, or raise a KeyError naming it and the known names."""
    if name.startswith("torch.nn."):
        name = name[len("torch."):]
    try:
        return MODULES[name]
    except KeyError:
        known = ", ".join(sorted(MODULES))
        raise KeyError(f"unknown module {name!r} (known modules: {known})") from None
