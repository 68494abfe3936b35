"""The task registry: each task registers itself once, and whatever used to switch on a task name asks here.

An entry says what a task is called, which model kinds (BaseModel.task, stored in checkpoints and exports) it serves,
which scripts run it, its own typed options (the flags only it has), and its hooks for export metadata and the hub.

This module imports nothing of the repository, so every layer may ask it (the engine names the scripts of another
kind of model, export writes a task's metadata). The built-in tasks are the folders utils/tasks/<task>/ whose
task.py calls register(); they are imported by name the first time the registry is asked, a plug-in load that no
static import mirrors. A task defined elsewhere (a test, a plug-in) calls register() itself.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN = ("detect", "segment", "classify", "semantic")  # registration order: a shared script's first is its default
_ENTRIES: dict[str, TaskEntry] = {}
_loaded = False


class TaskLookupError(LookupError):
    """No registered task answers the question (an unknown name or model kind)."""


@dataclass(frozen=True)
class Scripts:
    """The three thin scripts of a task, as a user types them from the repository root."""

    train: str
    val: str
    predict: str

    def __str__(self) -> str:
        return f"{self.train}, {self.val}, {self.predict}"

    def __contains__(self, script: str) -> bool:
        return script in (self.train, self.val, self.predict)


@dataclass(frozen=True)
class TaskEntry:
    """One task as the registry knows it."""

    name: str
    task: type  # the Task class; task(options) builds it
    scripts: Scripts
    options: type | None = None  # frozen dataclass of the task's own options (None: it has none)
    train_config: type | None = None  # the TrainConfig subclass of its train script (None: the shared TrainConfig)
    export_meta: Mapping[str, Any] = field(default_factory=dict)  # keys every export of its models carries
    upstream_meta: Mapping[str, Any] = field(default_factory=dict)  # defaults for exports without our keys
    upstream_outputs: int = 0  # outputs of an upstream v7.0 ONNX export of this kind (0: not recognised by count)
    hub_size: int = 640  # inference size of the hub and the REST server when none is given

    @property
    def kinds(self) -> tuple[str, ...]:
        """The model kinds this task serves (the Task class's `serves`; by default just its name)."""
        return tuple(getattr(self.task, "serves", ())) or (self.name,)

    def make_options(self, flags: Any = None, **overrides: Any) -> Any:
        """The task's options from parsed flags or a config (attributes of the same names), then `overrides`."""
        if self.options is None:
            if overrides:
                raise TypeError(f"task {self.name!r} takes no options, got {', '.join(overrides)}")
            return None
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"task {self.name!r} has no option(s) {', '.join(unknown)}")
        given = {n: getattr(flags, n) for n in names if flags is not None and hasattr(flags, n)}
        return self.options(**{**given, **overrides})

    def build(self, flags: Any = None, **overrides: Any) -> Any:
        """The task, built once from its options (see make_options)."""
        options = self.make_options(flags, **overrides)
        return self.task() if options is None else self.task(options)


def register(entry: TaskEntry, replace: bool = False) -> TaskEntry:
    """Add a task; a second task of the same name, or one serving a kind another serves, is refused."""
    old = _ENTRIES.get(entry.name)
    if old is not None and not replace and old != entry:
        raise ValueError(f"task {entry.name!r} is already registered")
    for other in _ENTRIES.values():
        shared = set(other.kinds) & set(entry.kinds)
        if other.name != entry.name and shared:
            raise ValueError(f"task {entry.name!r}: model kind {sorted(shared)[0]!r} is already served by "
                             f"{other.name!r}")
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a task (tests that register their own clean up with this)."""
    _ENTRIES.pop(name, None)


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    here = Path(__file__).parent
    extra = sorted(p.name for p in here.iterdir() if (p / "task.py").is_file() and p.name not in BUILTIN)
    for name in (*BUILTIN, *extra):
        importlib.import_module(f"utils.tasks.{name}.task")


def entries() -> list[TaskEntry]:
    """Every registered task, built-in ones first, in registration order."""
    _load_builtin()
    return list(_ENTRIES.values())


def entry(name: str) -> TaskEntry:
    """The task called `name`."""
    for e in entries():
        if e.name == name:
            return e
    raise TaskLookupError(f"no task {name!r} (registered: {', '.join(e.name for e in entries())})")


def for_kind(kind: str) -> TaskEntry:
    """The task that serves models of `kind`."""
    for e in entries():
        if kind in e.kinds:
            return e
    raise TaskLookupError(f"no task serves '{kind}' models (registered: {', '.join(e.name for e in entries())})")


def scripts_for(kind: str) -> str:
    """The scripts that run models of `kind`, for messages ('the matching scripts' when no task serves it)."""
    try:
        return str(for_kind(kind).scripts)
    except TaskLookupError:
        return "the matching scripts"


def on_script(script: str) -> list[TaskEntry]:
    """The tasks a script runs (detect.py: detection, and detection + semantic); the first is its default."""
    found = [e for e in entries() if script in e.scripts]
    if not found:
        raise TaskLookupError(f"no task runs {script}")
    return found


def for_script(script: str, kind: str | None) -> TaskEntry:
    """The task a script runs for a model of `kind`: the one serving that kind, else the script's default (whose
    loader then names the right scripts when the kind is foreign)."""
    tasks = on_script(script)
    return next((e for e in tasks if kind in e.kinds), tasks[0])


def kind_from_upstream_outputs(n: int, default: str = "detect") -> str:
    """The model kind of an upstream ONNX export without metadata, from its number of outputs."""
    return next((e.kinds[0] for e in entries() if e.upstream_outputs == n), default)
