#!/usr/bin/env bash
# Upstream YOLOv5 v7.0 and ours side by side on one device (issue 14, GPU): yolov5s 640 at batch 16 and 64 and
# yolov5s-seg 640 at batch 8. Each side, in its own process, trains a warm-up epoch and then a timed epoch on its own
# copy of the first $IMAGES images of the built-in shapes set (our generator), and reports the timed epoch's seconds
# and peak torch.cuda.max_memory_allocated: upstream through its own modules as its train scripts drive them
# (benchmarks/peer_epoch.py, run from .peer/yolov5 with the shim), ours through the Trainer's set-up and epoch loop
# (benchmarks/trainer_epoch.py). The table gives ours/upstream speed (upstream seconds / ours) and memory.
#   bash benchmarks/prepare_peer.sh                  # once, here: the peer into .peer/ (ignored; carried to the device)
#   bash benchmarks/gpu_side_by_side.sh              # device 0, 640 px, 512 images: estimated 3-5 minutes on an H200
#   CASES="yolov5s-640-b64" bash benchmarks/gpu_side_by_side.sh                   # only the cases named
#   DEVICE=cpu IMG=64 IMAGES=8 WORKERS=0 PEER_PY=~/.cache/mtyolo/peer/venv/bin/python bash benchmarks/gpu_side_by_side.sh
#   DEVICE=cpu IMAGES=40 WORKERS=2 CASES=yolov5s-640-b8 PEER=~/.cache/mtyolo/peer PEER_PY=~/.cache/mtyolo/peer/venv/bin/python \
#     bash benchmarks/gpu_side_by_side.sh           # the CPU epoch of issue 14: yolov5s 640 b8 on 40 images
# The dry run (DEVICE=cpu IMG=64) is on a CPU (tiny sizes: its figures mean nothing). Logs: $OUT/side_by_side.log (one file:
# the device tool returns at most 8). Each of the six processes is limited to $T_STEP seconds.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
DEVICE=${DEVICE:-0}; IMG=${IMG:-640}; IMAGES=${IMAGES:-512}; WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}; T_STEP=${T_STEP:-120}
PY=${PY:-python3}; PEER_PY=${PEER_PY:-$PY}; CASES=${CASES:-}  # CASES: some of the case names below, to rerun those
PEER=$(cd "${PEER:-.peer}" 2>/dev/null && pwd) || { echo "no peer tree at ${PEER:-.peer}: run benchmarks/prepare_peer.sh first"; exit 1; }
[ -f "$PEER/yolov5/train.py" ] || { echo "no upstream tree at $PEER/yolov5: run benchmarks/prepare_peer.sh first"; exit 1; }
LOG=$OUT/side_by_side.log; : >"$LOG"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; : >"$WORK/results.jsonl"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

$PY -c "from utils.data.dataset_config import check_dataset as c; [c(f'data/{n}.yaml') for n in ('shapes', 'shapes-seg')]" \
  >>"$LOG" 2>&1 || { echo "could not generate the shapes sets (see $LOG)"; exit 1; }

# copy the first n images of a split and their label files (each side writes its own label cache beside them)
copy_split() {  # src dst split n
  mkdir -p "$2/images/$3" "$2/labels/$3"
  ls "$1/images/$3" | sort | head -n "$4" >"$WORK/list"
  (cd "$1/images/$3" && xargs -a "$WORK/list" cp -L -t "$2/images/$3/")
  sed 's/\.[^.]*$/.txt/' "$WORK/list" | (cd "$1/labels/$3" && xargs -r ls 2>/dev/null | xargs -r cp -t "$2/labels/$3/")
}
for side in up ours; do
  for kind in det seg; do
    d=$WORK/$side/$kind
    copy_split "datasets/shapes/$kind" "$d" train "$IMAGES"
    copy_split "datasets/shapes/$kind" "$d" val 4  # both train scripts check a val folder exists; nothing validates
    printf 'path: %s\ntrain: images/train\nval: images/val\nnames: {0: rectangle, 1: ellipse, 2: triangle, 3: star}\n' \
      "$d" >"$WORK/$side/$kind.yaml"
  done
done

