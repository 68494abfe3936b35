"""TorchScript export: a trace of the export-form model, with the metadata as the extra file config.txt."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from utils.export import metadata
from utils.log import LOGGER


def export_torchscript(model: torch.nn.Module, im: torch.Tensor, file: Path, meta: dict, optimize: bool = False,
                       prefix: str = "TorchScript:") -> Path:
    """Trace `model` on `im` and save file.torchscript; optimize=True saves for the mobile lite interpreter."""
    f = Path(file).with_suffix(".torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the trace checker re-runs the model and trips over the grid cache; check_export compares outputs instead
        ts = torch.jit.trace(model, im, strict=False, check_trace=False)
    extra = {metadata.TS_EXTRA: metadata.to_json(meta)}
    if not optimize:
        ts.save(str(f), _extra_files=extra)
        return f
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        ts = optimize_for_mobile(ts)
    except RuntimeError as e:  # builds without XNNPACK (e.g. some CPU wheels) cannot run the mobile passes
        LOGGER.warning(f"{prefix} WARNING ⚠️ --optimize: mobile passes unavailable in this PyTorch build "
                       f"({str(e).splitlines()[-1][:80].strip()}); saving for the lite interpreter without them")
    ts._save_for_lite_interpreter(str(f), _extra_files=extra)
    return f
