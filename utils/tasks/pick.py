"""Which registered task a script runs, built once from the script's flags: the thin scripts' one call.

A script shared by several tasks (train.py, val.py and detect.py run detection and detection + semantic) picks the
task serving the kind of model it is given; flags only another of its tasks has are refused with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from models.build import model_kind
from utils.checkpoint import checkpoint_kind, first_weights
from utils.engine.resume import resumed_config
from utils.errors import ConfigError
from utils.export.backend import weights_kind
from utils.tasks import registry


def task_classes(script: str) -> list[type]:
    """The Task classes a script runs (their flags go into its parser; the first is the default)."""
    return [e.task for e in registry.on_script(script)]


def option_flags(entry: registry.TaskEntry) -> set[str]:
    """The names of a task's own options (not those read from a flag every script has, like --data)."""
    fields = dataclasses.fields(entry.options) if entry.options else ()
    return {f.name for f in fields if not f.metadata.get("shared")}


def reject_foreign_flags(script: str, chosen: registry.TaskEntry, opt: argparse.Namespace, what: str) -> None:
    """One line when a flag that only another task of this script has was set (e.g. --submit for a detector)."""
    own = option_flags(chosen)
    for other in registry.on_script(script):
        if other is chosen or other.options is None:
            continue
        defaults = other.options()
        for name in sorted(option_flags(other) - own):
            if hasattr(opt, name) and getattr(opt, name) != getattr(defaults, name):
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} is for {other.name} models; {what} holds a '{chosen.kinds[0]}' model")


def _chosen(script: str, kind: Callable[[], str | None]) -> registry.TaskEntry:
    """The script's task for a model whose kind `kind()` reads (only asked when the script runs several tasks)."""
    tasks = registry.on_script(script)
    return registry.for_script(script, kind()) if len(tasks) > 1 else tasks[0]


def task_for_weights(script: str, opt: argparse.Namespace, **overrides: Any) -> Any:
    """A val or predict script's task for its --weights, built from its flags (`overrides` fix options)."""
    weights = first_weights(opt.weights)
    chosen = _chosen(script, lambda: weights_kind(weights))
    reject_foreign_flags(script, chosen, opt, str(weights))
    return chosen.build(opt, **overrides)


def training_kind(cfg: Any) -> str | None:
    """The kind of model a training run trains: the resumed checkpoint's, else --cfg's YAML's, else --weights'."""
    if cfg.resume:
        return checkpoint_kind(cfg.weights)
    if cfg.cfg:
        return model_kind(cfg.cfg)
    return checkpoint_kind(cfg.weights) if cfg.weights else None


def task_for_training(script: str, cfg: Any) -> tuple[Any, Any]:
    """A train script's (config, task): the resumed run's own config when resuming, and its task built from it."""
    cfg = resumed_config(cfg)
    chosen = _chosen(script, lambda: training_kind(cfg))
    return cfg, chosen.build(cfg)

