"""Instructions and estimated cycles per inference under qemu-aarch64, from our QEMU trace plugin
(``compile.cyclemodel.plugin``). Each program loads the model, runs one inference (first-call
costs), then K more between two marks (``MARKS``): the plugin counts only between them, so
Python's start-up is neither counted nor slowed down, and the count / K is one inference.
With the board's ``[timing]`` the executed blocks are costed on the board's core
(``compile.cyclemodel``): estimated cycles, ms at the board's clock, bytes loaded and stored.
Used for the TVM bundle and for LiteRT's aarch64 wheel (XNNPACK and its built-in kernels).
QEMU itself models no timing: instructions are counted, cycles are estimated.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from compile.backends.aarch64.userland import run_in_userland
from compile.cyclemodel import estimate, timing_of
from compile.cyclemodel.qemu import plugin, plugin_options, read_trace
from compile.cyclemodel.trace import Trace
from compile.errors import BackendError

# The plugin's marks (sgtrace.c, marks=on): a system call with a policy no kernel knows.
MARKS = """
import os
def mark(policy):
    try:
        os.sched_get_priority_max(policy)
    except OSError:
        pass
MARK_ON, MARK_OFF = 0x53474F4E, 0x53474F46
"""
# The TVM bundle inside the emulated userland (argv: bundle dir, runner, K, sample): the runner's
# own loading, K calls of its entry point between the marks.
TVM_SCRIPT = MARKS + """
import runpy, sys, numpy as np
bundle, runner, k, sample = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
run = runpy.run_path(os.path.join(bundle, runner))
manifest, main = run["load_bundle"](bundle)
x = run["tvm"].runtime.tensor(np.load(sample).reshape(manifest["model"]["input"]["shape"]))
main(x)
mark(MARK_ON)
for _ in range(k):
    main(x)
mark(MARK_OFF)
""" + "{extra}"
# LiteRT inside the emulated userland (argv: model, K, resolver, sample).
LITERT_SCRIPT = MARKS + """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
model, k, resolver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
it = Interpreter(model_path=model, num_threads=1,
                 experimental_op_resolver_type=getattr(OpResolverType, resolver))
it.allocate_tensors()
inp = it.get_input_details()[0]
it.set_tensor(inp["index"], np.load(sys.argv[4]).reshape(inp["shape"]))
it.invoke()
mark(MARK_ON)
for _ in range(k):
    it.invoke()
mark(MARK_OFF)
"""
LITERT_RESOLVERS = {"litert-xnnpack": "AUTO",
                    "litert-builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}
# profile.py: the guest's address map at the end (qemu-user shows guest addresses)
MAPS_DUMP = """
open(sys.argv[5], "w").write(open("/proc/self/maps").read())
"""
EVERYWHERE = {"memory": (0, 2**64 - 1)}     # traffic: one region, the whole address space


def counted_run(target, script: list[str], workdir: Path, mem: bool = False) -> Trace:
    """Run ``python3.11 <script...>`` in the userland under the trace plugin, counting between
    the script's marks; what the plugin recorded (blocks, and with ``mem`` their traffic)."""
    out = workdir / "count.txt"
    out.unlink(missing_ok=True)
    proc = run_in_userland(target, script, threads=1, plugin=[
        str(plugin()), "marks=on",
        *plugin_options(out, mem=mem, regions=EVERYWHERE if mem else None)])
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise BackendError(f"emulated run failed (exit {proc.returncode}): {tail}")
    return read_trace(out)


def tvm_program(workdir: Path, bundle_dir: Path, runner: str, k: int, sample: Path,
                maps: Path | None = None) -> list[str]:
    """The arguments that run the TVM bundle's K inferences between the marks (and write the
    guest's address map to ``maps``)."""
    script = workdir / ("count_tvm_maps.py" if maps else "count_tvm.py")   # not tvm.py: import tvm
    script.write_text(TVM_SCRIPT.replace("{extra}", MAPS_DUMP if maps else ""))
    return [str(script), str(bundle_dir), runner, str(k), str(sample),
            *([str(maps)] if maps else [])]


def zero_sample(bundle_dir: Path) -> np.ndarray:
    """One all-zero input shaped like the bundle's model input."""
    spec = json.loads((Path(bundle_dir) / "bundle.json").read_text())["model"]["input"]
    return np.zeros((1, *spec["shape"][1:]), spec["dtype"])


def instructions_per_inference(target, bundle_dir: Path, runner: str = "run.py",
                               repeat: int = 20, model: Path | None = None,
                               sample: np.ndarray | None = None, cycles: bool = True) -> dict:
    """Instructions per inference for the TVM bundle (and LiteRT when ``model`` is given); with
    ``cycles``, also each program's estimate (``estimates``: cycles, ms, traffic)."""
    timing = timing_of(target) if cycles else None
    bundle_dir = Path(bundle_dir).absolute()
    result = {"unit": "guest instructions per inference (qemu TCG plugin, not cycles)",
              "repeat": repeat}
    with tempfile.TemporaryDirectory(prefix="sandglass-bench-") as tmp:
        tmp = Path(tmp)
        x = tmp / "sample.npy"
        np.save(x, zero_sample(bundle_dir) if sample is None else sample)
        programs = {"tvm": tvm_program(tmp, bundle_dir, runner, repeat, x)}
        if model is not None:
            (tmp / "count_litert.py").write_text(LITERT_SCRIPT)
            for name, resolver in LITERT_RESOLVERS.items():
                programs[name] = [str(tmp / "count_litert.py"), str(Path(model).absolute()),
                                  str(repeat), resolver, str(x)]
        for name, argv in programs.items():
            trace = counted_run(target, argv, tmp, mem=timing is not None)
            if trace.windows != 1:
                raise BackendError(f"{name}: the trace plugin saw {trace.windows} marked runs, "
                                   "not 1")
            result[name] = trace.instructions // repeat
            if timing is not None:
                result.setdefault("estimates", {})[name] = estimate(trace, timing, repeat)
    return result
