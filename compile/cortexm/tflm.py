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
           "runtime.Interpreter.from_file(sys.argv[1]).print_allocations()")


def tflm_arena(model_path: str | Path) -> dict | None:
    """{"head_bytes", "tail_bytes", "total_bytes"} from TFLM, or None if TFLM cannot load it."""
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(model_path)],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    found = {k: int(v) for k, v in _LINE.findall(proc.stdout + proc.stderr)}
    if proc.returncode != 0 or set(found) != {"total", "head", "tail"}:
        return None
    return {f"{k}_bytes": v for k, v in found.items()}
