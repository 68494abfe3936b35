"""Small C++ kernels compiled on the machine that runs them, cached, and loaded with ctypes.

The kernels (models/csrc/) include no PyTorch headers, so the system compiler builds one in about a second, for this
CPU (-march=native), the first time it is needed; later runs load the cached library. Where there is no compiler,
or it fails, the caller gets the reason and keeps PyTorch's own kernels. `MTYOLO_NATIVE=0` turns them all off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from utils.device import cpu_name
from utils.paths import user_cache_dir

NATIVE_ENV = "MTYOLO_NATIVE"
# -O3 and -march=native vectorise the channel loops for this CPU's widest instructions; fast-math frees the compiler
# to reorder float arithmetic (the kernels sum in float per block, then in double) and drops errno. OpenMP resolves to
# the libgomp PyTorch's CPU kernels already run on: one thread pool, not two competing for the same cores.
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
BUILD_TIMEOUT_S = 120


class NativeUnavailable(RuntimeError):
    """A native kernel can't be built or loaded here (the message says why)."""


def enabled() -> bool:
    """Whether native kernels may be used ($MTYOLO_NATIVE is not 0/false/off)."""
    return os.environ.get(NATIVE_ENV, "1").strip().lower() not in {"0", "false", "off", "no"}


def compiler() -> str:
    """The C++ compiler: $CXX, else the first of c++, g++, clang++ on PATH."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise NativeUnavailable("no C++ compiler found ($CXX, c++, g++ or clang++)")


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"{cxx} --version failed: {e}") from e


def library_path(source: Path, cxx: str) -> Path:
    """Where the library built from `source` by `cxx` for this CPU is cached: the name carries a digest of the
    source, the compiler, its flags and the CPU, so a changed kernel or a new machine builds afresh."""
    key = "\n".join([source.read_text(), cxx, _compiler_version(cxx), " ".join(FLAGS), cpu_name(),
                     platform.machine()])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return user_cache_dir() / "native" / f"{source.stem}-{digest}.so"


def build(source: Path, cxx: str, target: Path) -> float:
    """Compile `source` into `target` (written whole or not at all, so parallel ranks can race); the seconds."""
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NativeUnavailable(f"could not create {target.parent}: {e}") from e
    t0 = time.perf_counter()
    try:
        result = subprocess.run([cxx, *FLAGS, str(source), "-o", str(tmp)], capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"{cxx} could not compile {source.name}: {e}") from e
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (result.stderr.strip().splitlines() or ["(no message)"])[0]
        raise NativeUnavailable(f"{cxx} failed on {source.name}: {first}")
    try:
        tmp.replace(target)
    except OSError as e:
        raise NativeUnavailable(f"could not write {target}: {e}") from e
    return time.perf_counter() - t0


def load(source: Path) -> tuple[ctypes.CDLL, str]:
    """The library of `source`, built first when not cached; and a line saying which (raises NativeUnavailable)."""
    if not enabled():
        raise NativeUnavailable(f"turned off by {NATIVE_ENV}")
    cxx = compiler()
    target = library_path(source, cxx)
    how = f"cached in {target.parent}"
    if not target.exists():
        how = f"built in {build(source, cxx, target):.1f} s by {Path(cxx).name} for this CPU"
    try:
        return ctypes.CDLL(str(target)), how
    except OSError as e:
        raise NativeUnavailable(f"could not load {target}: {e}") from e
