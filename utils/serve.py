"""REST API for YOLOv5 models: POST an image, get its detections as JSON; GET / for a page that does it in a browser.

    python utils/serve.py --weights yolov5s.pt runs/train/exp/weights/best.pt --port 8000
    curl -F image=@data/images/shapes1.jpg http://127.0.0.1:8000/v1/object-detection/best
    curl http://127.0.0.1:8000/health
    python utils/serve.py --weights best.pt --host 0.0.0.0 --api-key "$KEY"   # clients send Authorization: Bearer KEY

Every model loads once at start and is served at /v1/object-detection/<file stem>. The answer is a JSON list of
{xmin, ymin, xmax, ymax, confidence, class, name} in the image's pixels (instance-segmentation models add each
mask's outline as 'segment'; classifiers answer with their top-5 {class, name, confidence}). Bad requests get a 4xx
JSON {"detail": ...}: 400 no or undecodable image, 404 unknown model, 413 too many bytes or pixels, 422 bad
parameters (?conf=, ?iou= outside 0-1), 401 a missing or wrong API key (with --api-key: every route but /health).
/v1/predict/<stem> answers the same records plus the image drawn with them (and a class-map PNG for detection +
semantic models): what the page at / shows.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import io
import json
import os
import sys
import threading
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from fastapi import FastAPI, File, HTTPException, Query, UploadFile  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse  # noqa: E402

from utils.data.imageio import imdecode  # noqa: E402
from utils.hub.create import custom  # noqa: E402
from utils.hub.inputs import ImageInputError  # noqa: E402
from utils.log import LOGGER  # noqa: E402

MAX_BYTES = 20 * 2**20  # largest accepted upload (20 MiB)
MAX_PIXELS = 40_000_000  # largest accepted image (40 megapixels: decoding one takes ~120 MB)
MULTIPART_SLACK = 64 * 2**10  # room for multipart headers and boundaries around the file itself
API_KEY_ENV = "YOLO_API_KEY"  # the environment variable --api-key defaults to
PAGE = Path(__file__).with_name("serve_page.html")  # GET /: one self-contained file, no build step or assets
# What answers without the API key: the liveness check, and the page itself (static HTML with no data in it; a
# browser cannot send a header when it opens a URL, so the page has to load before it can ask for the key)
OPEN_PATHS = ("/health", "/")


class Served:
    """A loaded model and the lock that serialises its forwards."""

    def __init__(self, model):
        self.model = model
        # One forward at a time per model: a forward rebuilds the Detect head's cached grids when the input shape
        # changes, so two concurrent calls with different shapes could read each other's grids; and each forward
        # already spreads over every core (torch's intra-op threads). Reading, checking and decoding uploads run
        # outside the lock, in parallel, and different models predict side by side.
        self.lock = threading.Lock()


def load_models(weights: list[str], device: str = "") -> dict[str, Served]:
    """Load each checkpoint once, keyed by file stem; two files with the same stem are refused."""
    stems = [Path(w).stem for w in weights]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(f"--weights: more than one model named {', '.join(dup)} (models are served by file stem)")
    return {s: Served(custom(w, device=device or None, _verbose=False)) for s, w in zip(stems, weights)}


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ApiKey:
    """ASGI middleware: with a key set, a request without `Authorization: Bearer KEY` or `X-API-Key: KEY` gets 401
    (every path but OPEN_PATHS)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    def _allowed(self, headers: dict[bytes, bytes]) -> bool:
        bearer = headers.get(b"authorization", b"")
        given = bearer[7:].strip() if bearer[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return hmac.compare_digest(given, self.key)  # constant time: the key cannot be guessed byte by byte

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(dict(scope.get("headers") or [])):
            return await self.app(scope, receive, send)
        return await _send_json(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY' or "
                                           "'X-API-Key: KEY'")


def _png_base64(image) -> str:
    """An image (HxWx3 RGB or HxW ids) as base64 PNG text."""
    import cv2

    im = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(im))
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


