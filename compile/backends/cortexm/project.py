"""Firmware project writer, builder and QEMU runner for Cortex-M boards.

``write_project(graph, target, out_dir, inputs)`` lays out a self-contained project::

    model.h / model.c   int sg_model_run(const int8_t *input, int8_t *output): kernels,
                        weights as const arrays (section .rodata.sg_weights -> flash),
                        ONE static arena laid out by compile.backends.cortexm.memplan
    inputs.h / inputs.c the samples main.c runs (sg_inputs[SG_NUM_INPUTS][...])
    main.c, startup.c, board.h, board_<qemu|hw>.c     copied from firmware/
    sg_kernels.h        the SIMD helpers the tensorized kernels call (SMLAD / Helium / C)
    sg_nn.h             whole int8 convolutions the library calls run (nnlib)
    link.ld             generated from the board file's memory map (overflow ASSERTs)
    Makefile            make / make run / make flash

``make_firmware`` builds it, ``run_firmware`` runs the ELF under QEMU with a timeout and
parses the lines main.c prints with ONE regex (``LINE_RE``).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from string import Template

import numpy as np

from compile.errors import BackendError
from compile.backends.cortexm import memplan
from compile.backends.cortexm.cemit import ctype, prelude
from compile.backends.cortexm.graph import Graph
from compile.cyclemodel import Timing, estimate
from compile.cyclemodel.qemu import plugin_argument, read_trace
from compile.cyclemodel.trace import Trace
from compile.targets import Target, get_target

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"
COMMON_FILES = ("board.h", "board_arm.h", "board_stm32.h", "sg_kernels.h", "sg_nn.h", "startup.c",
                "main.c")
# main.c's report lines: "sg:boot clock=..", "sg:out idx=0 instr=123 y=1,-2",
# "sg:prof step=.. count=.." (built with -DSG_PROFILE) and "sg:summary arena=.. stack=.. n=..",
# and startup.c's "sg:fault pc=.. lr=.. cfsr=.. sp=.." when the firmware faults
LINE_RE = re.compile(r"^sg:(boot|out|prof|summary|fault)((?: [a-z]+=-?[0-9]+(?:,-?[0-9]+)*)+)\r?$",
                     re.M)


def memory_of(target: Target) -> dict:
    """Bytes available: flash (code), weights (own region or flash), ram, stack."""
    mem = target["memory"]
    return {"flash": int(mem["flash"]["length"]), "ram": int(mem["ram"]["length"]),
            "weights": int(mem.get("weights", mem["flash"])["length"]),
            "stack": int(mem.get("stack_bytes", 16384))}


def board_source(target: Target) -> str:
    section = target.get("run") or target.get("flash") or {}
    return section["board_source"]


# -- memory plan -------------------------------------------------------------------------
def plan_memory(graph: Graph) -> tuple[memplan.Plan, list[memplan.Buffer]]:
    """Lifetimes of activations/workspaces from the step list; the aliased pairs a step
    allows over an activation read once and dying there (in place where its kernel is
    element-wise, at the offsets its access order allows: ``Step.inplace``/``overlap``);
    then the plan (or ``Graph.keep_plan``'s, refitted)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, step in enumerate(graph.steps):
        names = step.args + ([step.workspace] if step.workspace else [])
        for name in names:
            if graph.tensors[name].kind in ("activation", "workspace"):
                first.setdefault(name, i)
                last[name] = i
    buffers = [memplan.Buffer(n, graph.tensors[n].nbytes, first[n], last[n]) for n in first]
    candidates = []             # in place (element-wise kernels) first, then overlaps
    for step in graph.steps:
        out = step.args[-1]
        offsets = [(i, 0) for i in step.inplace] + [
            (i, d) for i, ds in sorted(step.overlap.items()) for d in ds]
        candidates += [(out, step.args[i], d) for i, d in offsets]
    if graph.keep_plan is not None:
        p = memplan.refit(*graph.keep_plan, buffers)
        if p is None:
            raise BackendError("a kernel's scratch does not fit the memory plan it keeps")
    else:
        p = memplan.plan(buffers, memplan.aliases(buffers, candidates))
    memplan.check(buffers, p)
    return p, buffers


# -- C sources -----------------------------------------------------------------------------
# per-step instruction split, compiled in only with -DSG_PROFILE (main.c prints it)
PROFILE_C = """#ifdef SG_PROFILE
#include "board.h"
uint64_t sg_profile[SG_NUM_STEPS];
#define SG_STEP(i, call) do { uint64_t t0_ = board_cycles(); call; \\
  sg_profile[i] += board_cycles() - t0_; } while (0)
#else
#define SG_STEP(i, call) call
#endif
"""


def _bytes_c(data: bytes, per_line: int = 24) -> str:
    rows = [", ".join(str(b) for b in data[i:i + per_line]) for i in range(0, len(data), per_line)]
    return ",\n  ".join(rows) if rows else "0"


def _model_sources(graph: Graph, p: memplan.Plan) -> tuple[str, str]:
    t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]
    header = f"""/* Generated by sandglass (compile/backends/cortexm): the model as plain C, no runtime library. */
#ifndef SG_MODEL_H
#define SG_MODEL_H

#include <stdint.h>

#define SG_INPUT_BYTES {t_in.nbytes}     /* {t_in.dtype} {list(t_in.shape)} */
#define SG_OUTPUT_BYTES {t_out.nbytes}    /* {t_out.dtype} {list(t_out.shape)} */
/* static activation arena; lower bound {p.lower_bound} (with the overlaps it uses),
   largest sum of live tensors {p.live_bound} */
#define SG_ARENA_BYTES {p.arena_bytes}
#define SG_WEIGHT_BYTES {sum(t.nbytes for t in graph.tensors.values() if t.kind == 'const')}
#define SG_NUM_STEPS {len(graph.steps)}       /* kernel calls per inference */

#ifdef SG_PROFILE
/* `make EXTRA_CFLAGS=-DSG_PROFILE`: board_cycles() summed per step over all inferences */
extern uint64_t sg_profile[SG_NUM_STEPS];
#endif

/* Run one inference.  No allocation; not reentrant (one static arena).  Returns 0. */
int sg_model_run(const int8_t *input, int8_t *output);

#endif
"""
    out = ['/* Generated by sandglass (compile/backends/cortexm) from a Relax module: kernels, weights and',
           ' * the static memory plan.  Do not edit. */',
           "#include <stdint.h>", "", '#include "model.h"', '#include "sg_kernels.h"',
           '#include "sg_nn.h"', "",
           prelude(any(k.uses_float for k in graph.kernels.values()))]
    for t in graph.tensors.values():
        if t.kind == "const":
            raw = np.ascontiguousarray(t.data).tobytes()
            out.append(f"/* {t.dtype} {list(t.shape)} */")
            out.append(f'static const uint8_t sg_{t.name}[{max(len(raw), 1)}] '
                       f'__attribute__((aligned(16), section(".rodata.sg_weights"))) = {{\n  '
                       f"{_bytes_c(raw)}\n}};")
    if p.offsets:     # a one-kernel model reads the input and writes the output only
        out.append(f"\nstatic uint8_t sg_arena[{max(p.arena_bytes, 16)}] "
                   "__attribute__((aligned(16)));\n")
    aliased = {step.kernel for step in graph.steps
               if any(out == step.args[-1] for out, _, _ in p.aliases)}
    out.extend(k.c_source(restrict=k.name not in aliased) for k in graph.kernels.values())

    def ref(name: str, dtype: str, const: bool) -> str:
        t = graph.tensors[name]
        q = "const " if const else ""
        if t.kind == "input":
            return f"({q}{ctype(dtype)} *)input"
        if t.kind == "output":
            return f"({ctype(dtype)} *)output"
        if t.kind == "const":
            return f"(const {ctype(dtype)} *)sg_{name}"
        return f"({q}{ctype(dtype)} *)(sg_arena + {p.offsets[name]})"

    out.append(PROFILE_C)
    out.append("int sg_model_run(const int8_t *input, int8_t *output) {")
    for i, step in enumerate(graph.steps):
        k = graph.kernels[step.kernel]
        args = [ref(n, d, not w) for n, d, w in zip(step.args, k.param_dtypes, k.written)]
        if step.workspace:
            args.append(f"sg_arena + {p.offsets[step.workspace]}")
        out.append(f"  SG_STEP({i}, {step.kernel}({', '.join(args)}));")
    out.append("  return 0;\n}\n")
    return header, "\n".join(out)


