"""TensorFlow Lite Micro's arena for the same model, for comparison with our static plan.

The ``tflite_micro`` wheel's host interpreter allocates with TFLM's real allocator and
``print_allocations()`` prints its ``RecordingMicroAllocator`` report from C++ (stderr).  The "head" of TFLM's arena is the non-persistent part (activations,
including the model's input and output tensors, and kernel scratch buffers), planned by
TFLM's greedy memory planner; the "tail" is persistent (tensor structs, quantization
parameters, kernel state).  Our arena holds only intermediates (input and output are the
caller's buffers), so the fair comparison is ``arena + input + output`` vs. ``head``.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
# print_allocations() writes through C++ stdio, out of Python's reach: run it in a child.
_SCRIPT = ("import sys; from tflite_micro.python.tflite_micro import runtime; "
           "runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))"
           ".print_allocations()")
MAX_ARENA = 1 << 30


def tflm_arena(model_path: str | Path) -> dict | None:
    """{"head_bytes", "tail_bytes", "total_bytes"} from TFLM, or None if TFLM cannot load the
    model with up to 1 GiB of arena. The first try gives it 10x the model's size (the wheel's
    default), enough unless the activations outgrow the weights; then 4x more each time."""
    size = max(10 * Path(model_path).stat().st_size, 1 << 16)
    while size <= MAX_ARENA:
        try:
            proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(model_path), str(size)],
                                  capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return None
        found = {k: int(v) for k, v in _LINE.findall(proc.stdout + proc.stderr)}
        if proc.returncode == 0 and set(found) == {"total", "head", "tail"}:
            return {f"{k}_bytes": v for k, v in found.items()}
        size *= 4
    return None
