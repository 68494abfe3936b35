"""Read upstream YOLOv5 `.pt` files (pickled nn.Modules) into plain data without running code from the file.

Upstream checkpoints are zip archives written by torch.save whose `data.pkl` pickles whole model objects
(models.yolo.DetectionModel, models.common.Conv, torch.nn.Conv2d, ...). Unpickling them normally would import and run
whatever those names point to. Here a restricted unpickler resolves only a short allow-list of data-building callables
(tensor rebuilding, OrderedDict, numpy arrays, paths); every other class becomes an inert `Stub` that only records its
name and the state the pickle hands it. Module stubs are then walked like nn.Module.state_dict() would walk them.
"""

from __future__ import annotations

import pickle
import pickletools
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from utils.errors import UserError


class UpstreamPickleError(UserError, ValueError):
    """A file that cannot be read as a torch zip pickle, or that holds something the safe reader refuses."""


# torch.save names storages by their legacy typed class; the dtype is all we need from them.
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


class _StorageType:
    """Marker standing in for torch.<X>Storage inside persistent ids."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class Stub:
    """Inert stand-in for a class the safe reader will not import; keeps the name and the pickled state."""

    stub_module = ""
    stub_qualname = ""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.stub_args = args
        obj.stub_kwargs = kwargs
        obj.stub_state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass  # arguments were captured in __new__; nothing else may happen here

    def __setstate__(self, state):
        self.stub_state = state

    @classmethod
    def full_name(cls) -> str:
        """'module.qualname' of the class this stub replaces."""
        return f"{cls.stub_module}.{cls.stub_qualname}"

    def __repr__(self) -> str:
        return f"<stub {self.full_name()}>"


def stub_name(obj: Any) -> str:
    """'module.qualname' of a stub instance or class, '' for anything else."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.full_name() if issubclass(cls, Stub) else ""


def _np_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _np_reconstruct(subtype, shape, dtype):
    # numpy always pickles an empty placeholder that BUILD then fills; any other shape would be an allocation bomb
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct is only allowed for an empty numpy.ndarray")
    return _np_multiarray()._reconstruct(np.ndarray, shape, dtype)


def _np_scalar(dtype, *args):
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("numpy scalar needs a dtype")
    return _np_multiarray().scalar(dtype, *args)


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles of bytes (e.g. numpy array buffers) arrive as encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("only str -> bytes encoding is allowed")
    return text.encode(encoding)


def _safe_bytes(data=b"", *args):
    # bytes(n) / bytearray(n) would allocate n bytes; only copying data already in the pickle is allowed
    if isinstance(data, int):
        raise pickle.UnpicklingError("bytes from an integer size is not allowed")
    return bytes(data, *args) if isinstance(data, str) else bytes(data)


def _safe_bytearray(data=b"", *args):
    return bytearray(_safe_bytes(data, *args))


def _posix_path(*parts) -> str:
    return str(PurePosixPath(*parts))


def _windows_path(*parts) -> str:
    return str(PureWindowsPath(*parts))


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor rebuild without a storage")
    # storage is the flat 1-D tensor from persistent_load; as_strided bounds-checks against it.
    return storage.as_strided(tuple(size), tuple(stride), int(storage_offset))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype, *_ignored):
    t = _rebuild_tensor(storage, storage_offset, size, stride)
    return t if t.dtype == dtype else t.view(dtype)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *_ignored):
    return data  # plain tensors are what the state dict wants


def _rebuild_parameter_with_state(data, requires_grad=False, hooks=None, state=None):
    return data


