"""utils/serve.py as users run it: a real server process on a free local port, talked to over HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, write_checkpoint

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

IMAGE = ROOT / "data/images/shapes1.jpg"
IMAGE2 = ROOT / "data/images/shapes2.jpg"
MAX_BYTES = 300_000
MAX_PIXELS = 1_000_000
FLAGS = {"--imgsz": 320, "--conf-thres": 0.35, "--iou-thres": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    return [write_checkpoint(d / "alpha.pt", sharp=True), write_checkpoint(d / "beta.pt", nc=3, seed=1, sharp=True)]


@contextlib.contextmanager
def running_server(args: list[str], log_dir: Path):
    """`python utils/serve.py ARGS` in its own process on a free local port; yields (base URL, process), stops it
    afterwards."""
    port = free_port()
    log = open(log_dir / "serve.log", "w+")
    cmd = [sys.executable, str(ROOT / "utils/serve.py"), *map(str, args), "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"server did not start:\n{log.read()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    """The server of two models with the test's limits and defaults; yields (base URL, process)."""
    args = ["--weights", *weights, "--max-bytes", MAX_BYTES, "--max-pixels", MAX_PIXELS,
            *(x for kv in FLAGS.items() for x in kv)]
    with running_server(args, tmp_path_factory.mktemp("log")) as running:
        yield running


def post(url: str, model: str, files=None, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/object-detection/{model}", files=files, timeout=120, **kw)


def upload(path=IMAGE) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    """shapes1 turned on its side: another input shape, so concurrent forwards of one model differ in shape."""
    f = tmp_path_factory.mktemp("img") / "portrait.png"
    cv2.imwrite(str(f), cv2.imread(str(IMAGE)).transpose(1, 0, 2))
    return f


def test_health_lists_the_models(server):
    r = httpx.get(f"{server[0]}/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": {"alpha": {"task": "detect", "classes": 4},
                                                   "beta": {"task": "detect", "classes": 3}}}


def test_detections_match_the_python_api(server, weights):
    from utils.hub.create import custom

    r = post(server[0], "alpha", upload())
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = r.json()
    want = custom(weights[0], _verbose=False)(IMAGE, size=320, conf=0.35, iou=0.5).records()[0]
    assert len(got) == len(want) > 0
    assert list(got[0]) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    for g, w in zip(got, want):
        assert g["class"] == w["class"] and g["name"] == w["name"] == f"shape{w['class']}"
        assert np.allclose([g[k] for k in ("xmin", "ymin", "xmax", "ymax", "confidence")],
                           [w[k] for k in ("xmin", "ymin", "xmax", "ymax", "confidence")], atol=1e-3)
    fewer = post(server[0], "alpha", upload(), params={"conf": 0.4}).json()  # per-request thresholds
    assert len(fewer) < len(got) and all(d["confidence"] >= 0.4 for d in fewer)


@pytest.mark.parametrize("case", ["missing file", "other field", "not an image", "empty file", "unknown model",
                                  "bad conf", "bad iou"])
def test_bad_requests_get_a_4xx_json_error(server, tmp_path, case):
    url = server[0]
    r = {
        "missing file": lambda: post(url, "alpha", data={"x": "1"}),
        "other field": lambda: post(url, "alpha", {"file": ("a.jpg", IMAGE.read_bytes())}),
        "not an image": lambda: post(url, "alpha", {"image": ("notes.jpg", b"hello, not a picture")}),
        "empty file": lambda: post(url, "alpha", {"image": ("a.jpg", b"")}),
        "unknown model": lambda: post(url, "gamma", upload()),
        "bad conf": lambda: post(url, "alpha", upload(), params={"conf": 2}),
        "bad iou": lambda: post(url, "alpha", upload(), params={"iou": "x"}),
    }[case]()
    want = {"unknown model": 404, "bad conf": 422, "bad iou": 422}.get(case, 400)
    assert r.status_code == want, r.text
    assert r.headers["content-type"] == "application/json" and r.json()["detail"]
    if case == "unknown model":
        assert "gamma" in r.json()["detail"] and "alpha, beta" in r.json()["detail"]


def test_too_large_is_413(server):
    url = server[0]
    noise = os.urandom(MAX_BYTES + 1000)  # over --max-bytes, within the multipart allowance: the app refuses it
    r = post(url, "alpha", {"image": ("big.jpg", noise)})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]
    r = post(url, "alpha", {"image": ("big.jpg", noise * 3)})  # refused from Content-Length before it is read
    assert r.status_code == 413 and "request body" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives and cut off
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        for _ in range(8):
            yield os.urandom(100_000)
        yield b"\r\n--b--\r\n"

    r = httpx.post(f"{url}/v1/object-detection/alpha", content=chunks(), timeout=120,
                   headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["detail"]
    ok, png = cv2.imencode(".png", np.zeros((1000, 1200, 3), np.uint8))  # 1.2 MP in a few kB
    assert len(png) < MAX_BYTES
    r = post(url, "alpha", {"image": ("wide.png", png.tobytes())})
    assert r.status_code == 413 and "1200x1000 pixels" in r.json()["detail"]


def test_concurrent_requests_are_answered_correctly(server, portrait):
    url = server[0]
    singles = {(m, f): post(url, m, upload(f)).json() for m in ("alpha", "beta") for f in (IMAGE, IMAGE2, portrait)}
    jobs = [(m, f) for m in ("alpha", "beta") for f in (IMAGE, IMAGE2, portrait, portrait)] * 2  # 16 at once
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: post(url, job[0], upload(job[1])), jobs))
    assert [a.status_code for a in answers] == [200] * len(jobs)
    for job, a in zip(jobs, answers):
        assert a.json() == singles[job]
    assert singles[("alpha", IMAGE)] != singles[("beta", IMAGE)] != singles[("beta", IMAGE2)]


def test_server_survives_everything(server):
    url, proc = server
    r = post(url, "alpha", {"image": ("x.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100)})  # a JPEG header, no picture
    assert r.status_code == 400
    assert proc.poll() is None
    assert httpx.get(f"{url}/health").status_code == 200
    assert post(url, "beta", upload()).status_code == 200


def test_flags_are_checked_before_loading(capsys):
    from utils import serve

    for argv, msg in ((["--weights", "a/x.pt", "b/x.pt"], "two models would share a name"),
                      (["--weights", "a.pt", "--conf-thres", "2"], "--conf-thres 2.0 is not in [0, 1]"),
                      (["--weights", "a.pt", "--max-bytes", "0"], "--max-bytes must be positive")):
        with pytest.raises(SystemExit):
            serve.parse_opt(argv)
        assert msg in capsys.readouterr().err


def test_missing_weights_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "utils/serve.py"), "--weights", str(tmp_path / "none.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"ERROR: {tmp_path / 'none.pt'} not found"
