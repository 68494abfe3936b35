#!/usr/bin/env bash
# Put the peer (upstream YOLOv5 v7.0, made runnable by ../shared/peer) into .peer/ of this checkout, so that a device
# machine gets it through the run tool's `carry` (it has no internet; .peer/ is ignored by git, never committed):
#   MIRROR=<fetched ultralytics/yolov5 folder> ../shared/peer/setup.sh      # once per machine: upstream under PEER_DIR
#   bash benchmarks/prepare_peer.sh                                          # copies it here, without the venv
# .peer/ holds yolov5/ (the v7.0 tree), shim/ (the stand-ins and patches) and config/ (fonts); a few MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER_DIR=${PEER_DIR:-$HOME/.cache/mtyolo/peer}
SHIM=${SHIM:-$PEER_DIR/shim}
[ -d "$SHIM" ] || SHIM=../shared/peer/shim
[ -f "$PEER_DIR/yolov5/train.py" ] || { echo "no upstream tree at $PEER_DIR/yolov5: run ../shared/peer/setup.sh first"; exit 1; }
[ -f "$SHIM/sitecustomize.py" ] || { echo "no shim at $SHIM (sitecustomize.py missing)"; exit 1; }
[ ! -d .peer ] || { chmod -R u+w .peer; rm -rf .peer; }
mkdir -p .peer/yolov5 .peer/config
# the tree as setup.sh unpacked it, less what a run adds to it (runs/, weights, byte code)
tar -C "$PEER_DIR/yolov5" --exclude=./runs --exclude='*.pt' --exclude=__pycache__ -cf - . | tar -C .peer/yolov5 -xf -
cp -r "$SHIM" .peer/shim
[ ! -d "$PEER_DIR/config" ] || cp -r "$PEER_DIR/config/." .peer/config/
chmod -R u+w .peer  # the shared shim is read-only: a later run must be able to replace this copy
echo "peer copied to .peer: $(du -sh .peer | cut -f1) (carry budget 64 MiB with the working tree)"
