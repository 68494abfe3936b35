#!/usr/bin/env bash
# One prepared GPU check, run through the device tool in a single call (device time is short):
#   tests/test_cuda.py, the training-speed and memory benchmarks, the three train scripts end to end, the side by
#   side against upstream (benchmarks/gpu_side_by_side.sh; needs .peer/, see benchmarks/prepare_peer.sh, and
#   `carry: [".peer"]`), then torch.compile (slowest, last). Estimated, never yet run whole: about 6-7 minutes on an
#   H200 without the side by side (SKIP_SBS=1: timeout_s 460), 9-10 with it (timeout_s 600, a call's limit, so
#   rather skip the compile step too with SKIP_COMPILE=1 or run benchmarks/gpu_side_by_side.sh alone, 3-5 minutes).
# Each step has its own time limit so one hang cannot eat the rest; logs go to $OUT (or ./gpu_logs).
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PY:-python3}
step() { local t=$1 name=$2; shift 2; echo "=== $name: $*" | tee -a "$OUT/$name.log"
         local s=$SECONDS; timeout "$t" "$@" >>"$OUT/$name.log" 2>&1; local rc=$?
         echo "=== $name rc=$rc $((SECONDS - s)) s" | tee -a "$OUT/$name.log"; tail -n "${TAILN:-25}" "$OUT/$name.log"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
$PY -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'cv2', cv2.__version__)"
$PY -c "from utils.data.dataset_config import check_dataset as c; [c(f'data/{n}.yaml') for n in ('shapes', 'shapes-seg')]" >/dev/null 2>&1
TAILN=40 step ${T_TESTS:-200} tests $PY -m pytest tests/test_cuda.py -q -rfEs -p no:cacheprovider --timeout 150
W=$(( $(nproc) - 2 ))
step 70 bench $PY benchmarks/train_speed.py --baseline --steps 20 --workers $W
step 70 bench $PY benchmarks/train_speed.py --baseline --batch 64 --steps 10 --workers $W
step 50 bench $PY benchmarks/memory.py
step 50 bench $PY benchmarks/train_speed.py --baseline --cfg yolov5s-seg.yaml --steps 10 --workers $W
step 50 bench $PY benchmarks/train_speed.py --baseline --cfg yolov5s-city.yaml --steps 10 --workers $W
step 40 bench $PY benchmarks/semantic_cost.py --device 0 --half
step 60 train $PY train.py --device 0 --workers 8 --epochs 10 --exist-ok --name gpu
step 50 train $PY segment/train.py --device 0 --workers 8 --epochs 5 --exist-ok --name gpu
step 40 train $PY classify/train.py --device 0 --workers 8 --epochs 5 --exist-ok --name gpu
step 60 train $PY train.py --device 0 --workers 8 --epochs 5 --cfg yolov5n-city.yaml --data data/shapes-semantic.yaml \
  --exist-ok --name gpu-sem
[ -n "${SKIP_SBS:-}" ] || TAILN=16 step 330 sbs env OUT="$OUT" PY="$PY" bash benchmarks/gpu_side_by_side.sh
[ -n "${SKIP_COMPILE:-}" ] || step 120 bench $PY benchmarks/train_speed.py --compile --steps 20 --workers $W
cp runs/train/gpu/results.csv "$OUT/det_results.csv" 2>/dev/null
