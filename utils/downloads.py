"""Fetching official YOLOv5 v7.0 weights when they are missing, with one clear line when that is impossible."""

from __future__ import annotations

import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from utils.log import LOGGER

GITHUB_RELEASE = "https://github.com/{repo}/releases/download/{release}/{name}"
# Every weights asset of the v7.0 release: yolov5{n,s,m,l,x}, the P6 variants, and the -seg / -cls models.
_ASSET_RE = re.compile(r"^yolov5[nsmlx]6?(-seg|-cls)?\.pt$")
MIN_BYTES = 1_000_000  # the smallest official asset (yolov5n-cls) is ~5 MB; anything under 1 MB is an error page


def is_url(url: str | Path, check: bool = False) -> bool:
    """True if `url` parses as an http(s)/ftp URL with a host (check=True also requires it to answer)."""
    try:
        parts = urllib.parse.urlparse(str(url))
        ok = parts.scheme in ("http", "https", "ftp") and bool(parts.netloc)
    except ValueError:
        return False
    if ok and check:
        try:
            with urllib.request.urlopen(urllib.request.Request(str(url), method="HEAD"), timeout=10) as r:
                return r.status < 400
        except (urllib.error.URLError, OSError):
            return False
    return ok


def is_official_asset(name: str) -> bool:
    """True for the weight file names published with the YOLOv5 v7.0 release."""
    return bool(_ASSET_RE.match(name))


def safe_download(url: str, file: str | Path, min_bytes: int = MIN_BYTES, timeout: float = 10.0,
                  progress: bool = False) -> Path:
    """Download url to file atomically (temp file in the same folder + os.replace); raise OSError on failure.

    A transfer shorter than the server's Content-Length (a dropped connection) is a failure, so a partial file is
    never renamed into place; progress=True shows a byte progress bar.
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            expected = int(r.headers.get("Content-Length") or 0) if getattr(r, "headers", None) else 0
            with tqdm(total=expected or None, unit="B", unit_scale=True, unit_divisor=1024, desc=file.name,
                      disable=not progress, leave=False) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        size = os.path.getsize(tmp)
        if expected and size != expected:
            raise OSError(f"download of {url} stopped after {size} of {expected} bytes")
        if size < min_bytes:
            raise OSError(f"download of {url} gave {size} bytes, expected at least {min_bytes}")
        os.replace(tmp, file)
    except http.client.HTTPException as e:  # IncompleteRead and friends are not OSErrors
        Path(tmp).unlink(missing_ok=True)
        raise OSError(f"download of {url} failed: {type(e).__name__}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def attempt_download(file: str | Path, repo: str = "ultralytics/yolov5", release: str = "v7.0") -> Path:
    """Return `file` if it exists, else fetch it when it is an official release asset; one-line error otherwise."""
    file = Path(str(file).strip().replace("'", ""))
    if file.exists():
        return file
    if is_url(str(file)):
        raise FileNotFoundError(f"{file}: URLs are not fetched automatically; download the file and pass its path")
    name = file.name
    if not is_official_asset(name):
        raise FileNotFoundError(f"{file} not found")
    url = GITHUB_RELEASE.format(repo=repo, release=release, name=name)
    LOGGER.info(f"Downloading {url} to {file}...")
    try:
        return safe_download(url, file)
    except (OSError, ValueError) as e:  # URLError, timeouts and HTTP errors are all OSError subclasses
        LOGGER.debug(f"download failed: {e}")
        raise FileNotFoundError(
            f"{name} not found and could not be downloaded (offline?): download it from {url} and put it at {file}"
        ) from None
