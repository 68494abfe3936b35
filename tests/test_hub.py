"""The hub API: torch.hub.load on hubconf.py, AutoShape on every input kind, and the results objects."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, need, write_checkpoint

from utils.hub.inputs import ImageInputError

IMAGE = ROOT / "data/images/shapes1.jpg"  # 480x360
IMAGE2 = ROOT / "data/images/shapes2.jpg"
CONF = 0.3  # the sharp test model's confidences spread over 0.2-0.45


def hub_load(*args, **kwargs):
    return torch.hub.load(str(ROOT), *args, source="local", _verbose=False, **kwargs)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("hub") / "sharp.pt", sharp=True)


@pytest.fixture(scope="module")
def loaded(ckpt):
    return hub_load("custom", path=str(ckpt))


@pytest.fixture
def model(loaded):
    """The module's hub model with the class defaults restored (tests set thresholds on it)."""
    for k in ("conf", "iou", "agnostic", "multi_label", "classes", "max_det", "amp"):
        loaded.__dict__.pop(k, None)
    loaded.conf = CONF
    return loaded


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    """shapes1 as a lossless file: PIL and OpenCV decode it to the same pixels (JPEG decoders may differ)."""
    f = tmp_path_factory.mktemp("img") / "shapes1.png"
    cv2.imwrite(str(f), cv2.imread(str(IMAGE)))
    return f


def same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a.pred, b.pred):
        assert x.shape == y.shape and len(x) > 0
        torch.testing.assert_close(x, y)


# ---------------------------------------------------------------------------------------------------- loading


