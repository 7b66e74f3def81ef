#!/usr/bin/env bash
# The main job, stage by stage. Each stage hands the next one files (.tflite -> bundle dir -> outputs/JSON),
# so each line below also reruns alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODEL=models/mobilenext_mcu_m100_int8.tflite
OUT=out/demo
FULL_REPORT=reports/mobilenext-mcu/report.md
mkdir -p "$OUT"

step() { printf '== %s   [%d:%02d]\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }

step "1/6 the default model: MobileNeXt microcontroller preset (per-layer table)"
$PY keras_model/summary.py --preset mobilenext-mcu

step "2/6 its int8 accuracy on Fashion-MNIST (LiteRT, 10k test images)"
$PY keras_model/evaluate.py --model "$MODEL"

step "3/6 compile for this machine (host) and validate against LiteRT, bit for bit"
$PY compile/build.py --target host --model "$MODEL" --out "$OUT/host"
$PY compile/validate.py --target host --model "$MODEL" --bundle "$OUT/host" --n 100

step "4/6 Raspberry Pi 4 bundle (aarch64), run under qemu-aarch64 -cpu cortex-a72"
$PY compile/build.py --target rpi4 --model "$MODEL" --out "$OUT/rpi4"
$PY compile/validate.py --target rpi4 --model "$MODEL" --bundle "$OUT/rpi4" --n 10
$PY compile/profile.py --target rpi4 --bundle "$OUT/rpi4" --top 10   # instructions and estimated cycles per kernel

step "5/6 Cortex-M4 firmware (mps2-an386), run in qemu-system-arm"
$PY compile/build.py --target mps2-an386 --model "$MODEL" --out "$OUT/mps2-an386"
$PY compile/validate.py --target mps2-an386 --model "$MODEL" --bundle "$OUT/mps2-an386" --n 10   # + estimated cycles
# the same bundle over the board link: the link firmware on QEMU, its UART on a socket, as a real board
# over its USB virtual COM port (--port /dev/ttyACM0 after `make flash-link`)
$PY compile/validate.py --target mps2-an386 --model "$MODEL" --bundle "$OUT/mps2-an386" --n 10 --port qemu
$PY compile/profile.py --target mps2-an386 --bundle "$OUT/mps2-an386" --top 10

step "6/6 quick report: what the identity multiplier saves, trained models x the three kinds of target"
# The committed trained models as files: nothing is trained or exported here. The bundles of steps 3-5 are
# the default model's; the report builds the other nine.
MODELS=models/mobilenext_mcu_m100_int8.tflite,models/mobilenext_mcu_m050_int8.tflite
MODELS=$MODELS,models/mobilenext_mcu_m025_int8.tflite,models/mobilenetv2_mcu_int8.tflite
status=0
$PY harness/report.py --quick --models "$MODELS" --targets host,rpi4,mps2-an386 \
    --bundle "$OUT/host" --bundle "$OUT/rpi4" --bundle "$OUT/mps2-an386" --out "$OUT/report" || status=$?
if [ -f "$FULL_REPORT" ]; then
    echo "full report (every catalog model on all five targets, more samples and repeats): $FULL_REPORT"
fi
step "done"
exit "$status"
