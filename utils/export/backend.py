"""Running exported models as if they were the PyTorch model: one loader for .pt, .torchscript, .onnx and OpenVINO.

load_backend() is a drop-in for utils.checkpoint.load_model: a .pt gives the PyTorch model itself; an export gives an
ExportedModel, an nn.Module that is called like the eval-mode PyTorch model (model(im, augment=..., visualize=...)),
returns what that model returns, and has names, stride, task, parameters(), eval(), to() and half().
The parts of the eval output an export does not contain (the raw per-level maps detection heads return for the
validation loss) come back as empty lists, so code that splits or concatenates outputs keeps working.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.ensemble import Ensemble
from utils.checkpoint import CheckpointError, checkpoint_kind, load_model
from utils.export import metadata
from utils.log import LOGGER
from utils.tasks import registry


class BackendError(CheckpointError):
    """Exported weights that cannot be run here, or not as asked (the CLI prints it as one line)."""


def backend_kind(path: str | Path) -> str:
    """'pytorch', 'torchscript', 'onnx', 'openvino', 'tflite', 'ncnn' or 'coreml' from the file name (OpenVINO, ncnn
    and Core ML .mlpackage models are folders)."""
    p = Path(path)
    if p.suffix == ".torchscript":
        return "torchscript"
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix == ".xml" or p.name.endswith("_openvino_model"):
        return "openvino"
    if p.suffix == ".tflite":
        return "tflite"
    if p.name.endswith("_ncnn_model") or p.name.endswith(".ncnn.param"):
        return "ncnn"
    if p.name.endswith("_paddle_model") or p.suffix == ".pdiparams":
        return "paddle"
    if p.suffix in (".mlpackage", ".mlmodel"):
        return "coreml"

    return "pytorch"


def load_backend(weights: str | Path | list | tuple, device: str | torch.device = "cpu", fuse: bool = True,
                 task: str | None = None) -> nn.Module:
    """load_model for any supported format; `task` ('detect', 'segment', ...) rejects a model of another task.
    Several weights make an Ensemble of detection models (their boxes merged before one NMS, as upstream)."""
    if isinstance(weights, (list, tuple)):
        if len(weights) > 1:
            return load_ensemble(weights, device, fuse, task)
        weights = weights[0]
    path = Path(weights)
    kind = backend_kind(path)
    if kind == "pytorch":
        model = load_model(path, device=device, fuse=fuse)
        got = metadata.model_task(model)
    else:
        model = load_exported(path, device)
        got = model.task
    if task and got != task:
        raise BackendError(f"{path} is a {got} model; this script runs {task} models")
    return model


def load_ensemble(weights: list | tuple, device: str | torch.device = "cpu", fuse: bool = True,
                  task: str | None = None) -> Ensemble:
    """An Ensemble of the detection models in `weights` (any supported format); one clear error for other kinds
    or for members that disagree on the classes."""
    models = [load_backend(w, device, fuse, task) for w in weights]
    for w, m in zip(weights, models):
        kind = metadata.model_task(m)
        if kind != "detect":
            raise BackendError(f"{w} is a {kind} model; ensembles (several --weights) combine detection models")
        if m.nc != models[0].nc:
            raise BackendError(f"{w} has {m.nc} classes, {weights[0]} {models[0].nc}: an ensemble needs models "
                               f"of the same classes")
    LOGGER.info(f"Ensemble created with {list(map(str, weights))}")
    return Ensemble(models)


def weights_kind(weights: str | Path) -> str | None:
    """The task of a local weights file of any format ('detect', 'semantic', ...), read without building a runtime;
    None when it cannot be read here (a name still to download, a broken file): the loaders then say what is wrong."""
    path = Path(str(weights))
    kind = backend_kind(path)
    if kind == "pytorch":
        return checkpoint_kind(path)
    try:
        if kind == "onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            return metadata.from_props(props)["task"] if "task" in props else None
        if kind == "tflite":
            from utils.export.tflite import read_metadata

            return read_metadata(path)["task"]
        if kind in ("ncnn", "paddle"):
            return metadata.read_folder_meta(path if path.is_dir() else path.parent)["task"]
        if kind == "coreml":
            from utils.export.coreml import read_metadata as coreml_metadata

            return coreml_metadata(path)["task"]
        if kind == "torchscript":
            extra = {metadata.TS_EXTRA: ""}
            torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
            return metadata.from_json(extra[metadata.TS_EXTRA])["task"] if extra[metadata.TS_EXTRA] else None
        side = (sorted(path.glob("*.xml"))[0] if path.is_dir() else path).with_suffix(".yaml")
        import yaml

        return metadata.normalize(yaml.safe_load(side.read_text()))["task"]
    except Exception:  # unreadable here for any reason: the loader that runs next reports it properly
        return None


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> ExportedModel:
    """An ExportedModel for a .torchscript, .onnx or OpenVINO file, on `device`."""
    path, device = Path(path), torch.device(device)
    kind = backend_kind(path)
    if kind == "ncnn" and path.is_dir():
        path = path / "model.ncnn.param"
    if kind == "paddle" and path.is_dir():
        path = path / "model.pdiparams"
    if kind == "openvino" and path.is_dir():
        found = sorted(path.glob("*.xml"))
        if not found:
            raise FileNotFoundError(f"{path}: no OpenVINO .xml model in this folder")
        path = found[0]
    if not (path.exists() if kind == "coreml" else path.is_file()):  # an .mlpackage is a folder
        raise FileNotFoundError(f"{path} not found")
    loader = {"torchscript": _torchscript, "onnx": _onnx, "openvino": _openvino, "tflite": _tflite,
              "ncnn": _ncnn, "paddle": _paddle, "coreml": _coreml}.get(kind)
    if loader is None:
        raise BackendError(f"{path}: not an exported model (.torchscript, .onnx or OpenVINO .xml)")
    model = loader(path, device)
    shape = "dynamic batch and size" if model.dynamic else \
        f"input {'any' if model.batch is None else model.batch}x3x{model.imgsz[0]}x{model.imgsz[1]}"
    LOGGER.info(f"Loaded {path} ({kind}, {model.task}, {model.nc} classes, {shape})")
    return model


def input_memory_format(model: nn.Module) -> torch.memory_format:
    """The layout a model's input should come in: channels_last for a .pt (load_model puts its weights in that
    layout), contiguous for an export (its runtime takes a contiguous array and would copy anything else)."""
    return torch.contiguous_format if isinstance(model, ExportedModel) else torch.channels_last


class ExportedModel(nn.Module):
    """An exported model behind the calling conventions of the eval-mode PyTorch model it came from."""

    def __init__(self, file: Path, fmt: str, meta: dict, run: Callable[[torch.Tensor], list[torch.Tensor]],
                 dynamic: bool, imgsz: tuple[int, int], batch: int | None, module: nn.Module | None = None):
        super().__init__()
        self.file, self.format, self.meta, self._run = file, fmt, meta, run
        self.task = meta["task"]
        self.names = dict(meta["names"])
        self.nc = len(self.names)
        if meta.get("seg_names"):  # a detection + semantic model's class-map classes
            self.seg_names = dict(meta["seg_names"])
            self.nc_seg = len(self.seg_names)
        self.stride = torch.tensor(meta["strides"], dtype=torch.float32)
        self.dynamic = dynamic  # takes any batch and image size (a multiple of the stride)
        self.imgsz = tuple(imgsz)  # the export size; the only one a static export takes
        self.batch = batch  # the only batch size it takes; None = any
        self.module = module  # a TorchScript module is a child, so .to() and .half() reach its weights
        # Callers find the device as next(model.parameters()).device: an empty tensor that moves with .to() says it.
        self.device_tracker = nn.Parameter(torch.empty(0), requires_grad=False)
        self._warned_visualize = False

    @property
    def fixed_imgsz(self) -> tuple[int, int] | None:
        """None when any input size works, else the (h, w) the export takes."""
        return None if self.dynamic else self.imgsz

    def outputs(self, im: torch.Tensor) -> list[torch.Tensor]:
        """The export's outputs (output0, output1, ...) for a BCHW batch, in the batch's dtype and device."""
        if not self.dynamic and tuple(im.shape[2:]) != self.imgsz:
            h, w = self.imgsz
            raise BackendError(f"{self.file} is a static export for {h}x{w} input, got {im.shape[2]}x{im.shape[3]}: "
                               f"run it at --img {h}" + (f" {w}" if w != h else "") + " or export with --dynamic")
        n = im.shape[0]
        if self.batch is None or n == self.batch:
            return self._convert(self._run(im), im)
        # a fixed-batch export runs the batch in slices of its size, the last one padded with zeros
        parts = []
        for x in im.split(self.batch):
            pad = self.batch - x.shape[0]
            y = self._convert(self._run(torch.cat((x, x.new_zeros((pad, *x.shape[1:]))), 0) if pad else x), im)
            parts.append([t[: x.shape[0]] for t in y])
        return [torch.cat(ts, 0) for ts in zip(*parts)]

    @staticmethod
    def _convert(ys: list, im: torch.Tensor) -> list[torch.Tensor]:
        """Runtime outputs (tensors or numpy arrays) as tensors on the input's device, floats in its dtype."""
        out = [y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y)) for y in ys]
        return [y.to(im.device, im.dtype if y.is_floating_point() else y.dtype) for y in out]

    def forward(self, im: torch.Tensor, augment: bool = False, visualize=False, **_) -> torch.Tensor | tuple:
        """What the eval-mode PyTorch model returns: a tensor, or a tuple whose first item is the predictions."""
        if augment:
            raise BackendError(f"{self.file}: --augment (test-time augmentation) needs the .pt weights; an exported "
                               f"model runs only the graph it was exported with")
        if visualize and not self._warned_visualize:
            LOGGER.warning(f"WARNING ⚠️ --visualize needs the .pt weights; {self.file.name} has no feature maps to show")
            self._warned_visualize = True
        ys = self.outputs(im)
        layout = self.meta.get("eval_layout")
        if layout is None:  # an upstream file, or one of ours from before eval_layout: the left-out maps come last
            layout = [*range(len(ys)), *[None] * int(self.meta.get("eval_tail", 0))]
        if self.meta.get("tensor_output") and layout == [0] and len(ys) == 1:
            return ys[0]
        return tuple(ys[i] if i is not None else [] for i in layout)  # [] stands in for maps an export leaves out

    def __deepcopy__(self, memo: dict) -> ExportedModel:
        """A copy that shares the runtime session (sessions cannot be copied); a TorchScript module is copied."""
        module = copy.deepcopy(self.module, memo) if self.module is not None else None
        run = _module_runner(module) if module is not None else self._run
        new = ExportedModel(self.file, self.format, self.meta, run, self.dynamic, self.imgsz, self.batch, module)
        new.device_tracker = nn.Parameter(self.device_tracker.detach().clone(), requires_grad=False)
        return new


