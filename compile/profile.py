"""Per-kernel profile: ``python compile/profile.py --target T --bundle DIR [--repeat K] [--top N]
[--json prof.json]`` (``--steps [--against DIR]``: a Cortex-M bundle's every call) (a Raspberry Pi or Cortex-M bundle: instructions and estimated cycles under
QEMU) or ``--target host --model M.tflite`` (this machine: microseconds).

Host: every fused kernel of the model, with its default schedule (``compile.llvm_cpu.schedules``), is
compiled alone and timed alone (TVM's ``time_evaluator``, median of repeats, random int8 inputs)
and multiplied by its calls per inference; the whole model's median (through its static
entry point, ``compile.llvm_cpu.static_main``) is printed below for comparison (the difference: calls,
and caches colder than in a kernel's own loop).

Raspberry Pi: loads the bundle with its ``run.py`` under ``qemu-aarch64 -cpu <board cpu>`` in the
arm64 userland and runs K inferences between the trace plugin's marks (``compile/cyclemodel/plugin``,
as ``compile/bench.py`` does), maps every executed block to the symbol of ``model.so`` it lies in
(the guest's ``/proc/self/maps`` + ``nm``), and divides by K. Python and the TVM runtime are one
line, ``(outside the model library)``.

Cortex-M: runs the firmware on one input on its QEMU board (a real board's on the QEMU board with
the same core) with the trace plugin between the model's entry and its return, and maps every
block to the ELF's function it lies in (kernels, and the helpers they call, by name).

``--steps``: the firmware built with -DSG_PROFILE counts each kernel call of one inference in
its place (main.c's ``sg:prof`` lines, instructions under QEMU); ``--against DIR`` puts another
bundle of the same model beside it, call by call (a tuned bundle against the untuned one).

Per kernel: instructions, estimated core cycles on the board's CPU (``compile.cyclemodel``:
llvm-mca per block plus taken branches; flash wait states are in ``run.py``'s estimate, not
split per kernel) and bytes loaded + stored; largest first. One kernel = one fused TIR function
of the model; calls of the same kernel add up.
"""
from __future__ import annotations

import bisect
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compile import cli  # noqa: E402
from compile.errors import BackendError  # noqa: E402

LIBRARY = "model.so"
UNIT = ("per inference: guest instructions (QEMU trace plugin) and estimated core cycles "
        "(compile.cyclemodel: llvm-mca + taken branches, flash stalls not included)")
OUTSIDE = "(outside the model library)"


def _symbols(library: Path, nm: str = "aarch64-linux-gnu-nm") -> list[tuple[int, str]]:
    """(address, name) of the library's functions, sorted by address."""
    try:
        out = subprocess.run([nm, "-n", "--defined-only", str(library)], capture_output=True,
                             text=True, check=True).stdout
    except FileNotFoundError:
        raise cli.UserError(f"{nm} not found: apt-get install binutils-aarch64-linux-gnu") from None
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            found.append((int(parts[0], 16), parts[2]))
    return found


def _library_base(maps: str, library: Path) -> tuple[int, int, int]:
    """(load base, first, end) guest addresses of ``library`` in a ``/proc/self/maps`` text."""
    spans = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) >= 6 and Path(fields[5]).name == library.name:
            lo, hi = (int(v, 16) for v in fields[0].split("-"))
            spans.append((lo, hi, int(fields[2], 16)))
    if not spans:
        raise BackendError(f"{library.name} was not loaded by the bundle's run.py")
    return min(lo - off for lo, _, off in spans), min(s[0] for s in spans), max(s[1] for s in spans)