def _input_sources(inputs: np.ndarray, nbytes: int) -> tuple[str, str]:
    n = len(inputs)
    header = (f"/* Generated by sandglass: the samples main.c runs. */\n"
              f"#ifndef SG_INPUTS_H\n#define SG_INPUTS_H\n#include <stdint.h>\n"
              f"#define SG_NUM_INPUTS {n}\n"
              f"extern const int8_t sg_inputs[SG_NUM_INPUTS][{nbytes}];\n#endif\n")
    rows = ",\n".join("  {" + ", ".join(str(int(v)) for v in
                                         np.ascontiguousarray(x).view(np.int8).reshape(-1)) + "}"
                      for x in inputs)
    source = (f'#include "inputs.h"\n\nconst int8_t sg_inputs[SG_NUM_INPUTS][{nbytes}] '
              f"__attribute__((aligned(16))) = {{\n{rows}\n}};\n")
    return header, source


def write_inputs(out_dir: Path, inputs: np.ndarray, nbytes: int) -> None:
    header, source = _input_sources(inputs, nbytes)
    (out_dir / "inputs.h").write_text(header)
    (out_dir / "inputs.c").write_text(source)


def _render(name: str, **values) -> str:
    return Template((FIRMWARE / name).read_text()).substitute(values)


def linker_script(target: Target) -> str:
    """link.ld for the board: MEMORY from the board file, the fixed section layout."""
    mem = target["memory"]
    regions = [("FLASH", "rx", mem["flash"]), ("RAM", "rwx", mem["ram"])]
    if "weights" in mem:
        regions.append(("WEIGHTS", "r", mem["weights"]))
    memory = "\n".join(f"  {name:<7} ({attr}) : ORIGIN = {hex(r['origin'])}, "
                        f"LENGTH = {hex(r['length'])}" for name, attr, r in regions)
    weights_assert = ""
    if "weights" in mem:
        weights_assert = ("ASSERT(ADDR(.weights) + SIZEOF(.weights) <= ORIGIN(WEIGHTS) + "
                          f'LENGTH(WEIGHTS), "sandglass: the weights do not fit {target.name}")')
    return _render("link.ld.in", board=target.name, memory=memory,
                   weights_region="WEIGHTS" if "weights" in mem else "FLASH",
                   weights_assert=weights_assert, stack_bytes=memory_of(target)["stack"])


