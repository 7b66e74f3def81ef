#!/usr/bin/env bash
# The main job, stage by stage; each stage hands the next one files, so each reruns alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== default model: MobileNeXt microcontroller preset"
$PY keras_model/summary.py --preset mobilenext-mcu