# (module, name) -> safe callable/value. '__builtin__' and 'copy_reg' are protocol-2 spellings.
_SAFE = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("_codecs", "encode"): _codecs_encode,
    ("pathlib", "Path"): _posix_path,
    ("pathlib", "PosixPath"): _posix_path,
    ("pathlib", "PurePosixPath"): _posix_path,
    ("pathlib", "WindowsPath"): _windows_path,
    ("pathlib", "PureWindowsPath"): _windows_path,
    ("pathlib._local", "PosixPath"): _posix_path,
    ("pathlib._local", "WindowsPath"): _windows_path,
}
for _b in ("builtins", "__builtin__"):
    # no list/tuple/range/str: nothing that could expand a small pickle into a huge object or call user methods
    for _t in (set, frozenset, slice, int, float, complex, bool):
        _SAFE[(_b, _t.__name__)] = _t
    _SAFE[(_b, "bytes")] = _safe_bytes
    _SAFE[(_b, "bytearray")] = _safe_bytearray
for _name in [n for n in dir(np) if n in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool_")]:
    _SAFE[("numpy", _name)] = getattr(np, _name)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds data only: allow-listed callables, storages from the zip, and stubs for the rest."""

    def __init__(self, file, zf: zipfile.ZipFile | None = None, prefix: str = "", source: str = "<pickle>"):
        super().__init__(file)
        self._zf, self._prefix, self._source = zf, prefix, source
        self._stub_classes: dict[tuple[str, str], type] = {}
        self._storages: dict[str, torch.Tensor] = {}
        self.stub_names: set[str] = set()

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if module in ("builtins", "__builtin__") and name == "getattr":
            return _safe_getattr
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return self._stub_class(module, name)

    def _stub_class(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self._stub_classes:
            self._stub_classes[key] = type(name.rsplit(".", 1)[-1], (Stub,),
                                           {"stub_module": module, "stub_qualname": name})
            self.stub_names.add(f"{module}.{name}")
        return self._stub_classes[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or self._zf is None:
            raise pickle.UnpicklingError("storage reference outside a torch zip archive")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, stype.dtype, int(numel))
        flat = self._storages[key]
        return flat if flat.dtype == stype.dtype else flat.view(stype.dtype)

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        record = f"{self._prefix}data/{key}"
        try:
            info = self._zf.getinfo(record)
        except KeyError as e:
            raise pickle.UnpicklingError(f"missing tensor record {record}") from e
        nbytes = numel * torch.empty(0, dtype=dtype).element_size()
        if info.file_size < nbytes:  # checked before reading so a lying header cannot force a huge allocation
            raise pickle.UnpicklingError(f"tensor record {record} holds {info.file_size} bytes, needs {nbytes}")
        if nbytes == 0:
            return torch.empty(0, dtype=dtype)
        buf = bytearray(self._zf.read(record)[:nbytes])
        return torch.frombuffer(buf, dtype=dtype)


def _safe_getattr(obj, name):
    # Upstream's Segment head pickles `getattr(Detect, 'forward')`; answer with a stub, never a real attribute.
    if isinstance(obj, type) and issubclass(obj, Stub) and isinstance(name, str):
        ref = type(name, (Stub,), {"stub_module": obj.stub_module, "stub_qualname": f"{obj.stub_qualname}.{name}"})
        return ref()
    raise pickle.UnpicklingError("getattr is only allowed on stubbed classes")


def _safe_reconstructor(cls, base, state=None):
    if isinstance(cls, type) and issubclass(cls, Stub):
        obj = cls.__new__(cls)
        obj.stub_args = (state,) if state is not None else ()
        return obj
    raise pickle.UnpicklingError("copyreg._reconstructor is only allowed for stubbed classes")


def _find_data_pkl(zf: zipfile.ZipFile, source: str) -> str:
    names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    if not names:
        raise UpstreamPickleError(f"{source}: zip file without data.pkl, not a torch.save checkpoint")
    return min(names, key=len)


def _check_byteorder(zf: zipfile.ZipFile, prefix: str, source: str) -> None:
    try:
        order = zf.read(f"{prefix}byteorder").decode().strip()
    except KeyError:
        order = "little"  # files older than the byteorder record were little-endian
    if order != "little":
        raise UpstreamPickleError(f"{source}: byte order '{order}' is not supported (only little-endian)")


def pickle_globals(path: str | Path) -> set[str]:
    """'module name' strings the checkpoint's pickle references, found by scanning opcodes (nothing is executed)."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        data = zf.read(_find_data_pkl(zf, str(path)))
    found, strings = set(), []
    for op, arg, _pos in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg)
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]} {strings[-1]}")
        if isinstance(arg, str):
            strings.append(arg)
    return found