def test_torch_hub_custom_from_another_folder(ckpt, tmp_path):
    """A fresh interpreter, not in the repo: torch.hub imports hubconf.py, and the model works after it returns."""
    code = (f"import torch; m = torch.hub.load({str(ROOT)!r}, 'custom', path={str(ckpt)!r}, source='local', "
            f"_verbose=False); m.conf = {CONF}; r = m({str(IMAGE)!r}, size=320); r.print(); print(r.to_json()[:40])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "image 1/1: 360x480 " in out.stdout and "Speed: " in out.stdout
    assert '[{"file": "shapes1.jpg"' in out.stdout


def test_entry_points_listed_with_docs():
    import hubconf

    names = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    for n in ("custom", "yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x", "yolov5n6", "yolov5x6", "yolov5s_seg",
              "yolov5s_cls"):
        assert n in names and getattr(hubconf, n).__doc__
    assert "yolov5x6" in hubconf.yolov5x6.__doc__


def test_pretrained_false_builds_random_models():
    seg = hub_load("yolov5n_seg", pretrained=False, classes=2)
    assert seg.task == "segment" and seg.names == {0: "class0", 1: "class1"} and seg.model.model[-1].nc == 2
    assert not seg.model.training and seg.stride == 32
    raw = hub_load("yolov5n6", pretrained=False, channels=4, classes=3, autoshape=False)
    assert raw.training and raw.model[0].conv.in_channels == 4 and raw.model[-1].nc == 3  # ready to train
    assert int(raw.stride.max()) == 64
    from utils.checkpoint import prepare_inference
    from utils.hub.autoshape import AutoShape

    four = AutoShape(prepare_inference(raw))
    assert four(torch.rand(1, 4, 128, 128), conf=0.0, max_det=3).s == (1, 4, 128, 128)
    with pytest.raises(ImageInputError, match="4-channel input"):
        four(IMAGE)
    cls = hub_load("yolov5n_cls", pretrained=False, classes=5)
    assert cls.task == "classify" and len(cls.names) == 5


def test_pretrained_offline_is_one_clear_line(tmp_path, monkeypatch):
    import utils.downloads

    def offline(url, file, *a, **k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(utils.downloads, "safe_download", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        hub_load("yolov5s")
    msg = str(e.value)
    assert "\n" not in msg and "yolov5s.pt" in msg and "download it from https://github.com/" in msg
    with pytest.raises(FileNotFoundError, match="yolov5n6.pt not found and could not be downloaded"):
        hub_load("yolov5n6", classes=3)  # the transfer path fetches the same file


def test_pretrained_uses_a_local_file_and_transfers_to_other_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "yolov5n.pt", nc=80, seed=3)
    m = hub_load("yolov5n")  # found in the working folder: nothing downloaded
    assert len(m.names) == 80 and m.names[0] == "shape0"
    m3 = hub_load("yolov5n", classes=3, autoshape=False)
    assert m3.model[-1].nc == 3 and len(m3.names) == 3 and m3.names[0] == "class0"  # 80 names don't fit 3 classes
    fresh = hub_load("yolov5n", pretrained=False, classes=3, autoshape=False)
    w80, w3 = m.model.state_dict()["model.8.cv1.conv.weight"], m3.state_dict()["model.8.cv1.conv.weight"]
    torch.testing.assert_close(w3, w80)  # the backbone came from the file (fused conv + BatchNorm alike)
    assert not torch.allclose(fresh.state_dict()["model.8.cv1.conv.weight"], w80)
    assert m3.state_dict()["model.24.m.0.weight"].shape[0] == 3 * 8  # the head was sized for 3 classes


def test_hubconf_cli_offline_is_one_line(tmp_path):
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, str(ROOT / "hubconf.py"), "--model", "yolov5n"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("ERROR: yolov5n.pt not found and could not be downloaded")


# ------------------------------------------------------------------------------------------------------ inputs


def test_every_input_kind_gives_the_same_detections(model, png):
    from PIL import Image

    bgr = cv2.imread(str(png))
    ref = model(str(png), size=320)
    assert ref.files == ["shapes1.png"] and ref.ims[0].shape == (360, 480, 3)
    same(model(png, size=320), ref)  # Path
    same(model(Image.open(png), size=320), ref)  # PIL
    same(model(bgr[..., ::-1], size=320), ref)  # numpy is RGB
    same(model(png.read_bytes(), size=320), ref)  # encoded bytes
    assert not torch.equal(model(bgr, size=320).pred[0], ref.pred[0])  # BGR given as if RGB: other results


def test_lists_mix_kinds_and_name_files(model, png):
    from PIL import Image

    bgr = cv2.imread(str(png))
    t = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)
    r = model([str(png), Image.open(png), bgr[..., ::-1], t.float() / 255, t], size=320)
    assert len(r) == 5 and r.files == ["shapes1.png", "shapes1.png", "image2.jpg", "image3.jpg", "image4.jpg"]
    for k in range(1, 5):
        torch.testing.assert_close(r.pred[k], r.pred[0])
    assert r.file_names()[:2] == ["shapes1.png", "shapes1_1.png"]  # same name twice: saved apart


def test_a_batch_tensor_runs_as_it_is(model, tmp_path):
    im = cv2.resize(cv2.imread(str(IMAGE)), (320, 256))  # already a multiple of 32: letterboxing changes nothing
    f = tmp_path / "im.png"
    cv2.imwrite(str(f), im)
    x = torch.from_numpy(im[..., ::-1].copy()).permute(2, 0, 1).float()[None] / 255
    r = model(x)
    assert r.s == (1, 3, 256, 320) and r.ims[0].shape == (256, 320, 3)
    same(r, model(f, size=320))
    with pytest.raises(ImageInputError, match="multiples of 32"):
        model(torch.rand(1, 3, 100, 100))
    with pytest.raises(ImageInputError, match="float 0-1"):
        model((x * 255).byte())


def test_bad_inputs_are_one_clear_line(model, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    cases = [(tmp_path / "missing.jpg", FileNotFoundError, "missing.jpg: image not found"),
             (tmp_path / "notes.jpg", ImageInputError, "notes.jpg: not an image"),
             (np.zeros((10, 10, 3), np.float32), ImageInputError, "must be uint8"),
             (np.zeros((10, 10, 2), np.uint8), ImageInputError, "HxWx3"),
             (b"\x00\x01", ImageInputError, "not an image"),
             (42, ImageInputError, "int is not an image"),
             ([], ImageInputError, "no images")]
    for x, err, msg in cases:
        with pytest.raises(err, match=msg) as e:
            model(x)
        assert "\n" not in str(e.value)


def test_url_inputs(model, png):
    """Fetched when reachable (a local HTTP server stands in for the internet); one line when not."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(png.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{png.name}?x=1"
        r = model(url, size=320)
        assert r.files == ["shapes1.png"]
        same(r, model(png, size=320))
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FileNotFoundError) as e:
        model(url)  # the server is gone: as offline
    assert "could not download" in str(e.value) and "offline?" in str(e.value) and "\n" not in str(e.value)


def test_size_sets_the_inference_shape(model):
    assert model(IMAGE, size=320).s == (1, 3, 256, 320)  # longest side 320, the other padded to a multiple of 32
    assert model(IMAGE, size=300).s == (1, 3, 256, 320)  # rounded up to the stride as detect.py does
    assert model(IMAGE).s == (1, 3, 480, 640)  # default 640
    assert model(IMAGE, size=(320, 320)).s == (1, 3, 320, 320)  # (h, w): every image letterboxed into it
    r = model([IMAGE, cv2.imread(str(IMAGE)).transpose(1, 0, 2)], size=320)  # 360x480 and 480x360 together
    assert r.s == (2, 3, 320, 320)
    assert r.ims[1].shape == (480, 360, 3) and (r.pred[1][:, [2, 3]] <= torch.tensor([360.0, 480.0])).all()


def test_batches_match_single_images(model):
    both = model([IMAGE, IMAGE2], size=320)
    for k, f in enumerate((IMAGE, IMAGE2)):
        one = model(f, size=320)
        assert len(one.pred[0]) == len(both.pred[k]) > 0
        torch.testing.assert_close(both.pred[k], one.pred[0], atol=1e-3, rtol=1e-4)


# ------------------------------------------------------------------------------------------------- thresholds


def test_settable_thresholds_change_results(model):
    base = model(IMAGE, size=320)
    p = base.pred[0]
    assert len(p) > 20 and (p[:, 4] >= CONF).all()
    model.conf = 0.35
    assert 0 < len(model(IMAGE, size=320).pred[0]) < len(p)
    model.conf = CONF
    model.classes = [1]
    assert set(model(IMAGE, size=320).pred[0][:, 5].tolist()) == {1.0}
    model.classes = None
    model.max_det = 5
    assert len(model(IMAGE, size=320).pred[0]) == 5
    model.max_det = 1000
    model.iou = 0.05
    assert len(model(IMAGE, size=320).pred[0]) < len(p)
    model.iou = 0.45
    model.agnostic = True
    agn = model(IMAGE, size=320).pred[0]
    from utils.boxes import box_iou

    inside = agn[(agn[:, 0] > 0) & (agn[:, 1] > 0) & (agn[:, 2] < 480) & (agn[:, 3] < 360)]  # clipping moves boxes
    iou = box_iou(inside[:, :4], inside[:, :4]).fill_diagonal_(0)
    assert len(inside) > 5 and (iou <= 0.45 + 1e-5).all() and len(agn) < len(p)  # across classes too
    model.agnostic = False
    model.multi_label = True
    multi = model(IMAGE, size=320).pred[0]
    assert len(multi) > len(p)
    # per call, without touching the attributes
    model.multi_label = False
    same(model(IMAGE, size=320, conf=0.35, classes=[0]), model.__class__.forward(model, IMAGE, 320, conf=0.35,
                                                                                 classes=[0]))
    assert model.conf == CONF and model.classes is None
    with pytest.raises(TypeError, match="conf_thres"):
        model(IMAGE, conf_thres=0.5)


# ---------------------------------------------------------------------------------------------------- results


@pytest.fixture(scope="module")
def results(loaded):
    return loaded([IMAGE, IMAGE2], size=320, conf=0.35)


def test_print_str_len_and_iteration(results, capsys):
    results.print()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("image 1/2: 360x480 ") and out[1].startswith("image 2/2: 360x480 ")
    assert "shape" in out[0] and out[2].startswith("Speed: ") and "per image at shape (2, 3, 256, 320)" in out[2]
    n0 = len(results.pred[0])
    assert f"{n0} " in out[0] or n0 == 0
    assert repr(results).startswith("MT-YOLOv5 Detections instance\nimage 1/2")
    assert len(results) == 2 and all(t > 0 for t in results.t)
    parts = list(results)
    assert [len(p) for p in parts] == [1, 1] and parts[1].files == ["shapes2.jpg"]
    torch.testing.assert_close(parts[1].pred[0], results.pred[1])
    assert str(parts[0]).startswith("image 1/1: 360x480 ")


def test_box_forms(results):
    h, w = results.ims[0].shape[:2]
    xyxy, xywh, xyxyn, xywhn = results.xyxy[0], results.xywh[0], results.xyxyn[0], results.xywhn[0]
    torch.testing.assert_close(xywh[:, 0], (xyxy[:, 0] + xyxy[:, 2]) / 2)
    torch.testing.assert_close(xywh[:, 3], xyxy[:, 3] - xyxy[:, 1])
    torch.testing.assert_close(xyxyn[:, :4] * torch.tensor([w, h, w, h]), xyxy[:, :4])
    torch.testing.assert_close(xywhn[:, 4:], xyxy[:, 4:])
    assert (xywhn[:, :4] >= 0).all() and (xywhn[:, :4] <= 1).all()


def test_render_returns_annotated_copies(results):
    before = [im.copy() for im in results.ims]
    drawn = results.render()
    assert [d.shape for d in drawn] == [im.shape for im in before]
    assert all(np.array_equal(a, b) for a, b in zip(results.ims, before))  # held images untouched
    assert (drawn[0] != before[0]).any()
    bare = results.render(labels=False)[0]
    assert (bare != drawn[0]).any()  # labels drawn only in the first


def test_show_without_display_is_one_warning(results, monkeypatch, log):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    results.show()
    warnings = [r for r in log.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no display" in warnings[0].getMessage()


def test_save_never_overwrites(results, tmp_path):
    d1 = results.save(save_dir=tmp_path / "exp")
    d2 = results.save(save_dir=tmp_path / "exp")
    assert d1 == tmp_path / "exp" and d2 == tmp_path / "exp2"
    assert sorted(p.name for p in d1.iterdir()) == ["shapes1.jpg", "shapes2.jpg"]
    saved = cv2.imread(str(d2 / "shapes1.jpg"))[..., ::-1]
    assert saved.shape == (360, 480, 3)
    drawn = results.render()[0].astype(int)
    assert np.abs(saved - drawn).mean() * 3 < np.abs(saved - drawn[..., ::-1]).mean()  # true colours, not swapped


def test_crop(results, tmp_path):
    crops = results.crop(save_dir=tmp_path / "exp")
    n = sum(len(p) for p in results.pred)
    assert len(crops) == n > 0
    c = crops[0]
    assert set(c) == {"box", "conf", "cls", "label", "im"} and c["label"].startswith(results.names[c["cls"]])
    x1, y1, x2, y2 = c["box"]
    assert c["im"].ndim == 3 and c["im"].shape[0] <= (y2 - y1) * 1.02 + 11 and c["im"].shape[2] == 3
    files = list((tmp_path / "exp" / "crops").rglob("*.jpg"))
    assert len(files) == n  # same image and class: numbered, never overwritten
    assert {f.parent.name for f in files} == {results.names[int(k)] for p in results.pred for k in p[:, 5]}
    assert results.crop(save=False)[0]["label"] == c["label"]
    assert not (tmp_path / "exp2").exists()


def test_records_json_and_pandas(results):
    recs = results.records()
    assert [len(r) for r in recs] == [len(p) for p in results.pred]
    r0 = recs[0][0]
    assert list(r0) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert r0["name"] == results.names[r0["class"]]
    assert list(results.records("xywhn")[0][0])[:4] == ["xcenter", "ycenter", "width", "height"]
    with pytest.raises(ValueError, match="kind must be one of"):
        results.records("cxcy")
    data = json.loads(results.to_json())
    assert [d["file"] for d in data] == ["shapes1.jpg", "shapes2.jpg"] and data[0]["height"] == 360
    assert data[1]["detections"] == json.loads(json.dumps(recs[1]))
    pd = pytest.importorskip("pandas")
    p = results.pandas()
    assert isinstance(p.xyxy[0], pd.DataFrame) and list(p.xywhn[1].columns) == [
        "xcenter", "ycenter", "width", "height", "confidence", "class", "name"]
    np.testing.assert_allclose(p.xyxy[0][["xmin", "ymin", "xmax", "ymax"]].to_numpy(), results.xyxy[0][:, :4].numpy(),
                               rtol=1e-6)
    assert isinstance(results.xyxy[0], torch.Tensor)  # the original keeps its tensors


def test_pandas_missing_is_one_line(results, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"needs pandas \(pip install pandas\)") as e:
        results.pandas()
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------- other tasks and models


def test_detect_py_finds_the_same_boxes(ckpt, model, tmp_path):
    """Same weights, image, size and thresholds: the hub model and detect.py agree (detect.py rounds to pixels)."""
    import detect

    save_dir = detect.run(weights=[str(ckpt)], source=str(IMAGE), imgsz=[320], conf_thres=0.35, iou_thres=0.45,
                          save_txt=True, save_conf=True, nosave=True, project=str(tmp_path), name="exp")
    rows = np.loadtxt(save_dir / "labels" / "shapes1.txt", ndmin=2)  # cls x y w h conf, normalised
    hub = model(str(IMAGE), size=320, conf=0.35).xywhn[0].numpy()
    assert len(rows) == len(hub) > 0
    rows = rows[np.lexsort((rows[:, 1], -rows[:, 5]))]
    hub = hub[np.lexsort((hub[:, 0], -hub[:, 4]))]
    np.testing.assert_array_equal(rows[:, 0], hub[:, 5])
    np.testing.assert_allclose(rows[:, 5], hub[:, 4], atol=1e-5)
    np.testing.assert_allclose(rows[:, 1:5], hub[:, :4], atol=1.01 / 360)  # one rounded pixel


def test_detect_py_parity_on_a_trained_checkpoint(tmp_path):
    import detect

    w = need(FIXTURES / "shapes_n320.pt")
    save_dir = detect.run(weights=[str(w)], source=str(IMAGE2), imgsz=[320], save_txt=True, save_conf=True,
                          nosave=True, project=str(tmp_path), name="exp")
    rows = np.loadtxt(save_dir / "labels" / "shapes2.txt", ndmin=2)
    m = hub_load("custom", path=str(w))
    r = m(IMAGE2, size=320)
    assert r.names == {0: "rect", 1: "circle", 2: "triangle"}
    hub = r.xywhn[0].numpy()
    assert len(rows) == len(hub) >= 3
    np.testing.assert_allclose(np.sort(rows[:, 5]), np.sort(hub[:, 4]), atol=1e-5)
    np.testing.assert_allclose(rows[np.argsort(-rows[:, 5]), 1:5], hub[np.argsort(-hub[:, 4]), :4], atol=1.01 / 360)
    half = m.half()(IMAGE2, size=320).pred[0]  # fp16 weights and input, float32 results
    assert half.dtype == torch.float32 and half.shape == r.pred[0].shape
    full = r.pred[0]  # near-equal scores may swap places in fp16: compare in left-to-right order
    torch.testing.assert_close(half[half[:, 0].argsort(), :4], full[full[:, 0].argsort(), :4], atol=1.0, rtol=0)


def test_instance_segmentation_returns_masks(tmp_path):
    w = write_checkpoint(tmp_path / "seg.pt", cfg="yolov5n-seg.yaml", nc=3, sharp=True)
    m = hub_load("custom", path=str(w))
    r = m([IMAGE, IMAGE2], size=320, conf=0.26, max_det=20)
    assert m.task == "segment" and len(r.masks) == 2
    for p, masks in zip(r.pred, r.masks):
        assert masks.dtype == torch.bool and masks.shape == (len(p), 360, 480) and len(p) > 0
        e = 8  # cut at prototype resolution (1/4 of the 320 input, 1.5x smaller than the image): ~6 px of slack
        for box, mk in zip(p[:, :4].round().int().tolist(), masks):  # masks are cut to their boxes
            outside = mk.clone()
            outside[max(box[1] - e, 0):box[3] + e, max(box[0] - e, 0):box[2] + e] = False
            assert not outside.any()
    rec = r.records()[0][0]
    assert "segment" in rec and all(len(pt) == 2 for pt in rec["segment"])
    assert json.loads(r.to_json())[0]["detections"][0]["segment"] == rec["segment"]
    assert r.tolist()[1].masks[0].shape == r.masks[1].shape
    assert (r.render()[0] != r.ims[0]).any()


def test_instance_masks_on_a_trained_checkpoint():
    w = need(FIXTURES / "shapes_seg_n320.pt")
    r = hub_load("custom", path=str(w))(IMAGE2, size=320)
    areas = r.masks[0].sum((1, 2)).float()
    boxes = r.xywh[0]
    assert len(areas) >= 3 and (areas > 0.3 * boxes[:, 2] * boxes[:, 3]).all()  # real shapes fill their boxes


def test_classifier_returns_probabilities(tmp_path):
    from utils.tasks.classify.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop

    w = write_checkpoint(tmp_path / "cls.pt", nc=3, cls=True)
    m = hub_load("custom", path=str(w))
    r = m([IMAGE, IMAGE2], size=64)
    assert type(r).__name__ == "Classifications" and r.s == (2, 3, 64, 64)
    p = r.probs[0]
    assert p.shape == (3,) and abs(float(p.sum()) - 1) < 1e-5 and r.top5[0][0] == int(p.argmax())
    # the preprocessing classify/predict.py uses: centre crop, RGB, 0-1, ImageNet mean/std
    x = torch.from_numpy(center_crop(cv2.imread(str(IMAGE)), 64)[..., ::-1].copy()).permute(2, 0, 1)[None] / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(m.model(x), 1)[0], p, atol=1e-5, rtol=1e-4)
    assert str(r).splitlines()[0].startswith("image 1/2: 360x480 shape")
    assert json.loads(r.to_json())[1]["classes"][0]["name"] == r.names[r.top5[1][0]]
    assert list(r.pandas()[0].columns) == ["class", "name", "confidence"]
    assert (r.render()[0] != r.ims[0]).any()


class StandInDetSemantic(torch.nn.Module):
    """The detection + semantic model's eval contract: (det_pred, det_raw, seg_logits (B, 2, H/f, W/f)).

    Class 0 scores the red channel, class 1 the green one, so the true class map of an image is known."""

    task = "semantic"

    def __init__(self, factor: int = 1):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.names, self.stride, self.yaml, self.factor = {0: "thing"}, torch.tensor([8.0, 16.0, 32.0]), {}, factor
        self.seg_names = {0: "red", 1: "green"}

    def forward(self, x, augment=False, profile=False):
        logits = 10 * x[:, :2] * self.w
        if self.factor > 1:
            logits = torch.nn.functional.avg_pool2d(logits, self.factor)
        return torch.zeros(x.shape[0], 0, 6), [], logits


@pytest.mark.parametrize("factor", [1, 4])
def test_semantic_class_map_comes_back_at_image_size(factor):
    from utils.hub.autoshape import AutoShape

    a = np.zeros((200, 300, 3), np.uint8)
    a[:100, :, 0] = 255  # top half red, bottom half green
    a[100:, :, 1] = 255
    b = np.ascontiguousarray(a.transpose(1, 0, 2))  # 300x200, split vertically: another padding in the batch
    r = AutoShape(StandInDetSemantic(factor))([a, b], size=320)
    assert r.s == (2, 3, 320, 320) and r.semantic_names == {0: "red", 1: "green"}
    sem_a, sem_b = r.semantic[0].numpy(), r.semantic[1].numpy()
    assert sem_a.shape == (200, 300) and sem_b.shape == (300, 200)
    band = 2 + factor  # the boundary is blurred by resizing, nowhere else
    assert (sem_a[:100 - band] == 0).all() and (sem_a[100 + band:] == 1).all()
    assert (sem_b[:, :100 - band] == 0).all() and (sem_b[:, 100 + band:] == 1).all()
    assert len(r.pred[0]) == 0 and (r.render()[0] != a).any()
    assert r.tolist()[1].semantic[0].shape == (300, 200)


def test_a_real_detection_plus_semantic_checkpoint_gives_class_maps(tmp_path):
    from models.build import build_model
    from utils.checkpoint import make_checkpoint, save_checkpoint
    from utils.hub.create import custom
    from utils.log import quiet

    torch.manual_seed(0)
    with quiet():
        model = build_model("yolov5n-city.yaml", nc=4, nc_seg=3)
    model.seg_names = {0: "road", 1: "car", 2: "sky"}
    w = save_checkpoint(make_checkpoint(model), tmp_path / "city.pt")
    im = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    r = custom(w, _verbose=False)(im, size=128)
    assert r.semantic[0].shape == (120, 200) and int(r.semantic[0].max()) < 3
    assert r.semantic_names == {0: "road", 1: "car", 2: "sky"} and r.render()[0].shape == im.shape
