"""Host backend: this machine's CPU through LLVM, run in-process.

The reference build for every other target: ``tvm.compile`` (with the MetaSchedule
database of ``compile.llvm_cpu.tuning`` when there is one: ``build.py --tune-trials N``) ->
``export_library`` (``model.so``) with the static entry point of ``compile.llvm_cpu.static_main``
linked in: ``sandglass_main(input, output)`` runs the kernels on static storage. The Relax
``VirtualMachine``'s ``main`` is in the same library and gives the same output.
Interface: see ``compile.backends``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm

from compile.llvm_cpu import static_main
from compile.frontend import ModelInfo
from compile.targets import Target, resolve_native

LIBRARY = "model.so"
# path -> (device, inode, mtime, size) of the file dlopen'ed under that name in this process
_LOADED: dict[str, tuple] = {}


def build(mod: tvm.IRModule, model: ModelInfo, target: Target, out_dir: Path,
          opts: dict) -> dict:
    """Compile for LLVM on this machine and export ``model.so``."""
    from compile.llvm_cpu.build import compile_for_target

    resolved = dataclasses.replace(target, tvm=resolve_native(target.tvm))
    built, tuned = compile_for_target(mod, model, resolved, opts)
    static = static_main.export_library(built, Path(out_dir) / LIBRARY)
    return {"files": [LIBRARY], "library": LIBRARY, "entry": static_main.ENTRY if static else None,
            "tvm_target_resolved": resolved.tvm, **tuned}


def load(bundle_dir: Path, manifest: dict):
    """``f(x: tvm Tensor) -> tvm Tensor`` for one sample (``static_main.load_main``: the
    bundle's static entry point, or the Relax VM's ``main`` for a library without one)."""
    lib = _load_library(Path(bundle_dir) / manifest["library"])
    spec = manifest["model"]["output"]
    return static_main.load_main(lib, spec["shape"], spec["dtype"])


def _load_library(path: Path):
    """``load_module`` that sees a rebuilt file: dlopen hands back the library it already
    loaded under the same name, so a changed file is loaded under a name of its own."""
    st = path.stat()
    identity = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    key = os.path.realpath(path)
    if _LOADED.setdefault(key, identity) == identity:
        return tvm.runtime.load_module(key)
    tmp = Path(tempfile.mkdtemp(prefix="sandglass-lib-"))
    try:
        shutil.copy2(path, tmp / path.name)
        return tvm.runtime.load_module(str(tmp / path.name))
    finally:   # the loaded library stays mapped
        shutil.rmtree(tmp, ignore_errors=True)


def run(bundle_dir: Path, manifest: dict, target: Target, inputs: np.ndarray,
        opts: dict) -> tuple[np.ndarray, dict]:
    """One call per sample; metrics are host wall-clock seconds (not a device number)."""
    main = load(bundle_dir, manifest)
    shape = tuple(manifest["model"]["input"]["shape"])
    outputs, seconds = [], []
    for sample in inputs:
        x = tvm.runtime.tensor(np.ascontiguousarray(sample.reshape(shape)))
        start = time.perf_counter()
        y = main(x)
        seconds.append(time.perf_counter() - start)
        outputs.append(y.numpy()[0])
    metrics = {
        "host_seconds_per_sample_median": float(np.median(seconds)),
        "host_seconds_per_sample_min": float(np.min(seconds)),
    }
    return np.stack(outputs), metrics