def attribute(trace, timing, name_of, per: int) -> dict[str, dict]:
    """Per name (``name_of(block address)``): instructions, estimated core cycles and bytes
    loaded/stored per inference, from a trace of ``per`` inferences; largest first."""
    from compile.cyclemodel import block_cycles

    cycles = block_cycles(trace, timing)
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for key, b in trace.blocks.items():
        if not b.executions:
            continue
        row = rows[name_of(b.vaddr)]
        row["instructions"] += b.executions * b.instructions
        row["cycles_estimate"] += cycles[key]
        # a block that moves no data still gives its row both keys
        row["load_bytes"] += sum(t.load_bytes for t in b.traffic.values())
        row["store_bytes"] += sum(t.store_bytes for t in b.traffic.values())
    table = {name: {k: round(v / per) for k, v in row.items()} for name, row in rows.items()}
    return dict(sorted(table.items(), key=lambda item: -item[1]["cycles_estimate"]))


def symbol_namer(symbols: list[tuple[int, str]], base: int = 0,
                 span: tuple[int, int] | None = None):
    """Address -> the function it lies in (``OUTSIDE`` when outside ``span``)."""
    starts = [a for a, _ in symbols]

    def name_of(address: int) -> str:
        if span is not None and not span[0] <= address < span[1]:
            return OUTSIDE
        i = bisect.bisect_right(starts, address - base) - 1
        return symbols[i][1].removesuffix("_compute_") if i >= 0 else "?"
    return name_of


def _summary(kernels: dict[str, dict], unit: str, **extra) -> dict:
    inside = {n: r for n, r in kernels.items() if n != OUTSIDE}
    total = {k: sum(r[k] for r in inside.values()) for k in ("instructions", "cycles_estimate")}
    return {"unit": unit, **extra, "model": total, "outside": kernels.get(OUTSIDE),
            "kernels": inside}


def profile_bundle(target, bundle: Path, repeat: int) -> dict:
    """Per kernel and inference on a Raspberry Pi: instructions, estimated cycles and bytes
    moved, from ``repeat`` inferences counted between the trace plugin's marks."""
    import numpy as np

    from compile.backends.aarch64.counting import counted_run, tvm_program, zero_sample
    from compile.cyclemodel import timing_of

    timing = timing_of(target)
    bundle = Path(bundle).absolute()
    manifest = json.loads((bundle / "bundle.json").read_text())
    with tempfile.TemporaryDirectory(prefix="sandglass-prof-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", zero_sample(bundle))
        maps = tmp / "maps.txt"
        trace = counted_run(target, tvm_program(tmp, bundle, manifest.get("runner", "run.py"),
                                                repeat, tmp / "x.npy", maps), tmp, mem=True)
        maps_text = maps.read_text()
    library = bundle / manifest.get("library", LIBRARY)
    base, first, end = _library_base(maps_text, library)
    kernels = attribute(trace, timing, symbol_namer(_symbols(library), base, (first, end)),
                        repeat)
    return _summary(kernels, UNIT, repeat=repeat, board=target.name, cpu=timing.cpu.name)