def write_makefile(out_dir: Path, target: Target, cpu: Target | None = None) -> None:
    """The project's Makefile for ``target``, compiling for ``cpu``'s core (default: the
    target's own)."""
    run = target.get("run", {})
    flash = target.get("flash", {})
    defines = []
    if run:
        defines.append(f"-DSG_CLOCK_HZ={int(target['clock_hz'])}u")
    if "uart_base" in target.get("console", {}):
        defines.append(f"-DSG_UART_BASE={hex(int(target['console']['uart_base']))}u")
    (Path(out_dir) / "Makefile").write_text(_render(
        "Makefile.in", board=target.name, cc=target["toolchain"]["cc"],
        size=target["toolchain"]["size"], cpu_flags=" ".join((cpu or target)["cpu"]["flags"]),
        defines=" ".join(defines), board_source=board_source(target),
        timeout=run.get("timeout_s", 300),
        qemu=shlex.join(run["command"]) if run else "false  # not an emulated board",
        flash_tool=flash.get("tool", "QEMU board: nothing to flash"),
        flash_command=flash.get("command", "@echo 'nothing to flash: QEMU board' && false")))


def retarget(project: Path, board: Target, emulator: Target) -> None:
    """Turn ``board``'s project into one for the QEMU board ``emulator`` with the same core:
    its memory map, board seam and QEMU command, ``board``'s compiler flags. The model, main.c
    and the kernels stay as they are."""
    project = Path(project)
    (project / board_source(board)).unlink(missing_ok=True)
    shutil.copyfile(FIRMWARE / board_source(emulator), project / board_source(emulator))
    (project / "link.ld").write_text(linker_script(emulator))
    write_makefile(project, emulator, cpu=board)


