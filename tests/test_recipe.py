"""The CPU training recipe: candidates, the measured choice and its cache, the forced name, fp32 losses."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from models.build import build_model
from utils.device import keep_freed_memory
from utils.engine import recipe as rc
from utils.log import quiet


@pytest.fixture
def tiny_model():
    with quiet():
        return build_model("yolov5n.yaml", nc=2)


def test_names_round_trip():
    for r in rc.cpu_candidates():
        assert rc.recipe_by_name(r.name) == r
    assert rc.FP32_CONTIGUOUS.name == "contiguous-fp32"
    with pytest.raises(ValueError, match="MTYOLO_CPU_RECIPE"):
        rc.recipe_by_name("fastest-please")


def test_candidates_include_both_layouts_and_bf16_only_with_kernels(monkeypatch):
    names = [r.name for r in rc.cpu_candidates()]
    assert names[:2] == ["contiguous-fp32", "channels_last-fp32"]
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert [r.name for r in rc.cpu_candidates()] == ["contiguous-fp32", "channels_last-fp32"]


def test_measured_choice_is_the_fastest_and_cached(tiny_model, monkeypatch, tmp_path, log):
    monkeypatch.setenv(rc.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(rc.RECIPE_ENV, raising=False)
    cands = [rc.FP32_CONTIGUOUS, rc.Recipe(True, None)]
    monkeypatch.setattr(rc, "cpu_candidates", lambda: cands)
    fake = {cands[0]: 2.0, cands[1]: 1.0}
    calls = []

    def fake_time(model, imgsz, batch, candidates):
        calls.append((imgsz, batch))
        return {r: fake[r] for r in candidates}

    monkeypatch.setattr(rc, "time_recipes", fake_time)
    cpu = torch.device("cpu")
    assert rc.choose_recipe(tiny_model, 64, 2, cpu) == cands[1]
    assert "channels_last-fp32, the fastest of 2" in log.text and "2.00x contiguous-fp32" in log.text
    entry = json.loads((tmp_path / "cpu_recipes.json").read_text())
    assert list(entry.values())[0]["recipe"] == "channels_last-fp32"
    fake[cands[0]] = 0.5  # the cache answers now: no second probe, even if the machine changed its mind
    assert rc.choose_recipe(tiny_model, 64, 2, cpu) == cands[1]
    assert len(calls) == 1 and "measured earlier" in log.text
    assert rc.choose_recipe(tiny_model, 96, 2, cpu) == cands[0]  # another size is another key
    assert len(calls) == 2
    monkeypatch.setattr(rc, "PROBE_VERSION", rc.PROBE_VERSION + 1)  # a new choosing rule measures again
    rc.choose_recipe(tiny_model, 64, 2, cpu)
    assert len(calls) == 3


def test_forced_recipe_and_gpu_recipe(tiny_model, monkeypatch):
    monkeypatch.setenv(rc.RECIPE_ENV, "contiguous-bf16")
    assert rc.choose_recipe(tiny_model, 64, 2, torch.device("cpu")) == rc.Recipe(False, torch.bfloat16)
    assert rc.choose_recipe(tiny_model, 64, 2, torch.device("cuda"), torch.float16) == rc.Recipe(True, torch.float16)


def test_time_recipes_times_every_candidate_on_copies(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    times = rc.time_recipes(tiny_model, 64, 2, rc.cpu_candidates(), rounds=1)
    assert set(times) == set(rc.cpu_candidates()) and all(0 < t < 60 for t in times.values())
    after = tiny_model.state_dict()  # probing trains copies: the model's own BatchNorm statistics are untouched
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_close_calls_get_more_rounds_within_budget(tiny_model):
    cands = [rc.FP32_CONTIGUOUS, rc.Recipe(True, None)]
    calls = []

    def step_with(costs):
        def step(model, recipe, images):
            calls.append(recipe)
            rc.time.sleep(costs[recipe])
        return step

    calls.clear()  # 30% apart: the two rounds asked for
    rc.time_recipes(tiny_model, 32, 1, cands, step=step_with({cands[0]: 0.013, cands[1]: 0.010}))
    assert len(calls) == 2 * 3  # a warm-up and two rounds each
    calls.clear()  # 2% apart: rounds up to max_rounds
    rc.time_recipes(tiny_model, 32, 1, cands, step=step_with({cands[0]: 0.0102, cands[1]: 0.010}), max_rounds=5)
    assert len(calls) == 2 * 6
    calls.clear()  # ... unless the budget is spent
    rc.time_recipes(tiny_model, 32, 1, cands, step=step_with({cands[0]: 0.0102, cands[1]: 0.010}), budget_s=0.0)
    assert len(calls) == 2 * 3


def test_a_recipe_must_beat_the_baseline_clearly():
    cl, base = rc.Recipe(True, None), rc.FP32_CONTIGUOUS
    assert rc.pick_recipe({base: 1.00, cl: 0.97}) == (base, "the baseline (channels_last-fp32 was less than 5% faster)")
    assert rc.pick_recipe({base: 1.00, cl: 0.90}) == (cl, "the fastest")
    assert rc.pick_recipe({base: 0.90, cl: 1.00}) == (base, "the fastest")


def test_float_outputs_casts_nested_reduced_precision():
    out = (torch.ones(2, dtype=torch.bfloat16), [torch.ones(1, dtype=torch.float16), torch.ones(1, dtype=torch.long)])
    f = rc.float_outputs(out)
    assert f[0].dtype == torch.float32 and f[1][0].dtype == torch.float32 and f[1][1].dtype == torch.long
    assert isinstance(f, tuple) and isinstance(f[1], list)


def test_unwritable_cache_only_warns(tiny_model, monkeypatch, tmp_path, log):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(rc.CACHE_ENV, str(blocker))  # a file where the folder should be
    monkeypatch.delenv(rc.RECIPE_ENV, raising=False)
    monkeypatch.setattr(rc, "time_recipes", lambda m, i, b, c: {r: 1.0 for r in c})
    assert rc.choose_recipe(tiny_model, 64, 2, torch.device("cpu")) == rc.FP32_CONTIGUOUS
    assert "could not cache" in log.text


def test_cpu_generations_sharing_a_name_get_their_own_cache_key(tiny_model, monkeypatch):
    """The AVX2 Zen 3 and the AVX-512 Zen 4 EPYCs of this project both call themselves "AMD EPYC"."""
    from utils import device

    zen3 = "processor : 0\ncpu family : 25\nmodel : 1\nmodel name : AMD EPYC\n"
    zen4 = "processor : 0\ncpu family : 25\nmodel : 17\nmodel name : AMD EPYC\n"
    assert device.cpu_name(zen3) == "AMD EPYC (family 25, model 1)"
    assert device.cpu_name("model name : Some CPU\n") == "Some CPU"
    keys = set()
    for info in (zen3, zen4):
        monkeypatch.setattr(rc, "cpu_name", lambda info=info: device.cpu_name(info))
        keys.add(rc.cache_key(tiny_model, 64, 2))
    assert len(keys) == 2


_REUSE = """
import resource, sys, torch
from torch import nn
from utils.device import keep_freed_memory
kept = keep_freed_memory(torch.device("cpu")) if sys.argv[1] == "keep" else False
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.SiLU())
# 4 x 32 x 320 x 320 fp32 activations: 52 MB each, over glibc's largest dynamic mmap threshold (32 MB), as yolov5s's
# first layers at 640 px are
x = torch.rand(4, 3, 640, 640)
def step():
    net(x).square().mean().backward()
for _ in range(3):  # the heap settles: its first steps still grow it
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_tensor_memory_is_reused_without_page_faults():
    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout.split()
        return out[0], int(out[1])

    kept, with_keep = faults("keep")
    _, default = faults("default")
    assert kept == "True"
    assert not keep_freed_memory(torch.device("meta"))  # only CPU memory comes from malloc
    assert default > 20_000  # glibc's default: each step's 52 MB buffers come back as fresh pages
    assert with_keep < default / 10  # kept: the same pages are reused