def read_torch_zip(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint safely: tensors come back as tensors, unknown classes as Stub objects."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UpstreamPickleError(f"{path}: not a torch zip checkpoint (legacy pre-1.6 torch files are not supported)")
    with zipfile.ZipFile(path) as zf:
        pkl = _find_data_pkl(zf, str(path))
        prefix = pkl[: -len("data.pkl")]
        _check_byteorder(zf, prefix, str(path))
        with zf.open(pkl) as f:
            try:
                return SafeUnpickler(f, zf, prefix, str(path)).load()
            except (pickle.UnpicklingError, EOFError, TypeError, ValueError, RuntimeError, AttributeError) as e:
                raise UpstreamPickleError(f"{path}: unreadable or unsafe pickle content ({e})") from e


def module_state(obj: Any) -> dict:
    """The __dict__ a stubbed nn.Module was pickled with ({} when obj is not such a stub)."""
    state = getattr(obj, "stub_state", None) if isinstance(obj, Stub) else None
    if isinstance(state, tuple) and state and isinstance(state[0], dict):
        state = state[0]  # (dict, slotstate) form
    return state if isinstance(state, dict) else {}


def is_module_stub(obj: Any) -> bool:
    """True for a stub carrying nn.Module state (_parameters/_modules)."""
    s = module_state(obj)
    return "_parameters" in s and "_modules" in s


def stub_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """nn.Module.state_dict() equivalent for a module stub: parameters, persistent buffers, then children."""
    out: dict[str, torch.Tensor] = {}
    s = module_state(module)
    non_persistent = set(s.get("_non_persistent_buffers_set") or ())
    for name, t in (s.get("_parameters") or {}).items():
        if isinstance(t, torch.Tensor):
            out[prefix + name] = t
    for name, t in (s.get("_buffers") or {}).items():
        if isinstance(t, torch.Tensor) and name not in non_persistent:
            out[prefix + name] = t
    for name, child in (s.get("_modules") or {}).items():
        if child is not None:
            out.update(stub_state_dict(child, f"{prefix}{name}."))
    return out


def to_plain(obj: Any) -> Any:
    """Recursively turn numpy values, sets and stubs into plain Python (tensors are kept)."""
    if isinstance(obj, np.generic):  # before the float check: np.float64 subclasses float
        return obj.item()
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Stub):
        return f"<{stub_name(obj)}>"
    return str(obj)


_TASKS = {"DetectionModel": "detect", "Model": "detect", "SegmentationModel": "segment",
          "ClassificationModel": "classify"}


def _names_dict(names: Any, nc: int | None) -> dict[int, str]:
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return {i: str(v) for i, v in enumerate(names)}
    return {i: f"class{i}" for i in range(nc or 0)}


