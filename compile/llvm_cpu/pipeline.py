"""The LLVM CPU build (host x86 and aarch64), in the shape of TVM's ``relax/backend/*/pipeline.py``:

1. ``fusion_passes``: library dispatch, the target's integer-arithmetic rewrites
   (``compile.llvm_cpu.rewrites``), legalization and fusion into one TIR kernel per fused group
   -- the kernels MetaSchedule tunes (``fused_tir``) and the build schedules;
2. the tuned schedules of a MetaSchedule database, where it has a record, then
   ``compile.llvm_cpu.schedules.default_schedule`` for every other kernel;
3. TVM's CPU dataflow lowering and finalization (memory planning of ``main``).

``compile_relax_module`` returns the executable and the memory-planned ``main`` that
``compile.llvm_cpu.static_main`` turns into the library's static entry point.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import tvm
from tvm import relax

from compile.llvm_cpu.intrin import intrinsic_families, load_tensor_intrinsics

# No argument asserts inside the kernels (~200 instructions per kernel call): only main() calls
# them, with the tensors it allocated; main() itself still checks the caller's input (Relax's
# shape/dtype checks are not TIR asserts; tests/compile/llvm_cpu/test_schedules.py checks).
BUILD_CONFIG = {"tirx.disable_assert": True}


class Built(NamedTuple):
    executable: tvm.runtime.Executable
    main: relax.Function   # the memory-planned Relax main


def fusion_passes(target: tvm.target.Target) -> list:
    """Library dispatch, legalization and fusion: the kernels MetaSchedule tunes and the
    build schedules (``fused_tir`` and ``compile_relax_module`` share them, so that the tuned
    workloads are found again at build time)."""
    from tvm import relax
    from tvm.relax import pipeline

    from compile.llvm_cpu.rewrites import (FoldBiasIntoRequant, NarrowConstants, NeonRequant,
                                      MergeClips, RoundingNudge, SmallInputHighMul, VnniConvs,
                                      X86Requant, conv2d_legalizer, has_avx2, has_vnni,
                                      is_aarch64)

    try:
        dispatch = list(pipeline.library_dispatch_passes(target))
    except (ValueError, AttributeError):
        dispatch = []
    return [
        *dispatch,
        # same-shape reshapes (the importer's, around the identity multiplier's slices): fused
        # into a kernel they turn its indices into divisions TVM's vectorizer cannot resolve
        relax.transform.RemoveRedundantReshape(),
        *([NeonRequant] if is_aarch64(target) else []),
        *([SmallInputHighMul] if has_avx2(target) else []),
        *([VnniConvs] if has_vnni(target) else []),
        FoldBiasIntoRequant, RoundingNudge,
        *([X86Requant, MergeClips] if has_avx2(target) else []),
        relax.transform.LegalizeOps({"relax.nn.conv2d": conv2d_legalizer(target)}),
        relax.transform.FoldConstant(),
        NarrowConstants,            # after FoldConstant, which would widen them again
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def fused_tir(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalized + fused TIR kernels, as MetaSchedule extracts its tasks from them."""
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(fusion_passes(target))(mod)


def compile_relax_module(mod: tvm.IRModule, target: tvm.target.Target,
                         database=None) -> Built:
    """``tvm.compile`` for the CPU targets with schedules: the tuned ones of ``database`` (a
    MetaSchedule database) where it has a record, ``compile.llvm_cpu.schedules.default_schedule``
    for every other kernel."""
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from compile.llvm_cpu.schedules import default_schedule

    if database is not None:   # its schedules may tensorize with intrinsics registered by name
        load_tensor_intrinsics(intrinsic_families(target))

    @tvm.transform.module_pass(opt_level=0, name="sandglass.CPUBuild")
    def build_pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        # built here, inside the target context: the pass reads the current target
        apply_db = [relax.transform.MetaScheduleApplyDatabase()] if database is not None else []
        mod = tvm.transform.Sequential([
            *fusion_passes(target), *apply_db, default_schedule(),
            *cpu.dataflow_lower_passes(target), *cpu.finalize_passes(target),
        ])(mod)
        planned.append(mod["main"])
        return mod

    planned: list = []   # the pass runs inside relax.build, which returns only the executable
    with target, (database if database is not None else contextlib.nullcontext()), \
            tvm.transform.PassContext(opt_level=3, config=BUILD_CONFIG):
        executable = relax.build(mod, target=target, relax_pipeline=build_pipeline,
                                 exec_mode="compiled")   # main() as native code: no VM interpreter
    return Built(executable, planned[0])