def write_project(graph: Graph, target: Target, out_dir: Path, inputs: np.ndarray) -> dict:
    """Write every file of the firmware project; returns the plan facts for bundle.json."""
    out_dir = Path(out_dir)
    p, buffers = plan_memory(graph)
    header, source = _model_sources(graph, p)
    (out_dir / "model.h").write_text(header)
    (out_dir / "model.c").write_text(source)
    write_inputs(out_dir, inputs, graph.tensors[graph.input].nbytes)
    for name in COMMON_FILES + (board_source(target),):
        shutil.copyfile(FIRMWARE / name, out_dir / name)
    (out_dir / "link.ld").write_text(linker_script(target))
    write_makefile(out_dir, target)
    return {"arena_bytes": p.arena_bytes, "arena_lower_bound": p.lower_bound,
            "arena_live_bound": p.live_bound,
            "arena_offsets": p.offsets, "arena_aliases": p.aliases, "arena_order": p.order,
            "buffers": [[b.name, b.size, b.first, b.last] for b in buffers]}


# -- checks, build, run --------------------------------------------------------------------
def emulator_of(target: Target) -> Target:
    """The QEMU board that runs ``target``'s firmware: itself, or for a real board the QEMU
    board with the same core (``[timing] emulate_on`` in its board file)."""
    if target.get("run"):
        return target
    emulate_on = (target.get("timing") or {}).get("emulate_on")
    if not emulate_on:
        raise BackendError(f"{target.name} is a real board: flash it with `make flash` "
                           f"({target.get('flash', {}).get('tool', 'pyOCD/OpenOCD')})")
    return get_target(emulate_on)


def check_fit(graph: Graph, arena_bytes: int, target: Target) -> None:
    """Weights vs flash, arena + stack vs RAM, before any compiler runs (exit 2 upstream)."""
    mem = memory_of(target)
    weights = sum(t.nbytes for t in graph.tensors.values() if t.kind == "const")
    io = graph.tensors[graph.input].nbytes + graph.tensors[graph.output].nbytes
    if weights > mem["weights"]:
        raise BackendError(f"model does not fit {target.name}: needs {weights} bytes of flash "
                           f"for the weights, the board has {mem['weights']}")
    ram = arena_bytes + mem["stack"] + io
    if ram > mem["ram"]:
        raise BackendError(f"model does not fit {target.name}: needs {ram} bytes of RAM "
                           f"(arena {arena_bytes} + stack {mem['stack']} + output {io}), "
                           f"the board has {mem['ram']}")


def check_tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        raise BackendError(f"{name} not found: install the Debian package {package} "
                           "(scripts/setup.sh)")


def check_qemu(board: Target) -> None:
    """The QEMU that runs the board (a QEMU board: its ``[run] command``) is installed."""
    run = board["run"]
    check_tool(run["command"][0], run.get("package", run["command"][0]))


