"""classify/train.py's flags: the shared TrainConfig plus upstream's classification switches, and how they map.

Upstream names the model `--model` (a .pt checkpoint, or here also a model YAML) and sets lr0/decay by flag instead of a
hyp file; `resolve` turns those into what the engine reads: --weights or --cfg, and a hyp dict. `--hyp` (ours) may
set the augmentation keys of CLASSIFY_HYP; the built-in shapes-cls set recommends data/hyps/hyp.shapes-cls.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from utils.engine.config import TrainConfig, _f
from utils.errors import ConfigError
from utils.tasks.classify.task import CLASSIFY_HYP


@dataclass
class ClassifyConfig(TrainConfig):
    model: str = _f("yolov5s-cls.pt", "initial weights (.pt: -cls or detection checkpoint) or a model YAML")
    pretrained: str = _f("True", "start from the --model weights ('False': its architecture only)", nargs="?",
                         const="True")
    optimizer: str = _f("Adam", "optimizer", choices=["SGD", "Adam", "AdamW", "RMSProp"])  # v7.0 adds RMSProp here
    lr0: float = _f(0.001, "initial learning rate")
    decay: float = _f(5e-5, "weight decay")
    cutoff: int = _f(None, "detection model layer to cut the backbone at (default 10)", type=int)
    dropout: float = _f(None, "dropout probability of the Classify head", type=float)
    verbose: bool = _f(False, "verbose mode")


def is_pretrained(value: str | bool) -> bool:
    """Upstream's --pretrained: anything but an explicit false value means yes."""
    return str(value).strip().lower() not in ("false", "0", "no", "")


def resolve(cfg: ClassifyConfig) -> tuple[ClassifyConfig, dict | None]:
    """Map --model/--pretrained onto --weights/--cfg and build the hyp dict (None when resuming: the run's own)."""
    if cfg.resume:
        return cfg, None
    model = str(cfg.model)
    if model.endswith(".yaml") or model.endswith(".yml"):
        cfg.cfg, cfg.weights = model, ""
    elif is_pretrained(cfg.pretrained):
        cfg.weights = model
    else:  # the checkpoint's architecture, freshly initialised (upstream resets every layer's parameters)
        from utils.checkpoint import load_checkpoint
        from utils.downloads import attempt_download

        cfg.cfg, cfg.weights = load_checkpoint(attempt_download(model))["model_yaml"], ""
    hyp = {**CLASSIFY_HYP, **augmentation_hyp(cfg), "lr0": cfg.lr0, "weight_decay": cfg.decay, "cutoff": cfg.cutoff,
           "dropout": cfg.dropout}
    return cfg, hyp


def augmentation_hyp(cfg: ClassifyConfig) -> dict:
    """--hyp YAML (else the built-in dataset's recommended one) over CLASSIFY_HYP; lr0 and decay stay flags."""
    from utils.paths import find_file
    from utils.tasks.classify.dataset import BUILTIN

    name = cfg.hyp or BUILTIN.get(str(cfg.data), {}).get("hyp", "")
    if not name:
        return {}
    cfg.hyp = str(name)
    hyp = yaml.safe_load(find_file(name).read_text()) or {}
    unknown = sorted(set(hyp) - set(CLASSIFY_HYP))
    if unknown:
        raise ConfigError(f"{name}: unknown classification hyp key(s) {', '.join(unknown)} (known: "
                         f"{', '.join(CLASSIFY_HYP)})")
    return {k: v for k, v in hyp.items() if k not in ("lr0", "weight_decay")}