class BodyLimit:
    """ASGI middleware: bodies over `limit` bytes get 413 without being read into memory or spooled to disk.

    A declared Content-Length over the limit is refused before any byte is read; a chunked body is counted as it
    arrives and cut off at the limit (the app sees a disconnect, its answer is replaced by the 413)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, f"request body of {int(length)} bytes is over the limit of "
                                               f"{self.limit} bytes")
        seen, cut = 0, False

        async def counted():
            nonlocal seen, cut
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    cut = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg):
            if not cut:
                await send(msg)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not cut:
                raise
        if cut:
            await _send_json(send, 413, f"request body is over the limit of {self.limit} bytes")


def _image_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding the pixels; None if it is no image format."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Image.DecompressionBombError:  # PIL's own ceiling (~179 MP): over ours as well
            return max_pixels + 1, 1
        except Exception:  # UnidentifiedImageError, truncated headers, ...
            return None


def create_app(models: dict[str, Served], max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               conf: float = 0.25, iou: float = 0.45, imgsz: int = 640, api_key: str = ""):
    """The FastAPI app serving already-loaded models (see the module docstring for the API)."""
    app = FastAPI(title="MT-YOLOv5", description="YOLOv5 models over HTTP")
    app.add_middleware(BodyLimit, limit=max_bytes + MULTIPART_SLACK)
    if api_key:
        app.add_middleware(ApiKey, key=api_key)  # added last, so it runs first: no body is read for a stranger

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):  # a bug, never a user error: JSON all the same, server lives on
        LOGGER.error(f"ERROR: {request.url.path}: {type(exc).__name__}: {exc}")
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/health")
    def health() -> dict:
        """Liveness and the models being served."""
        return {"status": "ok", "models": {k: {"task": s.model.task, "classes": len(s.model.names)}
                                           for k, s in models.items()}}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        """The browser page: choose a model, drop an image, see the drawing and the JSON."""
        return PAGE.read_text(encoding="utf-8")

    def predict(name: str, image: UploadFile | None, conf_thres: float | None, iou_thres: float | None):
        """The model's results on the uploaded image, after every check of the request."""
        served = models.get(name)
        if served is None:
            raise HTTPException(404, f"unknown model {name!r}; served: {', '.join(sorted(models))}")
        if image is None or not hasattr(image, "file"):
            raise HTTPException(400, "no image: upload one as the multipart form field 'image'")
        data = image.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"image file is over the limit of {max_bytes} bytes")
        size = _image_size(data, max_pixels)
        if size is None:
            raise HTTPException(400, f"{image.filename or 'upload'}: not an image (unknown or broken format)")
        if size[0] * size[1] > max_pixels:
            raise HTTPException(413, f"image of {size[0]}x{size[1]} pixels is over the limit of {max_pixels}")
        bgr = imdecode(data)
        if bgr is None:
            raise HTTPException(400, f"{image.filename or 'upload'}: could not decode the image")
        try:
            with served.lock:
                return served.model(bgr[..., ::-1], size=imgsz, conf=conf if conf_thres is None else conf_thres,
                                    iou=iou if iou_thres is None else iou_thres)
        except ImageInputError as e:
            raise HTTPException(400, str(e)) from None

    @app.post("/v1/object-detection/{name}")
    def detect(name: str, image: UploadFile | None = File(None),
               conf_thres: float | None = Query(None, alias="conf", ge=0, le=1),
               iou_thres: float | None = Query(None, alias="iou", ge=0, le=1)) -> list[dict]:
        """Detections in the uploaded image (multipart field 'image')."""
        return predict(name, image, conf_thres, iou_thres).records()[0]

    @app.post("/v1/predict/{name}")
    def predict_drawn(name: str, image: UploadFile | None = File(None),
                      conf_thres: float | None = Query(None, alias="conf", ge=0, le=1),
                      iou_thres: float | None = Query(None, alias="iou", ge=0, le=1)) -> dict:
        """The records, the image drawn with them (base64 PNG) and, for detection + semantic models, the class map
        (base64 PNG of class ids)."""
        results = predict(name, image, conf_thres, iou_thres)
        im = results.ims[0]
        semantic = getattr(results, "semantic", None)
        return {"model": name, "task": models[name].model.task, "width": int(im.shape[1]), "height": int(im.shape[0]),
                "records": results.records()[0], "image": _png_base64(results.render()[0]),
                "class_map": _png_base64(semantic[0].cpu().numpy()) if semantic else None}

    return app


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse serve.py flags."""
    p = argparse.ArgumentParser(description="Serve YOLOv5 models over HTTP (FastAPI + uvicorn)")
    p.add_argument("--weights", nargs="+", type=str, required=True, help="model path(s); served by file stem")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="default confidence threshold (?conf= overrides)")
    p.add_argument("--iou-thres", type=float, default=0.45, help="default NMS IoU threshold (?iou= overrides)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest accepted upload in bytes")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest accepted image in pixels (w x h)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV, ""),
                   help=f"require this key on every route but /health (default: ${API_KEY_ENV}); use it whenever "
                        f"--host is not 127.0.0.1")
    opt = p.parse_args(argv)
    for k in ("conf_thres", "iou_thres"):
        if not 0 <= getattr(opt, k) <= 1:
            p.error(f"--{k.replace('_', '-')} {getattr(opt, k)} is not in [0, 1]")
    for k in ("max_bytes", "max_pixels", "imgsz"):
        if getattr(opt, k) <= 0:
            p.error(f"--{k.replace('_', '-')} must be positive, got {getattr(opt, k)}")
    stems = [Path(w).stem for w in opt.weights]
    if len(set(stems)) < len(stems):
        p.error(f"--weights: two models would share a name ({' '.join(stems)}): they are served by file stem")
    return opt


def main(opt: argparse.Namespace) -> None:
    """Load the models, then serve until interrupted."""
    import uvicorn

    models = load_models(opt.weights, opt.device)
    app = create_app(models, opt.max_bytes, opt.max_pixels, opt.conf_thres, opt.iou_thres, opt.imgsz, opt.api_key)
    if not opt.api_key and opt.host not in ("127.0.0.1", "localhost", "::1"):
        LOGGER.warning(f"WARNING ⚠️ --host {opt.host} without --api-key: anyone who reaches this port can use the "
                       f"models")
    LOGGER.info(f"Serving {', '.join(models)} at http://{opt.host}:{opt.port}/ (page) and "
                f"/v1/object-detection/<model>{' (API key required)' if opt.api_key else ''}")
    uvicorn.run(app, host=opt.host, port=opt.port)


if __name__ == "__main__":
    from utils.engine.cli import run_main

    run_main(main, parse_opt())