def make_firmware(project: Path, target: Target, extra_cflags: str = "",
                  goal: str = "") -> dict:
    """``make`` in ``project``; returns the size report {code, weights, other, ram} in bytes
    (``goal="link"``: the link firmware, build/firmware-link.elf, and no report)."""
    check_tool(target["toolchain"]["cc"], target["toolchain"]["package"])
    check_tool("make", "make")
    proc = subprocess.run(["make", "-s", "-C", str(project), f"EXTRA_CFLAGS={extra_cflags}",
                           *([goal] if goal else [])], capture_output=True, text=True)
    if proc.returncode != 0:
        text = proc.stdout + proc.stderr
        assert_line = re.search(r"sandglass: [^\n\"]*", text)
        if assert_line:
            raise BackendError(assert_line.group(0))
        region = re.search(r"region `(\w+)' overflowed by (\d+) bytes", text)
        if region:
            raise BackendError(f"firmware does not fit {target.name}: {region.group(1)} "
                               f"overflowed by {region.group(2)} bytes")
        raise RuntimeError(f"firmware build failed in {project}:\n{text[-4000:]}")
    if goal:
        return {}
    size = re.search(r"size: flash code=(\d+) weights=(\d+) other=(\d+) ram=(\d+)", proc.stdout)
    if not size:
        raise RuntimeError(f"no size report from make:\n{proc.stdout}")
    return dict(zip(("code_bytes", "weights_bytes", "other_flash_bytes", "ram_bytes"),
                    map(int, size.groups())))


def binutil(target: Target, name: str) -> str:
    """The board toolchain's binutils program ``name`` (nm, addr2line, ...), named like its size."""
    return target["toolchain"]["size"].replace("size", name)


