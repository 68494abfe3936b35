"""Reading and checking data YAMLs: required keys, class names, absolute split paths, generating or downloading data.

Path rules (YOLOv5's): a relative `path:` is taken relative to the repository root (utils.paths.ROOT); when nothing
exists there but the folder exists next to the YAML file, that one is used instead (so a YAML kept beside its dataset
works from anywhere). train/val/test are relative to `path`; an entry starting with `../` that doesn't exist is retried
without it. Every problem is raised as a DatasetError with a single line that names the YAML; callers print str(e).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from utils.data.fetch import extract, fetch, is_archive, parse_download
from utils.data.names import parse_names
from utils.data.semantic_spec import SemanticSpec
from utils.errors import DatasetError  # noqa: F401 (imported from here by the tasks)
from utils.log import LOGGER
from utils.paths import DATASETS_DIR, ROOT, find_file

REQUIRED_KEYS = ("train", "val", "names")
SPLITS = ("train", "val", "test")


def _yaml_from_archive(archive: Path) -> Path:
    """Unpack a dataset archive into DATASETS_DIR and return the data YAML it contains."""
    names = extract(archive, DATASETS_DIR)
    yamls = sorted((n for n in names if n.lower().endswith((".yaml", ".yml"))), key=lambda n: (n.count("/"), n))
    if not yamls:
        raise DatasetError(f"{archive}: no data YAML inside the archive")
    return DATASETS_DIR / yamls[0]


def _read_yaml(file: Path) -> dict:
    try:
        with open(file, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise DatasetError(f"{file}: not valid YAML{line}") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{file}: expected a mapping with train/val/names keys")
    return d


def _dir_name(d: dict, key: str, name: str) -> str:
    """images_dir / labels_dir: one folder name that appears in the image paths."""
    v = d.get(key)
    if v is None:
        return "images" if key == "images_dir" else "labels"
    if not isinstance(v, str) or not v.strip() or "/" in v or "\\" in v or v in (".", ".."):
        raise DatasetError(f"{name}: '{key}' must be one folder name (e.g. leftImg8bit), got {v!r}")
    return v


def _resolve_root(value, yaml_file: Path | None) -> Path:
    """Dataset root: absolute, else under ROOT, else (fallback) next to the YAML."""
    p = Path(str(value)).expanduser() if value else Path("")
    if p.is_absolute():
        return Path(os.path.normpath(p))
    candidate = ROOT / p
    if not candidate.exists() and yaml_file is not None and (Path(yaml_file).parent / p).exists():
        candidate = Path(yaml_file).parent / p
    return Path(os.path.normpath(os.path.abspath(candidate)))


def _resolve_split(root: Path, value):
    """A split entry (or list of entries) -> absolute str (or list of str)."""
    if isinstance(value, (list, tuple)):
        return [_resolve_split(root, v) for v in value]
    x = str(value)
    full = root / Path(x).expanduser()
    if not full.exists() and x.startswith("../") and (root / x[3:]).exists():
        full = root / x[3:]
    return os.path.normpath(os.path.abspath(full))


def _as_list(v) -> list[str]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _generate(d: dict, name: str, missing: list[str]) -> None:
    """Build the built-in synthetic dataset (`generate: shapes`) when absent or made with other settings."""
    from utils.data import synthetic

    kind = str(d["generate"])
    if kind != "shapes":
        raise DatasetError(f"{name}: unknown 'generate: {kind}' (known: shapes)")
    root = Path(d["path"])
    if root.name not in synthetic.TREES:
        raise DatasetError(f"{name}: 'generate: shapes' needs 'path' to end in one of {', '.join(synthetic.TREES)}")
    args = dict(d.get("generate_args") or {})
    unknown = sorted(set(args) - set(synthetic.DEFAULTS))
    if unknown:
        raise DatasetError(f"{name}: unknown generate_args key {unknown[0]!r} (known: {', '.join(synthetic.DEFAULTS)})")
    if "imgsz_range" in args:
        args["imgsz_range"] = tuple(args["imgsz_range"])
    marker = root / synthetic.MARKER
    if not missing and (not marker.is_file() or synthetic.shapes_up_to_date(root.parent, **args)):
        return  # present, and either current or not ours to replace
    why = "not found" if missing else "made with other settings"
    LOGGER.info(f"{name}: dataset {why} at {root}, generating the synthetic shapes dataset in {root.parent} ...")
    synthetic.generate_shapes(root.parent, **args)


def _download(d: dict, name: str, missing: list[str], autodownload: bool, has_path: bool) -> None:
    """Fetch what `download:` lists (URLs, folders, converter: data, never a script); failures are one line."""
    where = ", ".join(missing)
    dl = d.get("download")
    if not dl:
        raise DatasetError(f"{name}: dataset not found at {where}: put the dataset there or fix 'path'")
    root = Path(d["path"])
    plan = parse_download(dl, root, name, where, default_dir=None if has_path else DATASETS_DIR)
    if not autodownload:
        raise DatasetError(f"{name}: dataset not found at {where} (automatic download is off): download "
                           f"{', '.join(a.url for a in plan.archives)} and unpack it into {plan.archives[0].dir}")
    fetch(plan, root, d, name, missing)
    still = [v for v in missing if not Path(v).exists()]
    if still:
        urls = ", ".join(a.url for a in plan.archives)
        raise DatasetError(f"{name}: downloaded {urls} but {', '.join(still)} still does not exist: fix 'path'")


def check_dataset(data: str | Path | dict, autodownload: bool = True) -> dict:
    """Load a data YAML (or dict), validate it and make sure its val data exists; returns the dict, paths absolute."""
    yaml_file = None
    if isinstance(data, (str, Path)):
        if is_archive(str(data)) and Path(data).is_file():
            data = _yaml_from_archive(Path(data))
        yaml_file = Path(os.path.abspath(find_file(data)))  # FileNotFoundError naming the file if it doesn't exist
        d = _read_yaml(yaml_file)
    elif isinstance(data, dict):
        d = dict(data)
    else:
        raise DatasetError(f"{data!r}: expected a data YAML file or a dict")
    name = str(yaml_file or d.get("yaml_file") or "data dict")

    for k in REQUIRED_KEYS:
        if d.get(k) is None:
            raise DatasetError(f"{name}: missing key '{k}'")
    d["names"] = parse_names(d["names"], name)
    if "nc" in d and d["nc"] != len(d["names"]):
        LOGGER.warning(f"WARNING ⚠️ {name}: nc={d['nc']} but {len(d['names'])} names given, using "
                       f"nc={len(d['names'])}")
    d["nc"] = len(d["names"])
    for k in ("images_dir", "labels_dir"):
        d[k] = _dir_name(d, k, name)
    if d.get("semantic") is not None:
        # from_dict: a section this function already checked (with its derived nc) checks again unchanged
        d["semantic"] = SemanticSpec.from_dict(d["semantic"], d["images_dir"], name).to_dict()
    elif "semantic" in d:
        raise DatasetError(f"{name}: 'semantic' is empty: give masks_dir, names, ... or remove it")

    has_path = bool(d.get("path"))
    d["path"] = str(_resolve_root(d.get("path"), yaml_file))
    for k in SPLITS:
        if d.get(k):
            d[k] = _resolve_split(Path(d["path"]), d[k])
    if yaml_file is not None:
        d["yaml_file"] = str(yaml_file)

    missing = [v for v in _as_list(d["val"]) if not Path(v).exists()]
    if d.get("generate"):
        _generate(d, name, missing)
    elif missing:
        _download(d, name, missing, autodownload, has_path)
    still = [v for v in _as_list(d["val"]) if not Path(v).exists()]
    if still:
        raise DatasetError(f"{name}: dataset not found at {', '.join(still)}")
    return d


def semantic_spec(data: str | Path | dict) -> SemanticSpec | None:
    """The data YAML's `semantic:` section, checked, without looking for the dataset itself; None when it has none."""
    if isinstance(data, dict):
        d, name = dict(data), str(data.get("yaml_file") or "data dict")
    else:
        if is_archive(str(data)) and Path(data).is_file():
            data = _yaml_from_archive(Path(data))
        file = Path(os.path.abspath(find_file(data)))
        d, name = _read_yaml(file), str(file)
    if d.get("semantic") is None:
        return None
    return SemanticSpec.from_dict(d["semantic"], _dir_name(d, "images_dir", name), name)