def _as_list(y) -> list:
    return list(y) if isinstance(y, (list, tuple)) else [y]


def _module_runner(module: nn.Module) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    def run(x: torch.Tensor) -> list[torch.Tensor]:
        p = next(module.parameters(), None)
        with torch.no_grad():
            return _as_list(module(x.to(p.dtype if p is not None else torch.float32)))

    return run


def _torchscript(path: Path, device: torch.device) -> ExportedModel:
    extra = {metadata.TS_EXTRA: ""}
    try:
        module = torch.jit.load(str(path), _extra_files=extra, map_location=device)
    except RuntimeError as e:
        raise BackendError(f"{path}: not a TorchScript file ({str(e).splitlines()[0][:200]})") from None
    if not extra[metadata.TS_EXTRA]:
        raise BackendError(f"{path}: no {metadata.TS_EXTRA} metadata inside (export it with export.py)")
    meta = metadata.from_json(extra[metadata.TS_EXTRA])
    module.eval()
    # a trace keeps the batch dimension symbolic; without --dynamic its grids fix the image size
    return ExportedModel(path, "torchscript", meta, _module_runner(module), bool(meta["dynamic"]),
                         tuple(meta["imgsz"]), None, module).to(device)


def _onnx(path: Path, device: torch.device) -> ExportedModel:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError(f"{path}: running ONNX models needs onnxruntime (pip install onnxruntime)") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # ONNX Runtime's worker threads spin after each run waiting for the next, and between runs the pre- and
    # post-processing need those cores (detect.py's pre-process went from 1.5 to 12-22 ms per image). Spinning off
    # altogether slows the run itself (yolov5s 640: 66-69 against 60-64 ms), so the workers spin within a run and
    # stop at its end.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise BackendError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    props = session.get_modelmeta().custom_metadata_map
    inp, outs = session.get_inputs()[0], [o.name for o in session.get_outputs()]
    if "task" not in props:  # an upstream export: its number of outputs tells the task
        props = {**props, "task": json.dumps(registry.kind_from_upstream_outputs(len(outs)))}
    meta = metadata.from_props(props)
    dtype = np.float16 if "float16" in inp.type else np.float32
    b, _, h, w = inp.shape
    dynamic = not all(isinstance(d, int) for d in (h, w))

    def run(x: torch.Tensor) -> list[np.ndarray]:
        return session.run(outs, {inp.name: x.detach().cpu().contiguous().numpy().astype(dtype, copy=False)})

    imgsz = (h, w) if not dynamic else tuple(meta["imgsz"])
    return ExportedModel(path, "onnx", meta, run, dynamic, imgsz, b if isinstance(b, int) else None).to(device)


