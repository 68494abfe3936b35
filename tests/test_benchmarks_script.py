"""benchmarks.py (v7.0's script): every format of the table gets a row; --test only exports; --pt-only validates."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import write_checkpoint

from utils.export import export_formats

ROOT = Path(__file__).resolve().parents[1]


def _script():
    """The repository-root benchmarks.py, loaded from its path (`import benchmarks` is the benchmarks/ package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_script", ROOT / "benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_mode_exports_every_available_format_and_reports_each(tmp_path, tiny_data, log):
    benchmarks = _script()

    w = write_checkpoint(tmp_path / "det.pt", nc=4)
    rows = benchmarks.run(weights=str(w), data=tiny_data, imgsz=64, test=True)
    table = export_formats()
    assert [r["format"] for r in rows] == [f["format"] for f in table]
    for r, f in zip(rows, table):
        if not f["available"]:
            assert r["check"] == f"not installed ({f['package']})" and r["size"] is None
            continue
        assert r["size"] > 0 and r["figure"] is None, r  # --test: exported and checked, not validated
        assert r["check"] == "-" if f["argument"] == "-" else r["check"].startswith("passed"), r
    assert "Benchmarks complete: det.pt (detect) at --img 64" in log.text


def test_pt_only_validates_and_hard_fail_stops(tmp_path, tiny_data, log, monkeypatch):
    benchmarks = _script()

    w = write_checkpoint(Path(tmp_path) / "det.pt", nc=4)
    (row,) = benchmarks.run(weights=str(w), data=tiny_data, imgsz=64, pt_only=True, batch_size=4)
    assert row["format"] == "PyTorch" and 0 <= row["figure"] <= 1 and row["ms"] > 0
    import pytest

    from utils.export import ExportError, exporter

    def broken(**_):
        raise ExportError("ONNX output differs from PyTorch by 1 (> 0.001)")

    monkeypatch.setattr(exporter, "export_weights", broken)
    shutil.copy(w, tmp_path / "again.pt")
    rows = benchmarks.run(weights=str(tmp_path / "again.pt"), data=tiny_data, imgsz=64, test=True)
    assert all(r["check"].startswith("failed: ONNX output differs") for r in rows[1:] if r["size"] is None
               and not r["check"].startswith("not installed"))
    with pytest.raises(ExportError, match="differs"):
        benchmarks.run(weights=str(w), data=tiny_data, imgsz=64, test=True, hard_fail=True)
