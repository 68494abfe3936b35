"""Fetching the dataset a data YAML names: `download:` is data (archive URLs, where each unpacks, a converter name).

The forms `download:` takes (a script is never run):

    download: https://host/coco128.zip                 # one archive, unpacked into the parent folder of `path`
    download: [https://host/a.zip, {url: https://host/b.zip, dir: images}]   # several; dir is relative to `path`
    download: {urls: [...], dir: images, convert: voc}  # a default dir for the list, and a built-in converter

Nothing half-made ever sits where the dataset belongs: archives download to a temporary name, unpack into a staging
folder beside the dataset, are converted there, and the finished tree is renamed into place at the end, the
validation split last (check_dataset takes an existing val split as "the dataset is here"). A failed or interrupted
fetch removes its staging folder; one left by a killed process is removed by the next attempt.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from utils.data.voc import voc_to_yolo
from utils.downloads import safe_download
from utils.errors import DatasetError
from utils.log import LOGGER

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
DOWNLOAD_TIMEOUT_S = 30
# converter name in `download: {convert: ...}` -> function(dataset root in the staging folder, data dict)
CONVERTERS = {"voc": voc_to_yolo}


@dataclass(frozen=True)
class Archive:
    """One URL to fetch and the absolute folder its contents unpack into."""

    url: str
    dir: Path


@dataclass(frozen=True)
class DownloadPlan:
    """Everything `download:` says: the archives, the folder they all lie under, and the converter to run."""

    archives: tuple[Archive, ...]
    base: Path
    convert: str | None


def is_archive(name: str) -> bool:
    """True for the archive suffixes fetch and check_dataset unpack (.zip, .tar, .tar.gz, .tgz)."""
    return str(name).lower().endswith(ARCHIVE_SUFFIXES)


def extract(archive: Path, dest: Path) -> list[str]:
    """Unpack a .zip/.tar(.gz) into dest, refusing members that would land outside it; returns member names."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _check_members(archive, dest, names)
            z.extractall(dest)
        return names
    with tarfile.open(archive) as t:
        names = t.getnames()
        _check_members(archive, dest, names)
        try:
            t.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters; members were checked above
            t.extractall(dest)
    return names


def _check_members(archive: Path, dest: Path, names: list[str]) -> None:
    for n in names:
        if not (dest / n).resolve().is_relative_to(dest):
            raise DatasetError(f"{archive}: member {n!r} would be written outside {dest}")


def _is_url(s) -> bool:
    return isinstance(s, str) and "\n" not in s and s.strip().startswith(("http://", "https://"))


def _script_error(name: str, where: str) -> DatasetError:
    return DatasetError(f"{name}: dataset not found at {where}; its 'download:' is a script and code from data YAMLs "
                      f"is never run: get the dataset yourself and put it there")


def parse_download(value, root: Path, name: str, where: str, default_dir: Path | None = None) -> DownloadPlan:
    """Check a `download:` value and turn it into a plan; `root` is the resolved `path`, `where` the missing split."""
    spec = value if isinstance(value, dict) else {"urls": value}
    unknown = sorted(set(spec) - {"urls", "dir", "convert"})
    if unknown:
        raise DatasetError(f"{name}: unknown 'download' key {unknown[0]!r} (known: urls, dir, convert)")
    base = Path(os.path.normpath(default_dir or root.parent))

    def folder(d) -> Path:
        if d is None:
            return base
        p = Path(os.path.normpath(root / str(d)))
        if not p.is_relative_to(base):
            raise DatasetError(f"{name}: 'download' dir {d!r} leaves {base}")
        return p

    default = folder(spec.get("dir"))
    items = spec.get("urls")
    items = items if isinstance(items, list) else [items]
    archives = []
    for item in items:
        url, d = (item.get("url"), item.get("dir")) if isinstance(item, dict) else (item, None)
        if not _is_url(url):
            raise _script_error(name, where)
        archives.append(Archive(url.strip(), folder(d) if d is not None else default))
    convert = spec.get("convert")
    if convert is not None and convert not in CONVERTERS:
        raise DatasetError(f"{name}: unknown 'download' converter {convert!r} (known: {', '.join(CONVERTERS)})")
    if convert is not None and not root.is_relative_to(base):
        raise DatasetError(f"{name}: 'download' convert needs the dataset 'path' to lie under {base}")
    return DownloadPlan(tuple(archives), base, convert)


def _file_name(url: str) -> str:
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"


def fetch(plan: DownloadPlan, root: Path, data: dict, name: str, last: list[str]) -> None:
    """Download, unpack and convert into a staging folder, then move the result into place (`last` moves last)."""
    stage, downloads = plan.base / f".{root.name}.partial", plan.base / f".{root.name}.download"
    new_base = not plan.base.exists()  # removed again if the fetch fails before anything lands in it
    for leftover in (stage, downloads):
        if leftover.exists():
            LOGGER.info(f"{name}: removing {leftover} left by an interrupted download")
            shutil.rmtree(leftover)
    try:
        for a in plan.archives:
            LOGGER.info(f"{name}: downloading {a.url} to {a.dir} ...")
            try:
                file = safe_download(a.url, downloads / _file_name(a.url), min_bytes=1, timeout=DOWNLOAD_TIMEOUT_S,
                                     progress=True)
            except (OSError, ValueError) as e:
                LOGGER.debug(f"download failed: {e}")
                raise DatasetError(f"{name}: dataset not found at {', '.join(last)} and {a.url} could not be "
                                   f"downloaded (offline?): download it and unpack it into {a.dir}") from None
            target = stage / a.dir.relative_to(plan.base)
            if is_archive(file.name) or zipfile.is_zipfile(file) or tarfile.is_tarfile(file):
                try:
                    extract(file, target)
                except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError):
                    raise DatasetError(f"{name}: {a.url} is not a readable archive: unpack the dataset into "
                                       f"{a.dir} yourself") from None
                file.unlink()
            else:  # a plain file (e.g. a label list) is kept as it is
                target.mkdir(parents=True, exist_ok=True)
                os.replace(file, target / file.name)
        if plan.convert:
            LOGGER.info(f"{name}: converting with the built-in '{plan.convert}' converter ...")
            CONVERTERS[plan.convert](stage / root.relative_to(plan.base), data)
        _move_into_place(stage, plan.base, [Path(p) for p in last])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)
        if new_base and plan.base.is_dir() and not any(plan.base.iterdir()):
            plan.base.rmdir()


def _moves(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """The renames that merge the tree src into dst: whole folders where dst lacks them, files replaced."""
    out = []
    for s in sorted(src.iterdir()):
        d = dst / s.name
        if s.is_dir() and d.is_dir():
            out += _moves(s, d)
        else:
            out.append((s, d))
    return out


def _move_into_place(stage: Path, base: Path, last: list[Path]) -> None:
    """Rename the staged tree into base, the moves that create a `last` path after every other one."""
    def completes(dst: Path) -> bool:
        return any(p == dst or p.is_relative_to(dst) or dst.is_relative_to(p) for p in last)

    for s, d in sorted(_moves(stage, base), key=lambda m: completes(m[1])):
        if d.is_dir() and not s.is_dir():
            shutil.rmtree(d)
        elif d.is_file() and s.is_dir():
            d.unlink()
        d.parent.mkdir(parents=True, exist_ok=True)
        os.replace(s, d)

