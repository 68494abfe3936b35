"""Weights & Biases backend: config, per-epoch metrics, validation images, plots, dataset and best.pt artifacts.

When it runs (decided without importing wandb, whose import costs about a second):
  WANDB_MODE=disabled            off, silently; wandb is never imported and writes nothing.
  WANDB_MODE=offline             a local run under the run folder (runs/train/exp/wandb/), synced later by `wandb sync`.
  logged in (WANDB_API_KEY, `wandb login`'s netrc entry) and WANDB_MODE unset or online: online, as upstream.
  otherwise                      off, with one line saying how to turn it on. Never a login prompt: upstream asked
                                 interactively and waited, which stalls unattended jobs; and an offline run by default
                                 would start wandb's service and write a run folder for every user who never asked.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import re
from configparser import ConfigParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from utils.log import LOGGER, colorstr
from utils.loggers.backend import Backend, run_images

PREFIX = colorstr("Weights & Biases: ")
DEFAULT_HOSTS = ["api.forge.coreweave.com", "api.wandb.ai"]
HOW_TO = ("not logged in, so this run is not tracked: `wandb login` (or WANDB_API_KEY) to log online, "
          "WANDB_MODE=offline for a local run in the run folder, WANDB_MODE=disabled to silence this line")


def find_api_key(env: dict | None = None) -> str | None:
    """The API key wandb would use (WANDB_API_KEY, the netrc entry of its host, its settings file), else None."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return env["WANDB_API_KEY"]
    # wandb >= 0.31 defaults to CoreWeave's host and still reads keys saved for api.wandb.ai by older versions
    hosts = [urlsplit(env["WANDB_BASE_URL"]).netloc] if env.get("WANDB_BASE_URL") else DEFAULT_HOSTS
    home = Path(env.get("HOME") or Path.home())
    candidates = [Path(env["NETRC"]).expanduser()] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in candidates:
        try:
            entries = netrc.netrc(str(path)) if path.is_file() else None
        except (OSError, netrc.NetrcParseError):
            entries = None
        for auth in [entries.authenticators(h) for h in hosts] if entries else []:
            if auth and auth[2]:
                return auth[2]
    settings = Path(env.get("WANDB_CONFIG_DIR") or home / ".config" / "wandb") / "settings"
    if settings.is_file():
        parser = ConfigParser()
        try:
            parser.read(settings)
            return parser.get("default", "api_key", fallback=None) or None
        except Exception:  # noqa: BLE001 - an unreadable settings file means: no key from there
            return None
    return None


def choose_mode(env: dict | None = None) -> tuple[str | None, str]:
    """(wandb mode 'online' | 'offline', or None for off; the line to print when off, '' for none)."""
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled":
        return None, ""
    try:
        installed = importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):  # ValueError: a module named wandb without a spec (stubbed out)
        installed = False
    if not installed:
        return None, "not installed, not tracking this run (pip install wandb)"
    if mode in ("offline", "dryrun"):
        return "offline", ""
    if env.get("WANDB_IDENTITY_TOKEN_FILE") or find_api_key(env):
        return "online", ""
    return None, HOW_TO


def project_name(project: str | Path) -> str:
    """The W&B project of a --project folder: runs/train -> YOLOv5 (upstream's), runs/train-seg -> YOLOv5-Segment,
    runs/train-cls -> YOLOv5-Classify, runs/evolve/* -> YOLOv5-evolve, any other folder -> its name."""
    p = Path(project)
    if p.parent.name == "runs" and p.name.startswith("train"):
        return {"train": "YOLOv5", "train-seg": "YOLOv5-Segment", "train-cls": "YOLOv5-Classify"}.get(
            p.name, f"YOLOv5-{p.name}")
    if p.parent.name == "evolve" and p.parent.parent.name == "runs":
        return "YOLOv5-evolve"
    return p.name or "YOLOv5"


def start(cfg: Any, save_dir: Path) -> Backend | None:
    """A W&B backend when the environment asks for one (see the module docstring), else None."""
    mode, line = choose_mode()
    if mode is None:
        if line:
            LOGGER.info(PREFIX + line)
        return None
    return WandbBackend(cfg, save_dir, mode, api_key=find_api_key() if mode == "online" else None)


