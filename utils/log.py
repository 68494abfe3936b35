"""The project's logger and terminal colouring."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

LOGGING_NAME = "yolov5"
VERBOSE = str(os.getenv("YOLOv5_VERBOSE", True)).lower() == "true"


def _make_logger() -> logging.Logger:
    rank = int(os.getenv("RANK", -1))
    logger = logging.getLogger(LOGGING_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    # Only rank 0 talks: N processes printing the same table is noise, not information.
    logger.setLevel(logging.INFO if VERBOSE and rank in {-1, 0} else logging.WARNING)
    logger.propagate = False
    return logger


LOGGER = _make_logger()

_COLORS = {
    "black": "\033[30m", "red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "blue": "\033[34m",
    "magenta": "\033[35m", "cyan": "\033[36m", "white": "\033[37m", "bright_black": "\033[90m",
    "bright_red": "\033[91m", "bright_green": "\033[92m", "bright_yellow": "\033[93m", "bright_blue": "\033[94m",
    "bright_magenta": "\033[95m", "bright_cyan": "\033[96m", "bright_white": "\033[97m",
    "end": "\033[0m", "bold": "\033[1m", "underline": "\033[4m",
}


def colorstr(*args: str) -> str:
    """Colour a string for the terminal: colorstr('blue', 'bold', 'text'); a single argument is blue and bold."""
    *styles, text = args if len(args) > 1 else ("blue", "bold", args[0])
    if not sys.stdout.isatty() or os.getenv("NO_COLOR"):
        return text
    return "".join(_COLORS[s] for s in styles) + f"{text}" + _COLORS["end"]


@contextlib.contextmanager
def quiet():
    """Silence info-level logging for a block (e.g. rebuilding a model from a checkpoint prints no layer table)."""
    level = LOGGER.level
    LOGGER.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        LOGGER.setLevel(level)