side() {  # case side command...: one process under its time limit, its RESULT line kept
  local name=$1 who=$2 s=$SECONDS; shift 2
  echo "=== $name $who: $*" >>"$LOG"
  timeout "$T_STEP" "$@" >"$WORK/run.log" 2>&1; local rc=$?
  tr '\r' '\n' <"$WORK/run.log" | grep -v -E '(^|[^0-9])[0-9]{1,2}%\|' >>"$LOG"  # progress-bar redraws dropped
  grep -h '^RESULT ' "$WORK/run.log" | sed 's/^RESULT //' >>"$WORK/results.jsonl"
  echo "=== $name $who rc=$rc $((SECONDS - s)) s" | tee -a "$LOG"
}
case_() {  # name upstream-cfg ours-cfg batch kind
  local name=$1 up=$2 ours=$3 b=$4 kind=$5 flag=""
  [ -z "$CASES" ] || [[ " $CASES " == *" $name "* ]] || return 0
  [ "$kind" = seg ] && flag=--seg
  side "$name" upstream env -C "$PEER/yolov5" PEER_DIR="$PEER" PYTHONPATH="$PEER/shim" YOLOv5_AUTOINSTALL=false \
    YOLOV5_CONFIG_DIR="$PEER/config" YOLOv5_DATASETS_DIR="$WORK" TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 \
    PYTHONWARNINGS=ignore::FutureWarning "$PEER_PY" "$ROOT/benchmarks/peer_epoch.py" --data "$WORK/up/$kind.yaml" \
    --cfg "$up" --img "$IMG" --batch "$b" --workers "$WORKERS" --device "$DEVICE" --case "$name" $flag
  side "$name" ours "$PY" benchmarks/trainer_epoch.py --data "$WORK/ours/$kind.yaml" --cfg "$ours" --img "$IMG" \
    --batch "$b" --workers "$WORKERS" --device "$DEVICE" --case "$name" $flag
}
# the CPU case of issue 14 (yolov5s 640 b8), only when CASES names it: an epoch at b8 is minutes on a 2-core CPU
[[ " $CASES " == *" yolov5s-$IMG-b8 "* ]] && case_ "yolov5s-$IMG-b8" models/yolov5s.yaml yolov5s.yaml 8 det
case_ "yolov5s-$IMG-b16" models/yolov5s.yaml yolov5s.yaml 16 det
case_ "yolov5s-$IMG-b64" models/yolov5s.yaml yolov5s.yaml 64 det
case_ "yolov5s-seg-$IMG-b8" models/segment/yolov5s-seg.yaml yolov5s-seg.yaml 8 seg

$PY - "$WORK/results.jsonl" <<'PY' | tee -a "$LOG"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {(r["case"], r["side"]): r for r in rows}
cases = list(dict.fromkeys(r["case"] for r in rows))
gib = lambda r: "-" if r.get("peak_mem") is None else f"{r['peak_mem'] / 2 ** 30:.2f}"
ips = lambda r: r["images"] / r["epoch_s"]
print(f"\n{'case':<22}{'upstream s/epoch':>17}{'ours s/epoch':>13}{'speed ours/up':>14}"
      f"{'up GiB':>8}{'ours GiB':>9}{'mem ours/up':>12}   data wait up/ours")
for c in cases:
    u, o = by.get((c, "upstream")), by.get((c, "ours"))
    if not (u and o):
        print(f"{c:<22} missing: {'upstream' if not u else 'ours'} failed (see side_by_side.log)")
        continue
    mem = f"{o['peak_mem'] / u['peak_mem']:.2f}x" if u.get("peak_mem") and o.get("peak_mem") else "-"
    print(f"{c:<22}{u['epoch_s']:>13.2f} s{o['epoch_s']:>11.2f} s{u['epoch_s'] / o['epoch_s']:>13.2f}x"
          f"{gib(u):>8}{gib(o):>9}{mem:>12}   {u['data_s'] / u['epoch_s']:.0%} / {o['data_s'] / o['epoch_s']:.0%}")
for c in cases:
    u, o = by.get((c, "upstream")), by.get((c, "ours"))
    if u and o:
        print(f"{c}: {u['images']} images in {u['batches']} batches on {o['device']}, {ips(u):.1f} vs {ips(o):.1f} images/s; "
              f"upstream AMP {u['amp']} accumulate {u['accumulate']}; ours {o['recipe']} accumulate {o['accumulate']}")
print("goal (issue 14): speed ours/up >= 1.5x with mem ours/up <= 1.00x")
PY