def _openvino(path: Path, device: torch.device) -> ExportedModel:
    try:
        import openvino as ov
    except ImportError:
        raise BackendError(f"{path}: running OpenVINO models needs openvino (pip install openvino)") from None
    if device.type != "cpu":
        LOGGER.warning(f"WARNING ⚠️ {path.name}: OpenVINO runs on the CPU here; outputs are moved to {device}")
    side = path.with_suffix(".yaml")
    if not side.is_file():
        raise BackendError(f"{path}: its metadata {side.name} is missing beside it (export it with export.py)")
    import yaml

    meta = metadata.normalize(yaml.safe_load(side.read_text()))
    # OpenVINO runs CPUs with bf16 instructions in bf16 unless told otherwise (about 1e-2 off the fp32 model); f32
    # keeps an export within the 1e-3 it was checked to, and val.py's figures the .pt's.
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ps = compiled.input(0).get_partial_shape()
    dynamic = ps.is_dynamic
    dtype = np.float16 if "16" in str(compiled.input(0).get_element_type()) else np.float32

    def run(x: torch.Tensor) -> list[np.ndarray]:
        res = compiled(x.detach().cpu().contiguous().numpy().astype(dtype, copy=False))
        return [res[o] for o in compiled.outputs]

    batch = None if dynamic else ps[0].get_length()
    imgsz = tuple(meta["imgsz"]) if dynamic else (ps[2].get_length(), ps[3].get_length())
    return ExportedModel(path, "openvino", meta, run, dynamic, imgsz, batch).to(device)