def summarize_model(model: Any) -> dict:
    """Plain description of a stubbed YOLOv5 model: class, task, state_dict, yaml, names, nc, stride, hyp."""
    if not is_module_stub(model):
        raise UpstreamPickleError(f"expected a pickled nn.Module, found {type(model).__name__}")
    s = module_state(model)
    cls = stub_name(model)
    stride = s.get("stride")
    stride = [float(v) for v in stride.flatten().tolist()] if isinstance(stride, torch.Tensor) else to_plain(stride)
    nc = s.get("nc")
    yaml = s.get("yaml")
    if nc is None and isinstance(yaml, dict):
        nc = yaml.get("nc")
    if not isinstance(yaml, dict) and cls.rsplit(".", 1)[-1] == "ClassificationModel":
        yaml = classify_yaml_from_stub(model, nc)  # upstream pickles no yaml for classifiers: rebuilt from the layers
    return {
        "class": cls,
        "task": _TASKS.get(cls.rsplit(".", 1)[-1], "detect"),
        "state_dict": stub_state_dict(model),
        "yaml": to_plain(yaml) if isinstance(yaml, dict) else None,
        "yaml_file": to_plain(s.get("yaml_file")),
        "names": _names_dict(to_plain(s.get("names")), nc),
        "nc": int(nc) if nc is not None else None,
        "stride": stride,
        "hyp": to_plain(s.get("hyp")) if isinstance(s.get("hyp"), dict) else None,
        "module": model,  # the stub tree, for callers that need layer attributes (e.g. to rebuild a yaml)
    }


def load_upstream(path: str | Path) -> dict:
    """Read an upstream YOLOv5 checkpoint: top-level keys plain, 'model'/'ema' as summarize_model() dicts or None."""
    raw = read_torch_zip(path)
    if not isinstance(raw, dict):
        raise UpstreamPickleError(f"{path}: expected a checkpoint dict, found {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        if k in ("model", "ema"):
            out[k] = summarize_model(v) if v is not None and is_module_stub(v) else None
        else:
            out[k] = to_plain(v)
    if out.get("model") is None and out.get("ema") is None:
        raise UpstreamPickleError(f"{path}: no pickled model under 'model' or 'ema', not a YOLOv5 checkpoint")
    return out


def _child(obj: Any, name: str) -> Any:
    return (module_state(obj).get("_modules") or {}).get(name)


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    return module_state(obj).get(name, default)


def _conv_args(conv_block: Any) -> list:
    conv = _child(conv_block, "conv")
    k, s, p = _attr(conv, "kernel_size")[0], _attr(conv, "stride")[0], _attr(conv, "padding")[0]
    args = [_attr(conv, "out_channels"), k, s, p]
    g, d = _attr(conv, "groups", 1), _attr(conv, "dilation", (1,))[0]
    if g != 1 or d != 1:
        args += [g, d]
    return args


def classify_yaml_from_stub(model: Any, nc: int | None) -> dict:
    """Rebuild a model YAML for an upstream ClassificationModel (which pickles no yaml) from its layer shapes."""
    seq = _child(model, "model")
    layers = list((module_state(seq).get("_modules") or {}).values())
    if not layers:
        raise UpstreamPickleError("classification model without layers")
    first_conv = _child(layers[0], "conv")
    backbone, head = [], []
    for layer in layers:
        kind = stub_name(layer).rsplit(".", 1)[-1]
        f = _attr(layer, "f", -1)
        if kind == "Conv":
            backbone.append([f, 1, "Conv", _conv_args(layer)])
        elif kind == "C3":
            bottlenecks = list((module_state(_child(layer, "m")).get("_modules") or {}).values())
            shortcut = bool(_attr(bottlenecks[0], "add", True)) if bottlenecks else True
            c2 = _attr(_child(_child(layer, "cv3"), "conv"), "out_channels")
            backbone.append([f, len(bottlenecks), "C3", [c2, shortcut]])
        elif kind == "SPPF":
            c2 = _attr(_child(_child(layer, "cv2"), "conv"), "out_channels")
            backbone.append([f, 1, "SPPF", [c2, _attr(_child(layer, "m"), "kernel_size")]])
        elif kind == "Classify":
            out = _attr(_child(layer, "linear"), "out_features")
            head.append([f, 1, "Classify", [int(nc if nc is not None else out)]])
        else:
            raise UpstreamPickleError(f"cannot rebuild a classification model containing {kind} layers")
    return {"nc": int(nc if nc is not None else head[-1][3][0]), "depth_multiple": 1.0, "width_multiple": 1.0,
            "ch": _attr(first_conv, "in_channels", 3), "backbone": backbone, "head": head}
