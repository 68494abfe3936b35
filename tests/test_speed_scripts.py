"""The speed scripts of benchmarks/ run end to end at tiny sizes and print the lines benchmarks/README.md quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, **env: str) -> str:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_infer_speed_times_detects_own_path_when_it_runs_an_export(tmp_path):
    """detect.py's path may be an export (utils/export/fastest.py): the script times it beside PyTorch itself."""
    out = _run("benchmarks/infer_speed.py", "--cfg", "yolov5n.yaml", "--img", "64", "--batch", "1", "2",
               "--reps", "2", MTYOLO_CPU_RUNTIME="onnx", MTYOLO_CACHE_DIR=str(tmp_path))
    assert "batch 1: per image detect.py path [onnx]" in out and "eager" in out and "torchscript" in out
    assert "batch 2: per image" in out and "val path" in out
    assert out.count("the fastest other backend") == 2


def test_infer_speed_without_torchscript_on_pytorch(tmp_path):
    out = _run("benchmarks/infer_speed.py", "--cfg", "yolov5n.yaml", "--img", "64", "--batch", "1", "--reps", "1",
               "--no-torchscript", MTYOLO_CPU_RUNTIME="pytorch", MTYOLO_CACHE_DIR=str(tmp_path))
    assert "detect.py path [pytorch]" in out and "torchscript" not in out


def test_train_speed_baseline_prints_both_recipes_and_the_ratio(tmp_path):
    out = _run("benchmarks/train_speed.py", "--cfg", "yolov5n.yaml", "--img", "64", "--batch", "2", "--steps", "1",
               "--workers", "0", "--baseline", MTYOLO_CPU_RECIPE="contiguous-fp32", MTYOLO_CACHE_DIR=str(tmp_path))
    assert "[ours]" in out and "[baseline]" in out and "speed-up ours / baseline:" in out
    assert "of peak" in out
    # the timed loader holds the shapes set as train.py's does without --cache (it once decoded every image each step)
    assert "data: 512 shapes images, kept decoded in RAM as train.py does without --cache, 0 loader workers" in out


def test_train_speed_gives_a_bf16_recipe_its_share_of_the_fp32_peak_too(tmp_path):
    out = _run("benchmarks/train_speed.py", "--cfg", "yolov5n.yaml", "--img", "64", "--batch", "2", "--steps", "1",
               "--workers", "0", MTYOLO_CPU_RECIPE="channels_last-bf16", MTYOLO_CACHE_DIR=str(tmp_path))
    assert "measured bf16 peak" in out and "measured fp32 peak" in out and "of it (" in out


def test_compile_flags_reach_the_timed_models(tmp_path):
    """--compile wraps the models in torch.compile; TORCH_COMPILE_DISABLE makes that a pass-through here (compiling
    itself is tested by test_engine.test_compiled_training_runs), so this checks the flags' plumbing and labels."""
    env = {"TORCH_COMPILE_DISABLE": "1", "MTYOLO_CACHE_DIR": str(tmp_path), "MTYOLO_CPU_RUNTIME": "pytorch"}
    out = _run("benchmarks/train_speed.py", "--cfg", "yolov5n.yaml", "--img", "64", "--batch", "2", "--steps", "1",
               "--workers", "0", "--compile", MTYOLO_CPU_RECIPE="contiguous-fp32", **env)
    assert "compiled, AMP None" in out
    out = _run("benchmarks/infer_speed.py", "--cfg", "yolov5n.yaml", "--img", "64", "--batch", "1", "--reps", "1",
               "--no-torchscript", "--compile", **env)
    assert "compiled " in out and "detect.py path [pytorch]" in out