def _from_runner(path: Path, device: torch.device, fmt: str, load_runner: Callable, shown: Path | None = None
                 ) -> ExportedModel:
    """An ExportedModel around a format module's load_runner (static shape); its errors become BackendErrors."""
    try:
        meta, run, imgsz, batch = load_runner(path)
    except CheckpointError as e:
        raise BackendError(str(e)) from None
    return ExportedModel(shown or path, fmt, meta, run, False, imgsz, batch).to(device)


def _tflite(path: Path, device: torch.device) -> ExportedModel:
    from utils.export.tflite import load_runner

    return _from_runner(path, device, "tflite", load_runner)


def _ncnn(path: Path, device: torch.device) -> ExportedModel:
    from utils.export.ncnn import load_runner

    return _from_runner(path, device, "ncnn", load_runner, shown=path.parent)  # the model folder


def _paddle(path: Path, device: torch.device) -> ExportedModel:
    from utils.export.paddle import load_runner

    return _from_runner(path, device, "paddle", load_runner, shown=path.parent)  # the model folder


def _coreml(path: Path, device: torch.device) -> ExportedModel:
    from utils.export.coreml import load_runner

    return _from_runner(path, device, "coreml", load_runner)  # off macOS: one line saying it runs only there


def val_imgsz(model: nn.Module, imgsz: int) -> tuple[int, bool]:
    """(image size, square batches) for val: a static export runs only at its export size, letterboxed square."""
    fixed = getattr(model, "fixed_imgsz", None)
    if fixed is None:
        return imgsz, False
    h, w = fixed
    if h != w:
        raise BackendError(f"{model.file} is a static export for {h}x{w} input: validation needs a square or "
                           f"--dynamic export")
    if h != imgsz:
        LOGGER.warning(f"WARNING ⚠️ {model.file.name} is a static export for {h}x{w} input: validating at --img {h}")
    LOGGER.info(f"{model.file.name}: static input shape, square letterboxed batches at {h}x{w} "
                f"(export with --dynamic to keep rectangular batches)")
    return h, True


def predict_imgsz(model: nn.Module, imgsz: list[int]) -> tuple[list[int], bool]:
    """(h, w) to letterbox to, and whether padding may stop at a stride multiple (False: exactly h x w)."""
    fixed = getattr(model, "fixed_imgsz", None)
    if fixed is None:
        return imgsz, True
    if list(fixed) != list(imgsz):
        LOGGER.warning(f"WARNING ⚠️ {model.file.name} is a static export for {fixed[0]}x{fixed[1]} input: "
                       f"predicting at that size")
    return list(fixed), False
