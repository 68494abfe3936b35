"""attempt_download / safe_download without any network access (urlopen is always monkeypatched)."""

from __future__ import annotations

import io
import urllib.error
import urllib.request

import pytest

from utils import downloads
from utils.downloads import attempt_download, is_official_asset, is_url, safe_download


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


def test_existing_file_is_returned(tmp_path):
    f = tmp_path / "yolov5s.pt"
    f.write_bytes(b"x")
    assert attempt_download(f) == f
    assert attempt_download(str(f)) == f


def test_official_asset_offline_one_line(tmp_path):
    target = tmp_path / "w" / "yolov5n-seg.pt"
    with pytest.raises(FileNotFoundError) as e:
        attempt_download(target)
    msg = str(e.value)
    url = "https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5n-seg.pt"
    assert msg == f"yolov5n-seg.pt not found and could not be downloaded (offline?): download it from {url} " \
                  f"and put it at {target}"
    assert "\n" not in msg and not target.exists()
    assert [p for p in target.parent.iterdir()] == []  # no partial download left behind


def test_unknown_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="mine.pt not found"):
        attempt_download(tmp_path / "mine.pt")


def test_asset_names():
    for name in ("yolov5n.pt", "yolov5x6.pt", "yolov5s-seg.pt", "yolov5m-cls.pt", "yolov5l6.pt"):
        assert is_official_asset(name), name
    for name in ("yolov5.pt", "yolov5z.pt", "yolov5s.onnx", "yolov5s-seg6.pt", "best.pt"):
        assert not is_official_asset(name), name


def test_is_url():
    assert is_url("https://github.com/a/b.pt") and is_url("http://x.org")
    assert not is_url("yolov5s.pt") and not is_url("/tmp/a.pt") and not is_url("https://")


class _Resp(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_safe_download_size_check_and_success(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Resp(b"<html>not found</html>"))
    f = tmp_path / "yolov5s.pt"
    with pytest.raises(OSError, match="expected at least"):
        safe_download("https://example.invalid/yolov5s.pt", f)
    assert list(tmp_path.iterdir()) == []
    payload = bytes(range(256)) * (downloads.MIN_BYTES // 256 + 1)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Resp(payload))
    assert attempt_download(f) == f and f.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["yolov5s.pt"]
