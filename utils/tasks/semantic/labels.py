"""The Cityscapes label table, read from the `cityscapesscripts` package (the evaluation server's own definition).

Three numberings exist: label ids (0-33, in gtFine `_labelIds.png` and in submissions), train ids (0-18 for the 19
evaluated classes, 255 = ignore, what a model predicts) and names. Everything here is derived from
`cityscapesscripts.helpers.labels.labels`, never typed in by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

IGNORE = 255  # train id of every class that is not evaluated

# Detection classes boxed by the converter by default: the instance classes evaluated by Cityscapes plus the two
# object classes a driving detector needs; caravan and trailer are ignored in Cityscapes' evaluation.
DETECTION_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "traffic light",
                     "traffic sign")


@dataclass(frozen=True)
class CityscapesLabels:
    """The Cityscapes table arranged for lookups (arrays indexed by id or train id)."""

    names: dict[int, str]  # train id -> name, 19 evaluated classes
    colors: np.ndarray  # (19, 3) uint8 RGB by train id
    train_to_id: np.ndarray  # (256,) uint8: train id -> label id (ignore -> 0 'unlabeled')
    id_to_train: np.ndarray  # (256,) uint8: label id -> train id (255 for unevaluated or unknown ids)
    name_to_id: dict[str, int]  # every named label -> its label id (-1 for license plate)
    has_instances: dict[str, bool]  # name -> whether instanceIds PNGs give it instance ids


def _package_labels():
    try:
        from cityscapesscripts.helpers import labels
    except ImportError:
        raise ImportError("the Cityscapes label table needs the 'cityscapesscripts' package: "
                          "pip install cityscapesscripts") from None
    return labels.labels


@lru_cache(maxsize=1)
def cityscapes_labels() -> CityscapesLabels:
    """The table built once from cityscapesscripts."""
    table = _package_labels()
    evaluated = sorted((lb for lb in table if 0 <= lb.trainId < IGNORE), key=lambda lb: lb.trainId)
    # The package says: for a train id shared by several labels, the inverse uses the label defined first.
    first: dict[int, object] = {}
    for lb in evaluated:
        first.setdefault(lb.trainId, lb)
    n = len(first)
    if sorted(first) != list(range(n)):
        raise RuntimeError(f"cityscapesscripts train ids are not 0..{n - 1}: {sorted(first)}")
    unlabeled = next(lb.id for lb in table if lb.name == "unlabeled")
    train_to_id = np.full(256, unlabeled, dtype=np.uint8)
    id_to_train = np.full(256, IGNORE, dtype=np.uint8)
    for t, lb in first.items():
        train_to_id[t] = lb.id
    for lb in table:
        if 0 <= lb.id < 256:
            id_to_train[lb.id] = lb.trainId if 0 <= lb.trainId < IGNORE else IGNORE
    return CityscapesLabels(
        names={t: lb.name for t, lb in first.items()},
        colors=np.array([first[t].color for t in range(n)], dtype=np.uint8),
        train_to_id=train_to_id,
        id_to_train=id_to_train,
        name_to_id={lb.name: lb.id for lb in table},
        has_instances={lb.name: bool(lb.hasInstances) for lb in table},
    )


def _lookup(table: np.ndarray, a) -> np.ndarray:
    """table[a] for any integer array; values outside 0-255 read the table's entry 255 (ignore / unlabeled)."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = np.where((a >= 0) & (a < 256), a, 255).astype(np.intp)
    return table[a]


def train_ids_to_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train-id map (any integer dtype) -> uint8 label-id map; ignore and out-of-range ids become 'unlabeled'."""
    return _lookup(cityscapes_labels().train_to_id, train_ids)


def ids_to_train_ids(ids: np.ndarray) -> np.ndarray:
    """Label-id map -> uint8 train-id map, 255 where the class is not evaluated."""
    return _lookup(cityscapes_labels().id_to_train, ids)


def is_cityscapes(names: dict[int, str]) -> bool:
    """True when semantic class names are Cityscapes' 19 train-id classes in train-id order."""
    return dict(names) == cityscapes_labels().names