def _artifact_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_.") or "dataset"


def dataset_artifact(wandb: Any, data: dict, splits: tuple[str, ...], name: str) -> Any:
    """The dataset's images (and YOLO label files where they exist) of `splits`, laid out split/<relative path>."""
    from utils.data.labels import img2label_paths
    from utils.data.loader import find_images

    names = data.get("names") or {}
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else names
    art = wandb.Artifact(name, type="dataset", metadata={"nc": data.get("nc"), "splits": list(splits),
                                                         "names": {str(k): v for k, v in names.items()}})
    for split in splits:
        if not data.get(split):
            continue
        images = find_images(data[split])
        files = images + [f for f in img2label_paths(images) if os.path.isfile(f)]
        root = os.path.commonpath([os.path.dirname(f) for f in files])
        for f in files:
            art.add_file(f, name=f"{split}/{os.path.relpath(f, root)}")
    return art


class WandbBackend(Backend):
    """One wandb run per training run, named after its folder (exp, exp2, ...), logged at step = epoch."""

    name = "wandb"
    wants_val_images = True

    def __init__(self, cfg: Any, save_dir: Path, mode: str, api_key: str | None = None):
        import wandb  # here, not at the top: only a run that logs to W&B pays for the import

        self.wandb, self.cfg, self.save_dir, self.mode, self.api_key = wandb, cfg, save_dir, mode, api_key
        self.run, self.epoch = None, 0

    def _resumed_id(self, root: Path) -> str | None:
        """A resumed training continues its wandb run: the id ends the name of the folder wandb/latest-run points to."""
        latest = root / "wandb" / "latest-run"
        if not self.cfg.resume or not latest.exists():
            return None
        return latest.resolve().name.rsplit("-", 1)[-1] or None

    def on_train_start(self, opts: dict, hyp: dict, data: dict) -> None:
        wandb, cfg = self.wandb, self.cfg
        root = Path(os.environ.get("WANDB_DIR") or self.save_dir)  # never the working directory
        root.mkdir(parents=True, exist_ok=True)
        run_id = self._resumed_id(root)
        # an explicit key means wandb never looks for one interactively; create_new leaves a caller's own run alone
        settings = wandb.Settings(api_key=self.api_key) if self.api_key else None
        self.run = wandb.init(project=project_name(cfg.project), entity=cfg.entity or None, name=self.save_dir.name,
                              dir=str(root), config={**opts, "hyp": hyp}, mode=self.mode, job_type="Training",
                              id=run_id, resume="allow" if run_id else None, reinit="create_new", settings=settings)
        upload = str(cfg.upload_dataset or "").strip().lower()
        if upload and upload not in ("false", "0") and not cfg.resume:
            splits = ("val",) if upload == "val" else ("train", "val")
            name = _artifact_name(f"{Path(str(cfg.data)).stem}_dataset")
            self.run.log_artifact(dataset_artifact(wandb, data, splits, name), aliases=["latest"])
            LOGGER.info(f"{PREFIX}logged the {'/'.join(splits)} split(s) of {cfg.data} as artifact '{name}'")

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch = epoch
        self.run.log(metrics, step=epoch)

    def log_images(self, name: str, paths: list[Path], epoch: int) -> None:
        # one key per file: a list under one key warns when sizes differ and hides which plot is which
        self.run.log({f"{name}/{p.stem}": self.wandb.Image(str(p), caption=p.name) for p in paths}, step=epoch)

    def on_fit_end(self, save_dir: Path, best: Path, figures: dict[str, float]) -> None:
        self.log_images("Results", run_images(save_dir), self.epoch)
        self.run.summary.update({f"best/{k.split('/', 1)[-1]}": v for k, v in figures.items()})
        if self.cfg.upload_model and best.is_file():
            art = self.wandb.Artifact(f"run_{self.run.id}_model", type="model",
                                      metadata={"epochs": self.epoch + 1, **figures})
            art.add_file(str(best), name=best.name)
            self.run.log_artifact(art, aliases=["latest", "best"])

    def close(self, failed: bool = False) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=1 if failed else 0)