def elf_symbols(elf: Path, target: Target) -> dict[str, tuple[int, int]]:
    """name -> (address, size) of every symbol of ``elf`` (``nm -S``)."""
    out = subprocess.run([binutil(target, "nm"), "-S", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    symbols: dict[str, tuple[int, int]] = {}
    for parts in map(str.split, out.splitlines()):
        if len(parts) >= 3:
            size = int(parts[1], 16) if len(parts) == 4 else 0
            symbols[parts[-1]] = (int(parts[0], 16), size)
    return symbols


def function_at(symbols: dict[str, tuple[int, int]], address: int) -> str:
    """The symbol whose extent holds ``address`` (Thumb bit ignored), or "?"."""
    address &= ~1
    for name, (start, size) in symbols.items():
        if start <= address < start + max(size, 1):
            return name
    return "?"


def trace_layout(elf: Path, target: Target) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """What the trace plugin needs from the ELF on ``target``: the window of one inference
    (from ``sg_model_run`` to ``board_cycles``, the call main.c makes right after it returns) and
    the memory regions to count traffic in, most specific first (the plugin takes the first that
    holds an address): weights, arena, stack, then the board's flash and RAM."""
    symbols = elf_symbols(elf, target)
    sections = subprocess.run([target["toolchain"]["size"], "-A", str(elf)], capture_output=True,
                              text=True, check=True).stdout
    regions: dict[str, tuple[int, int]] = {}
    found = re.search(r"^\.weights\s+(\d+)\s+(\d+)", sections, re.M)
    if found and int(found.group(1)):
        start = int(found.group(2))
        regions["weights"] = (start, start + int(found.group(1)))
    if "sg_arena" in symbols:
        start, size = symbols["sg_arena"]
        regions["arena"] = (start, start + size)
    regions["stack"] = (symbols["__stack_limit"][0], symbols["__stack_top"][0])
    for name in ("flash", "ram"):
        region = target["memory"][name]
        regions[name] = (int(region["origin"]), int(region["origin"]) + int(region["length"]))
    return (symbols["sg_model_run"][0], symbols["board_cycles"][0]), regions


def run_firmware(elf: Path, target: Target, timeout: float,
                 qemu_args: list[str] = ()) -> tuple[list[dict], dict]:
    """Run ``elf`` in QEMU (with ``qemu_args``, e.g. a plugin); returns (one dict per
    inference, summary dict; with -DSG_PROFILE its ``steps``: the count per kernel call)."""
    run = target.get("run")
    if not run:
        raise BackendError(f"{target.name} is a real board: flash it with `make flash` "
                           f"({target.get('flash', {}).get('tool', 'pyOCD/OpenOCD')})")
    check_qemu(target)
    try:
        proc = subprocess.run([*run["command"], *qemu_args, "-kernel", str(elf)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError(f"firmware on {target.name} did not finish within {timeout:g} s "
                           "(QEMU stopped); raise it with --opt timeout=SECONDS") from None
    records, summary, fault, steps = [], None, None, {}
    text = proc.stdout + proc.stderr          # QEMU writes semihosting output to stderr
    for kind, fields in LINE_RE.findall(text):
        values = {}
        for item in fields.split():
            key, _, value = item.partition("=")
            values[key] = [int(v) for v in value.split(",")] if key == "y" else int(value)
        if kind == "out":
            records.append(values)
        elif kind == "prof":
            steps[values["step"]] = values["count"]
        elif kind == "fault":
            fault = values
        elif kind == "summary":
            summary = values
    symbols = elf_symbols(elf, target) if fault or summary else {}
    stack = symbols["__stack_top"][0] - symbols["__stack_limit"][0] if symbols else 0
    if fault is not None and fault.get("sp", 2**32) < symbols["__stack_limit"][0]:
        raise BackendError(
            f"firmware on {target.name} overflowed its {stack}-byte stack (a HardFault at "
            f"pc=0x{fault['pc']:08x} in {function_at(symbols, fault['pc'])} with the stack "
            f"pointer {symbols['__stack_limit'][0] - fault['sp']} bytes below its limit); "
            "raise [memory] stack_bytes in the board file")
    if fault is not None:
        raise BackendError(
            f"firmware on {target.name} faulted: HardFault at pc=0x{fault['pc']:08x} in "
            f"{function_at(symbols, fault['pc'])} (lr=0x{fault['lr']:08x}, "
            f"CFSR=0x{fault['cfsr']:08x}), after {len(records)} inferences")
    if proc.returncode != 0 or summary is None:
        raise BackendError(f"firmware on {target.name} failed (QEMU exit code "
                           f"{proc.returncode}): {text.strip()[-300:]}")
    if steps:
        summary["steps"] = [steps[k] for k in sorted(steps)]
    if summary.get("stack", 0) >= stack:
        # main.c finds no painted word left: the stack grew past its limit, into the arena
        raise BackendError(f"firmware on {target.name} used all of its {stack}-byte stack and "
                           "overflowed it; raise [memory] stack_bytes in the board file")
    return records, summary


def run_project(proj: Path, emulator: Target, inputs: np.ndarray, timeout: float,
                traced: bool, extra_cflags: str = "") -> tuple[list[dict], dict, Trace | None]:
    """Embed ``inputs``, build, run on ``emulator``: main.c's records and summary, and with
    ``traced`` the trace plugin's record of the inferences."""
    write_inputs(proj, inputs, int(np.prod(inputs.shape[1:])) * inputs.dtype.itemsize)
    make_firmware(proj, emulator, extra_cflags)
    elf = proj / "build" / "firmware.elf"
    trace_file = proj.parent / "trace.txt"
    qemu_args = []
    if traced:
        window, regions = trace_layout(elf, emulator)
        qemu_args = plugin_argument(trace_file, window=window, regions=regions)
    records, summary = run_firmware(elf, emulator, timeout, qemu_args)
    if len(records) != len(inputs):
        raise BackendError(f"firmware printed {len(records)} results for {len(inputs)} inputs")
    return records, summary, read_trace(trace_file) if traced else None


def board_estimate(trace: Trace, timing: Timing, target: Target, inferences: int) -> dict:
    """The cycle model's estimate per inference of ``trace`` on ``target``: weights in the
    board's flash wait like code; a WEIGHTS region of its own is SRAM."""
    in_flash = ("flash",) if "weights" in target["memory"] else ("flash", "weights")
    return estimate(trace, timing, inferences, code_regions=("flash",), flash_regions=in_flash)
