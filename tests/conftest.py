"""Shared test settings: paths to the optional ../shared material and a marker that skips without it."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "yolov5-v7.0"
DATASETS = SHARED / "datasets"

# A developer's own W&B login must not send every test training online; tests of the W&B logger set their own mode.
os.environ["WANDB_MODE"] = "disabled"
# Trainings in tests run one fixed CPU recipe (the measured choice would differ between machines and test sizes, and
# single-process vs torchrun comparisons need the same arithmetic); tests of the measured choice unset it.
os.environ["MTYOLO_CPU_RECIPE"] = "channels_last-fp32"
# Likewise prediction stays on PyTorch (exporting every test's weights to each runtime would dominate the suite);
# tests of the automatic runtime choice unset it.
os.environ["MTYOLO_CPU_RUNTIME"] = "pytorch"
# Measured recipes, exports and compiled kernels go to a cache of the test session, never the developer's own.
os.environ["MTYOLO_CACHE_DIR"] = tempfile.mkdtemp(prefix="mtyolo-test-cache-")
atexit.register(shutil.rmtree, os.environ["MTYOLO_CACHE_DIR"], ignore_errors=True)


def need(path: Path) -> Path:
    """Skip the calling test unless `path` exists (the shared fixtures and datasets are optional)."""
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def log(caplog):
    """caplog wired to the project logger (which does not propagate to the root logger)."""
    from utils.log import LOGGER

    LOGGER.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    yield caplog
    LOGGER.removeHandler(caplog.handler)


def write_tiny_shapes(root: Path, n_train: int = 16, n_val: int = 8, seed: int = 1,
                      imgsz_range: tuple[int, int] = (64, 96)) -> Path:
    """A small synthetic detection set under root and its data YAML (4 shape classes)."""
    from utils.data.synthetic import generate_shapes

    generate_shapes(root, n_train=n_train, n_val=n_val, seed=seed, imgsz_range=imgsz_range)
    y = root / "tiny.yaml"
    y.write_text(f"path: {root / 'det'}\ntrain: images/train\nval: images/val\n"
                 "names: {0: rectangle, 1: ellipse, 2: triangle, 3: star}\n")
    return y


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A 24-image synthetic detection set (16 train, 8 val), generated once per test session."""
    return str(write_tiny_shapes(tmp_path_factory.mktemp("shapes")))


def write_checkpoint(path: Path, cfg: str = "yolov5n.yaml", nc: int = 4, seed: int = 0, cls: bool = False,
                     sharp: bool = False) -> Path:
    """A randomly initialised model saved as one of our checkpoints (cls=True: the cfg's backbone + Classify head).

    sharp=True scales the detection head's weights by 1e5 and zeroes its biases: a fresh model's outputs barely
    depend on the image (confidences all ~0.004), this one's spread over 0.2-0.45 and change with every pixel,
    so tests can tell inputs apart and see thresholds act.
    """
    import torch

    from models.build import build_model
    from models.yolo import ClassificationModel, DetectionModel
    from utils.checkpoint import make_checkpoint, save_checkpoint
    from utils.log import quiet

    torch.manual_seed(seed)
    with quiet():
        cfg_path = ROOT / "models" / cfg
        m = ClassificationModel(model=DetectionModel(cfg_path), nc=nc) if cls else build_model(cfg_path, nc=nc)
    if sharp:
        with torch.no_grad():
            for conv in m.model[-1].m:
                conv.weight *= 1e5
                conv.bias.zero_()
    m.names = {i: f"shape{i}" for i in range(nc)}
    return save_checkpoint(make_checkpoint(m, half=False), path)


class _FileHandler:
    """Request handler factory for `http_files`: serves a folder; /cut/<name> sends half of <name> and hangs up."""

    @staticmethod
    def make(directory: Path):
        import http.server

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(directory), **k)

            def log_message(self, *a):  # keep pytest's output clean
                pass

            def do_GET(self):
                if not self.path.startswith("/cut/"):
                    return super().do_GET()
                data = (directory / self.path[len("/cut/"):]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))  # promise everything, deliver half
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True

        return Handler


@pytest.fixture
def http_files(tmp_path):
    """A local HTTP server on 127.0.0.1 over tmp_path/www: yields (folder, base URL); the internet stand-in."""
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler.make(www))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def unreachable_url(name: str = "data.zip") -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released): downloads fail as they do offline."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
