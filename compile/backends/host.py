"""Host backend: this machine's CPU through LLVM, run in-process with the Relax VM.

The reference build for every other target: ``tvm.compile`` (with the MetaSchedule
database of ``compile.tuning`` when there is one: ``build.py --tune-trials N``) ->
``export_library`` (``model.so``, a shared library the Relax ``VirtualMachine`` loads).
Interface: see ``compile.backends``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from compile.frontend import ModelInfo
from compile.targets import Target, resolve_native

LIBRARY = "model.so"


def build(mod: tvm.IRModule, model: ModelInfo, target: Target, out_dir: Path,
          opts: dict) -> dict:
    """Compile for LLVM on this machine and export ``model.so``."""
    from compile.tuning import compile_for_target

    resolved = dataclasses.replace(target, tvm=resolve_native(target.tvm))
    executable, tuned = compile_for_target(mod, model, resolved, opts)
    executable.export_library(str(Path(out_dir) / LIBRARY))
    return {"files": [LIBRARY], "library": LIBRARY, "tvm_target_resolved": resolved.tvm,
            **tuned}


def run(bundle_dir: Path, manifest: dict, target: Target, inputs: np.ndarray,
        opts: dict) -> tuple[np.ndarray, dict]:
    """One VM call per sample; metrics are host wall-clock seconds (not a device number)."""
    lib = tvm.runtime.load_module(str(Path(bundle_dir) / manifest["library"]))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    shape = tuple(manifest["model"]["input"]["shape"])
    outputs, seconds = [], []
    for sample in inputs:
        x = tvm.runtime.tensor(np.ascontiguousarray(sample.reshape(shape)))
        start = time.perf_counter()
        y = vm["main"](x)
        seconds.append(time.perf_counter() - start)
        outputs.append(y.numpy()[0])
    metrics = {
        "host_seconds_per_sample_median": float(np.median(seconds)),
        "host_seconds_per_sample_min": float(np.min(seconds)),
    }
    return np.stack(outputs), metrics
