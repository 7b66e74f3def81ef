"""Hashes of the code sandglass generates for the committed models, one line per artifact:

    python scripts/codegen_hashes.py [--models m1,m2] [--targets t1,t2] > hashes.txt

* every CPU target (host, rpi3, rpi4, rpi5): the scheduled TIR of every kernel (after fusion and
  the default schedules, before TVM's lowering), the LLVM IR of the built kernels (addresses
  masked), and the C of the static entry point without its comments;
* every Cortex-M board: each generated file of its firmware project (``model.c``, ``model.h``,
  the linker script, the Makefile, ...) without its comments, the sample inputs excepted.

Two checkouts that print the same lines generate the same code: a refactoring that claims "no
behaviour change" is checked by diffing this output before and after it. The host target is
``-mcpu=native``, so host lines compare on one machine only.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ("mobilenext_mcu_m100", "mobilenext_mcu_m050", "mobilenext_mcu_m025", "mobilenetv2_mcu")
CPU_TARGETS = ("host", "rpi3", "rpi4", "rpi5")
CORTEXM_TARGETS = ("mps2-an386", "mps2-an500", "mps3-an547", "stm32f746g-disco",
                   "nucleo-l4r5zi", "nrf52840dk")
SKIPPED_FILES = {"inputs.c"}   # the samples, not generated code


def _without_comments(c_text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", c_text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _code(path: Path) -> str:
    """The text of a generated file without its comments (they name source files, which a
    refactoring may move), so that the hash changes only with the code."""
    text = path.read_text()
    if path.suffix in (".c", ".h", ".ld"):
        text = _without_comments(text)
    elif path.name == "Makefile":
        text = re.sub(r"(^|\s)#[^\n]*", r"\1", text)
    return text


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:16]


def cpu_hashes(mod, target_name: str) -> dict[str, str]:
    import tvm

    from compile.llvm_cpu import static_main
    from compile.llvm_cpu.schedules import default_schedule
    from compile.targets import get_target, resolve_native
    from compile.llvm_cpu.pipeline import BUILD_CONFIG, compile_relax_module, fusion_passes

    target = tvm.target.Target(resolve_native(get_target(target_name).tvm))
    with target, tvm.transform.PassContext(opt_level=3, config=BUILD_CONFIG):
        scheduled = tvm.transform.Sequential([*fusion_passes(target), default_schedule()])(mod)
    built = compile_relax_module(mod, target)
    # TVM names LLVM's alias-analysis (TBAA) nodes after buffer addresses in memory: masked
    llvm_ir = re.sub(r"0x[0-9a-f]+", "0x?", "\n".join(
        m.inspect_source("ll") for m in built.executable.mod.imports))
    try:
        plan = static_main.plan(built.main)
        blob, offsets = static_main.const_blob(plan.consts)
        entry = _sha(_without_comments(static_main.c_source(plan, "static_main_consts.bin",
                                                             offsets))) + " consts " + _sha(blob)
    except static_main.StaticMainError:
        entry = "none"
    return {"scheduled-tir": _sha(scheduled.script()), "llvm-ir": _sha(llvm_ir),
            "static-entry-c": entry}


def cortexm_hashes(mod, target_name: str) -> dict[str, str]:
    import numpy as np

    from compile.backends.cortexm import project
    from compile.backends.cortexm.graph import lower_model
    from compile.targets import get_target

    graph = lower_model(mod)
    x = graph.tensors[graph.input]
    with tempfile.TemporaryDirectory(prefix="sandglass-hashes-") as tmp:
        project.write_project(graph, get_target(target_name), Path(tmp),
                              np.zeros((1, *x.shape[1:]), x.dtype))
        return {f"firmware/{p.name}": _sha(_code(p)) for p in sorted(Path(tmp).iterdir())
                if p.is_file() and p.name not in SKIPPED_FILES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default=",".join(CPU_TARGETS + CORTEXM_TARGETS))
    args = parser.parse_args(argv)
    from compile.pipeline import compile_model

    for model in args.models.split(","):
        path = REPO / "models" / f"{model}_int8.tflite"
        if not path.is_file():
            print(f"error: no committed model {path.relative_to(REPO)}", file=sys.stderr)
            return 2
        for target in args.targets.split(","):
            if target not in CPU_TARGETS + CORTEXM_TARGETS:
                print(f"error: unknown target {target!r}", file=sys.stderr)
                return 2
            mod, _ = compile_model(path)
            hashes = (cpu_hashes if target in CPU_TARGETS else cortexm_hashes)(mod, target)
            for artifact, digest in hashes.items():
                print(f"{model} {target} {artifact} {digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
