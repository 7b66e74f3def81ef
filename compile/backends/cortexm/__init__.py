"""Cortex-M backend: standalone C firmware, run on QEMU boards or flashed to real ones.

TVM (0.27) has no microTVM, C runtime or AOT executor; this package is the Cortex-M path for
int8 models on Relax, in parts:

* ``graph``    Relax ``main`` -> a static step list (one kernel call per ``call_tir``) and
               lowered, allocation-free TIR kernels;
* ``nnlib``    quantized convolutions as calls of the firmware's kernel library
               (``firmware/sg_nn.h``: SMLAD / SMMULR on M4/M7, Helium dot products on M55);
* ``intrin``   the other kernels' int8 dot products tensorized into SMLAD / Helium
               helpers (``firmware/sg_kernels.h``);
* ``cemit``    lowered TIR -> C functions with plain typed-pointer arguments;
* ``memplan``  static memory plan: every activation in ONE arena, reused by lifetime,
               outputs written in place or over the read part of a dying input (both checked
               on the kernel's TIR); ``padfuse`` folds explicit padding into its consumer;
* ``project``  writes the firmware project (model.c/h, main.c, startup, linker script
               generated from the board file, Makefile), builds it and runs it in QEMU;
* ``tflm``     TFLite Micro's arena for the same model, the figure to compare with.

build (below): Relax -> ``graph`` -> ``cemit`` -> ``memplan`` -> a firmware project in the
bundle, compiled once with ``make`` (-Wall -Werror) to prove it builds and to measure flash/RAM.
The fit check against the board's memory happens before.

run: copies the project, embeds the samples (``inputs.c``, in chunks of ``--opt batch=N``,
default 8), rebuilds, runs QEMU (``--opt timeout=SECONDS``) and parses main.c's report.
Metrics: instructions per inference (QEMU ``-icount shift=0``: instructions, not cycles),
estimated cycles and ms at the board's clock with the memory traffic per region
(``compile.cyclemodel``, from the trace plugin's record of the same run), arena and its lower
bound, flash code/weights, RAM, stack high-water mark, MACs. A real board's firmware runs on
the QEMU board with the same core (``[timing] emulate_on``): same model code and compiler
flags, that board's memory map; the estimate then applies the real board's clock and flash.

Options: ``timeout`` (s, default the board's ``run.timeout_s``), ``batch``, ``estimate=0``
(no trace plugin, no estimate: instructions only).
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import tvm

from compile.errors import BackendError
from compile.backends.cortexm import link, project
from compile.backends.cortexm.project import emulator_of, run_project
from compile.backends.cortexm.cemit import UnsupportedTIR
from compile.backends.cortexm.graph import lower_model
from compile.backends.cortexm.tflm import tflm_arena
from compile.cyclemodel import timing_of
from compile.cyclemodel.trace import Trace
from compile.frontend import ModelInfo
from compile.targets import Target

PROJECT = "firmware"


def build(mod: tvm.IRModule, model: ModelInfo, target: Target, out_dir: Path,
          opts: dict) -> dict:
    """Write and compile the firmware project under ``out_dir/firmware``."""
    from compile.backends.cortexm import tuning

    project.check_tool(target["toolchain"]["cc"], target["toolchain"]["package"])
    db_dir, trials = tuning.options(opts, model.sha256, target)
    try:
        graph = lower_model(mod)
    except UnsupportedTIR as err:
        raise BackendError(f"cannot compile for {target.name}: unsupported {err}") from None
    if trials > 0:
        tuning.tune(graph, target, trials, db_dir, opts, _log)
    graph, tuned = tuning.tuned_graph(graph, target, db_dir, _log)
    proj = Path(out_dir) / PROJECT
    proj.mkdir()
    zeros = np.zeros((1, *graph.tensors[graph.input].shape[1:]),
                     graph.tensors[graph.input].dtype)
    facts = project.write_project(graph, target, proj, zeros)
    project.check_fit(graph, facts["arena_bytes"], target)
    sizes = project.make_firmware(proj, target)
    shutil.rmtree(proj / "build")
    files = sorted(str(p.relative_to(out_dir)) for p in proj.rglob("*") if p.is_file())
    float_kernels = sorted(k.name for k in graph.kernels.values() if k.uses_float)
    return {
        "files": files,
        "project": PROJECT,
        "arena_bytes": facts["arena_bytes"],
        "arena_lower_bound": facts["arena_lower_bound"],
        "arena_live_bound": facts["arena_live_bound"],
        "io_bytes": graph.tensors[graph.input].nbytes + graph.tensors[graph.output].nbytes,
        "macs": graph.macs,
        "kernels": len(graph.kernels),
        "steps": len(graph.steps),
        "step_kernels": [step.kernel for step in graph.steps],
        "float_kernels": float_kernels,
        "flash": sizes,
        "tflm_arena": tflm_arena(model.path),     # None when TFLM cannot load the model
        "tuned": tuned or False,
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def emulated_project(bundle_dir: Path, manifest: dict, target: Target):
    """A scratch copy of the bundle's firmware project, set up for the QEMU board that runs it
    (``emulator_of``); yields (project dir, that board)."""
    emulator = emulator_of(target)
    with tempfile.TemporaryDirectory(prefix="sg-fw-") as tmp:
        proj = Path(tmp) / PROJECT
        shutil.copytree(Path(bundle_dir) / manifest["project"], proj)
        if emulator is not target:
            project.retarget(proj, target, emulator)
        yield proj, emulator


def run_over_link(bundle_dir: Path, manifest: dict, target: Target, inputs: np.ndarray,
                  opts: dict) -> tuple[np.ndarray, dict]:
    """``inputs`` sent to the board one by one over the console link (``link``), outputs and
    counts back.  ``opts["port"]``: ``qemu`` runs the bundle's link firmware on the QEMU board
    with its UART on a socket; anything else is a port (``/dev/ttyACM0``, ``socket://H:P``,
    ...) of a board already running it (``make flash-link`` in the bundle's project)."""
    out_info = manifest["model"]["output"]
    out_shape, out_dtype = tuple(out_info["shape"][1:]), out_info["dtype"]
    port = str(opts["port"])
    if port == "qemu":
        with emulated_project(bundle_dir, manifest, target) as (proj, emulator):
            timeout = float(opts.get("timeout", emulator["run"].get("timeout_s", 300)))
            project.make_firmware(proj, emulator, goal="link")
            with link.qemu_board(emulator["run"]["command"], proj / "build/firmware-link.elf",
                                 timeout) as board:
                outputs, counts, clock = link.run_inputs(board, inputs, out_dtype, out_shape)
        counter, name = "instructions", emulator.name
    else:
        timeout = float(opts.get("timeout", 60))
        board = link.BoardLink(port, timeout)
        try:
            outputs, counts, clock = link.run_inputs(board, inputs, out_dtype, out_shape)
        finally:
            board.close()
        counter, name = "cycles", target.name
    metrics = {"board": target.name, "ran_on": name, "port": port, "samples": len(outputs),
               f"{counter}_per_inference": int(np.median(counts)),
               f"{counter}_per_inference_min": int(np.min(counts)),
               "board_clock_hz": clock}
    if counter == "cycles" and clock:
        metrics["ms_per_inference"] = round(float(np.median(counts)) / clock * 1e3, 3)
    return outputs, metrics


def run(bundle_dir: Path, manifest: dict, target: Target, inputs: np.ndarray,
        opts: dict) -> tuple[np.ndarray, dict]:
    """Embed ``inputs`` in the firmware, run it in QEMU, return outputs + metrics; with
    ``opts["port"]``, over the console link instead (``run_over_link``)."""
    if opts.get("port"):
        return run_over_link(bundle_dir, manifest, target, inputs, opts)
    out_info = manifest["model"]["output"]
    out_shape, out_dtype = tuple(out_info["shape"][1:]), np.dtype(out_info["dtype"])
    batch = max(1, int(opts.get("batch", 8)))
    timing = timing_of(target) if str(opts.get("estimate", "1")) not in ("0", "off") else None
    outputs, counts, summary = [], [], {}
    trace = Trace()
    with emulated_project(bundle_dir, manifest, target) as (proj, emulator):
        timeout = float(opts.get("timeout", emulator.get("run", {}).get("timeout_s", 300)))
        for start in range(0, len(inputs), batch):
            records, summary, chunk_trace = run_project(proj, emulator,
                                                        inputs[start:start + batch], timeout,
                                                        traced=timing is not None)
            if chunk_trace is not None:
                trace.add(chunk_trace)
            for rec in records:     # main.c prints the output's bytes as int8
                outputs.append(np.array(rec["y"], dtype=np.int64).astype(np.int8)
                               .view(out_dtype).reshape(out_shape))
                counts.append(rec.get("instr", rec.get("cycles")))
    macs = manifest.get("macs") or 0
    metrics = {
        "board": target.name,
        "emulated_on": emulator.name,
        "samples": len(outputs),
        "instructions_per_inference": int(np.median(counts)),
        "instructions_per_inference_min": int(np.min(counts)),
        "instructions_note": "QEMU -icount shift=0: SysTick ticks x ns/tick = instructions, "
                             "not cycles",
        "macs": macs,
        "instructions_per_mac": round(float(np.median(counts)) / macs, 3) if macs else None,
        "arena_bytes": summary.get("arena"),
        "arena_lower_bound": manifest.get("arena_lower_bound"),
        "arena_live_bound": manifest.get("arena_live_bound"),
        "arena_plus_io_bytes": summary.get("arena", 0) + manifest.get("io_bytes", 0),
        "tflm_nonpersistent_arena_bytes": (manifest.get("tflm_arena") or {}).get("head_bytes"),
        "stack_high_water_bytes": summary.get("stack"),
        "flash_code_bytes": manifest["flash"]["code_bytes"],
        "flash_weights_bytes": manifest["flash"]["weights_bytes"],
        "flash_other_bytes": manifest["flash"]["other_flash_bytes"],
        "ram_bytes_elf": manifest["flash"]["ram_bytes"],
    }
    if timing is not None:
        if trace.windows != len(outputs):
            raise BackendError(f"the trace saw {trace.windows} inferences, the firmware "
                               f"printed {len(outputs)}")
        metrics.update(project.board_estimate(trace, timing, target, trace.windows))
    return np.stack(outputs), metrics
