"""Per-kernel profile: ``python compile/profile.py --target rpi4 --bundle DIR [--repeat K] [--top N]
[--json prof.json]`` (aarch64 bundle: instructions under qemu) or ``--target host --model M.tflite``
(this machine: microseconds).

Host: every fused kernel of the model, with its default schedule (``compile.llvm_cpu.schedules``), is
compiled alone and timed alone (TVM's ``time_evaluator``, median of repeats, random int8 inputs)
and multiplied by its calls per inference; the whole model's median (through its static
entry point, ``compile.llvm_cpu.static_main``) is printed below for comparison (the difference: calls,
and caches colder than in a kernel's own loop).

Runs the bundle's ``run.py`` with K and with 2K inferences under ``qemu-aarch64 -cpu <board
cpu>`` in the arm64 userland with our counting plugin in per-block mode
(``compile/backends/aarch64/qemu_plugin/insncount.c``, ``blocks=on``), maps every executed block to the symbol of
``model.so`` it lies in (the guest's ``/proc/self/maps`` + ``nm``), and prints each kernel's
instructions per inference, (2K run - K run) / K as in ``compile/bench.py`` (start-up and
first-call costs cancel out), largest first. One kernel = one fused TIR function of the model;
calls of the same kernel add up. Python and the TVM runtime are one line, ``(outside the model
library)``. *Instructions*, not cycles: QEMU models no timing.
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
OUTSIDE = "(outside the model library)"

# Runs run.py as __main__, then keeps the guest's address map (qemu-user shows guest addresses).
WRAPPER = """import runpy, sys
maps, sys.argv = sys.argv[1], sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    open(maps, "w").write(open("/proc/self/maps").read())
"""


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


def kernel_profile(blocks: list[tuple[int, int, int]], maps: str, library: Path,
                   symbols: list[tuple[int, str]]) -> collections.Counter:
    """Instructions per symbol of ``library`` (and ``OUTSIDE``) from (address, instructions,
    executions) of the executed blocks."""
    base, first, end = _library_base(maps, library)
    starts = [a for a, _ in symbols]
    counts: collections.Counter = collections.Counter()
    for address, n_insns, executions in blocks:
        if not first <= address < end:
            counts[OUTSIDE] += n_insns * executions
            continue
        i = bisect.bisect_right(starts, address - base) - 1
        name = symbols[i][1] if i >= 0 else "?"
        counts[name.removesuffix("_compute_")] += n_insns * executions
    return counts


def _profile_run(target, bundle: Path, manifest: dict, repeat: int, plugin: Path,
                 tmp: Path) -> collections.Counter:
    """Instructions per symbol of the model library in one run of ``repeat`` inferences."""
    from compile.backends.aarch64.counting import counted_run

    maps = tmp / "maps.txt"
    output = counted_run(target, [str(tmp / "wrap.py"), str(maps),
                                  str(bundle / manifest.get("runner", "run.py")),
                                  "--input", str(tmp / "x.npy"), "--repeat", str(repeat)],
                         plugin, tmp, blocks=True)
    blocks = []
    for line in output.splitlines():
        if line.startswith("tb "):
            _, address, n_insns, executions = line.split()
            blocks.append((int(address, 16), int(n_insns), int(executions)))
    library = bundle / manifest.get("library", LIBRARY)
    return kernel_profile(blocks, maps.read_text(), library, _symbols(library))


def profile_bundle(target, bundle: Path, repeat: int) -> dict:
    """Instructions per inference of every kernel: runs of ``repeat`` and ``2 * repeat``."""
    import numpy as np

    from compile.backends.aarch64.counting import counting_plugin, zero_sample

    plugin = counting_plugin()
    bundle = Path(bundle).absolute()
    manifest = json.loads((bundle / "bundle.json").read_text())
    with tempfile.TemporaryDirectory(prefix="sandglass-prof-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", zero_sample(bundle))
        (tmp / "wrap.py").write_text(WRAPPER)
        once, twice = (_profile_run(target, bundle, manifest, k, plugin, tmp)
                       for k in (repeat, 2 * repeat))
    per = {name: round((twice[name] - once[name]) / repeat) for name in twice}
    kernels = dict(sorted(((n, c) for n, c in per.items() if n != OUTSIDE),
                          key=lambda item: -item[1]))
    return {"unit": "guest instructions per inference (qemu TCG plugin, not cycles)",
            "repeat": repeat, "model_library": sum(kernels.values()),
            "outside": per.get(OUTSIDE, 0), "kernels": kernels}


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
                        help="a linux-aarch64 board (rpi3, rpi4, rpi5), or host")
    parser.add_argument("--bundle", type=Path, help="aarch64: bundle from compile/build.py")
    parser.add_argument("--model", type=Path, help="host: the int8 .tflite")
    parser.add_argument("--repeat", type=int, default=10, help="inferences in the profiled run")
    parser.add_argument("--top", type=int, default=25, help="kernels to print")
    parser.add_argument("--json", type=Path, help="write the whole profile here")
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
    if target.kind != "linux-aarch64":
        raise cli.UserError(f"profile.py profiles host models and linux-aarch64 bundles; "
                            f"{target.name} is {target.kind} (Cortex-M: make run "
                            f"EXTRA_CFLAGS=-DSG_PROFILE)")
    if args.bundle is None or not (args.bundle / "bundle.json").is_file():
        raise cli.UserError(f"{args.bundle or '--bundle'} is no bundle (no bundle.json)")
    result = profile_bundle(target, args.bundle, args.repeat)
    total = result["model_library"]
    print(f"{'instructions':>12} {'share':>6}  kernel ({target.name}, per inference)")
    for name, n in list(result["kernels"].items())[:args.top]:
        print(f"{n:>12,} {100 * n / total:>5.1f}%  {name}")
    print(f"{total:>12,} 100.0%  all of {LIBRARY}")
    print(f"{result['outside']:>12,}         {OUTSIDE}")
    if args.json:
        cli.save_json(args.json, {"target": target.name, "bundle": str(args.bundle.absolute()),
                                  **result})
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(run))