def _inlined_into(elf: Path, caller: str, addresses: set[int], addr2line: str) -> dict[int, str]:
    """Address -> the function whose code it is, as called from ``caller``: the kernels are
    static and inlined into ``sg_model_run``, so the name comes from the debug info's inlining
    chain (innermost first): the entry just inside ``caller``, else the outermost function."""
    ordered = sorted(addresses)
    out = subprocess.run([addr2line, "-a", "-f", "-i", "-e", str(elf),
                          *(f"{a:x}" for a in ordered)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    chains: list[list[str]] = []
    position = 0
    for line in out:                # "0xADDR", then (function, file:line) pairs
        if line.startswith("0x"):
            chains.append([])
            position = 0
        else:
            if position % 2 == 0:
                chains[-1].append(line.strip())
            position += 1
    names = {}
    for address, chain in zip(ordered, chains):
        if caller in chain and chain.index(caller) > 0:
            names[address] = chain[chain.index(caller) - 1]
        else:
            names[address] = chain[-1] if chain else "?"
    return names


def profile_firmware(target, bundle: Path) -> dict:
    """Per kernel of one inference of a Cortex-M bundle, on its QEMU board (a real board's on
    the QEMU board with the same core): instructions, estimated cycles, bytes moved."""
    import numpy as np

    from compile.backends.cortexm import emulated_project, project, run_project
    from compile.cyclemodel import timing_of

    timing = timing_of(target)
    manifest = json.loads((Path(bundle) / "bundle.json").read_text())
    spec = manifest["model"]["input"]
    with emulated_project(bundle, manifest, target) as (proj, emulator):
        x = np.zeros((1, *spec["shape"][1:]), spec["dtype"])
        _, _, trace = run_project(proj, emulator, x, float(emulator["run"].get("timeout_s", 300)),
                                  traced=True, extra_cflags="-g")   # -g: same code, + line info
        names = _inlined_into(proj / "build" / "firmware.elf", "sg_model_run",
                              {b.vaddr for b in trace.blocks.values()},
                              project.binutil(emulator, "addr2line"))
    kernels = attribute(trace, timing, names.__getitem__, max(trace.windows, 1))
    return _summary(kernels, UNIT, board=target.name, cpu=timing.cpu.name,
                    emulated_on=emulator.name)


def profile_steps(target, bundle: Path) -> dict:
    """Instructions of every kernel call of one inference of a Cortex-M bundle, each in its
    place in the model (the firmware built with -DSG_PROFILE: main.c's ``sg:prof`` lines)."""
    import numpy as np

    from compile.backends.cortexm import emulated_project, run_project

    manifest = json.loads((Path(bundle) / "bundle.json").read_text())
    if "step_kernels" not in manifest:
        raise cli.UserError(f"{bundle} is no Cortex-M bundle with its steps in bundle.json "
                            "(build it again)")
    spec = manifest["model"]["input"]
    with emulated_project(bundle, manifest, target) as (proj, emulator):
        x = np.zeros((1, *spec["shape"][1:]), spec["dtype"])
        _, summary, _ = run_project(proj, emulator, x, float(emulator["run"].get("timeout_s", 300)),
                                    traced=False, extra_cflags="-DSG_PROFILE")
    tuned = {k["kernel"]: k["choice"] for k in (manifest.get("tuned") or {}).get("kernels", [])}
    # -icount shift=0 runs one instruction per ns: main.c reads SysTick, so every count is a
    # whole number of ticks of this many instructions
    tick = 1e9 / emulator["clock_hz"]
    return {"board": target.name, "emulated_on": emulator.name, "tick": tick,
            "unit": "instructions (QEMU -icount), per call, one inference",
            "steps": [{"kernel": k, "instructions": n, "tuned": tuned.get(k)}
                      for k, n in zip(manifest["step_kernels"], summary["steps"])]}


def print_steps(this: dict, against: dict | None, top: int) -> None:
    """The calls, largest first; with ``against``, its count beside each and the change."""
    rows = list(enumerate(this["steps"]))
    if against is not None:
        if [s["kernel"] for s in against["steps"]] != [s["kernel"] for s in this["steps"]]:
            raise cli.UserError("--against: the two bundles do not run the same kernel calls "
                                "(not the same model?)")
    rows.sort(key=lambda r: -r[1]["instructions"])
    head = f"{'step':>4} {'instructions':>13}"
    if against is not None:
        head += f" {'against':>13} {'change':>8}"
    print(f"{head}  kernel ({this['board']}, {this['unit']})")
    for i, step in rows[:top]:
        line = f"{i:>4} {step['instructions']:>13,}"
        if against is not None:
            other = against["steps"][i]["instructions"]
            line += f" {other:>13,} {(step['instructions'] / other - 1) * 100:>+7.1f}%"
        tuned = step["tuned"]
        print(f"{line}  {step['kernel']}" + (f"  (tuned: {tuned})" if tuned else ""))
    total = sum(s["instructions"] for s in this["steps"])
    line = f"{'all':>4} {total:>13,}"
    if against is not None:
        other = sum(s["instructions"] for s in against["steps"])
        line += f" {other:>13,} {(total / other - 1) * 100:>+7.1f}%"
        # each count is read off the tick counter at both ends, so it is off by less than
        # one tick, and two counts of the same work differ by less than two
        noise = 2 * this["tick"]
        slower = [i for i, s in enumerate(this["steps"])
                  if s["instructions"] > against["steps"][i]["instructions"] + noise]
        print(f"{line}  all calls; {len(slower)} of {len(rows)} calls more than against by "
              f"more than two counter ticks ({noise:g} instructions)")
    else:
        print(f"{line}  all calls")


def profile_host(model: Path, repeat: int) -> dict:
    """Microseconds per inference of every kernel of ``model``, each compiled and timed alone."""
    import os
    import numpy as np

    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from compile.llvm_cpu import static_main
    from compile.measure import median_seconds
    from compile.frontend import example_input
    from compile.pipeline import compile_model
    from compile.llvm_cpu.schedules import CPUKernelRule
    from compile.targets import get_target, resolve_native
    from compile.llvm_cpu.pipeline import BUILD_CONFIG, compile_relax_module, fused_tir

    mod, info = compile_model(model)
    target = tvm.target.Target(resolve_native(get_target("host").tvm))
    fused = fused_tir(mod, target)
    calls = _kernel_calls(fused["main"])
    dev, rng, kernels, loops = tvm.cpu(), np.random.default_rng(0), {}, {}
    for gvar, func in fused.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or not calls[gvar.name_hint]:
            continue
        loops[gvar.name_hint] = _reductions(func)
        with target:
            sch = CPUKernelRule().apply(func, target, False)
        func = (sch.mod["main"] if sch is not None else func).with_attr("global_symbol", "main")
        with tvm.transform.PassContext(opt_level=3, config=BUILD_CONFIG):
            kernel = tvm.compile(tvm.IRModule({"main": func}), target=target).mod
        args = [tvm.runtime.tensor(rng.integers(-3, 4, [int(d) for d in a.shape]).astype(
            str(a.dtype)), dev) for a in ms.arg_info.ArgInfo.from_prim_func(func)]
        seconds = kernel.time_evaluator("main", dev, number=100, repeat=repeat)(*args).median
        kernels[gvar.name_hint] = round(seconds * calls[gvar.name_hint] * 1e6, 3)
    main, _ = static_main.host_entry(compile_relax_module(mod, target), info.output.shape,
                                     info.output.dtype)
    x = tvm.runtime.tensor(example_input(info, 1)[0][None])
    whole = median_seconds(lambda: main(x), 20 * repeat)
    kernels = dict(sorted(kernels.items(), key=lambda item: -item[1]))
    return {"unit": "microseconds per inference (this machine, 1 thread, kernels timed alone)",
            "repeat": repeat, "model_library": round(sum(kernels.values()), 3),
            "whole_model": round(whole * 1e6, 3), "kernels": kernels,
            "reductions": {name: loops[name] for name in kernels}}


def _kernel_calls(main) -> collections.Counter:
    """How often the Relax ``main`` calls each TIR kernel (``R.call_tir``), by kernel name."""
    import tvm
    import tvm_ffi
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    calls: collections.Counter = collections.Counter()

    def visit(call):
        if call.op.same_as(call_tir):
            calls[call.args[0].name_hint] += 1

    tvm_ffi.structural_walk(main.body, [(relax.Call, visit)])
    return calls


def _reductions(func) -> str:
    """A kernel's reduction blocks with their extents, e.g. ``conv2d_vnni[1,32,32,32,8]`` (N, H,
    W, C of the output, then the reduced axes: input channels, or a depthwise conv's window
    rows), or ``-`` for an injective kernel."""
    from tvm import s_tir

    from compile.llvm_cpu.schedules import is_reduction

    sch = s_tir.Schedule(func)
    found = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(block)
        if is_reduction(sch, block):
            found.append(f"{stmt.name_hint}[{','.join(str(int(iv.dom.extent)) for iv in stmt.iter_vars)}]")
    return " ".join(found) or "-"


def run(argv: Sequence[str] | None = None) -> int:
    from compile.targets import get_target

    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--target", required=True,
                        help="a Raspberry Pi (rpi3/4/5), a Cortex-M board, or host")
    parser.add_argument("--bundle", type=Path, help="Pi / Cortex-M: bundle from compile/build.py")
    parser.add_argument("--model", type=Path, help="host: the int8 .tflite")
    parser.add_argument("--repeat", type=int, default=10, help="inferences in the profiled run")
    parser.add_argument("--top", type=int, default=25, help="kernels to print")
    parser.add_argument("--json", type=Path, help="write the whole profile here")
    parser.add_argument("--steps", action="store_true",
                        help="Cortex-M: instructions of every kernel call in its place "
                             "(-DSG_PROFILE), not per function")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="with --steps: another bundle of the same model (e.g. untuned), "
                             "its counts beside")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.top < 1:
        raise cli.UserError("--repeat and --top must be >= 1")
    target = get_target(args.target)
    if target.kind == "host":
        if args.model is None or not args.model.is_file():
            raise cli.UserError(f"--target host profiles a model: --model M.tflite "
                                f"({args.model or 'missing'} is no file)")
        result = profile_host(args.model, args.repeat)
        total = result["model_library"]
        print(f"{'us':>12} {'share':>6}  {'reduction':<32} kernel (host, per inference, "
              "each timed alone)")
        for name, us in list(result["kernels"].items())[:args.top]:
            print(f"{us:>12,.2f} {100 * us / total:>5.1f}%  {result['reductions'][name]:<32} "
                  f"{name}")
        print(f"{total:>12,.2f} 100.0%  all kernels")
        print(f"{result['whole_model']:>12,.2f}         the whole model (median)")
        if args.json:
            cli.save_json(args.json, {"target": target.name,
                                      "model": str(args.model.absolute()), **result})
        return 0
    if args.bundle is None or not (args.bundle / "bundle.json").is_file():
        raise cli.UserError(f"{args.bundle or '--bundle'} is no bundle (no bundle.json)")
    if args.steps or args.against:
        if target.kind != "cortex-m" or not args.steps:
            raise cli.UserError("--steps (and --against) profile a Cortex-M bundle's calls")
        if args.against is not None and not (args.against / "bundle.json").is_file():
            raise cli.UserError(f"--against {args.against} is no bundle (no bundle.json)")
        this = profile_steps(target, args.bundle)
        against = profile_steps(target, args.against) if args.against else None
        print_steps(this, against, args.top)
        if args.json:
            cli.save_json(args.json, {"target": target.name, **this,
                                      "against": against})
        return 0
    if target.kind == "linux-aarch64":
        result = profile_bundle(target, args.bundle, args.repeat)
    else:
        result = profile_firmware(target, args.bundle)
    total = result["model"]
    print(f"{'cycles (est.)':>14} {'share':>6} {'instructions':>13} {'bytes moved':>12}  kernel "
          f"({target.name}, {result['cpu']}, per inference)")
    for name, row in list(result["kernels"].items())[:args.top]:
        share = 100 * row["cycles_estimate"] / max(total["cycles_estimate"], 1)
        print(f"{row['cycles_estimate']:>14,} {share:>5.1f}% {row['instructions']:>13,} "
              f"{row['load_bytes'] + row['store_bytes']:>12,}  {name}")
    print(f"{total['cycles_estimate']:>14,} 100.0% {total['instructions']:>13,} {'':>12}  "
          "all kernels")
    if result["outside"]:
        out = result["outside"]
        print(f"{out['cycles_estimate']:>14,} {'':>6} {out['instructions']:>13,} {'':>12}  "
              f"{OUTSIDE}")
    if args.json:
        cli.save_json(args.json, {"target": target.name, "bundle": str(args.bundle.absolute()),
                                  **result})
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(run))
