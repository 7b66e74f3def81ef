"""TVM tensor intrinsics of the LLVM CPU targets: NEON multiply-by-lane (``neon``), AVX-512 VNNI
(``x86_vnni``) and x86 requantization (``x86_requant``), made for the register tiles of ``tiles``.
"""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
import types

import tvm

def load_tensor_intrinsics(families: tuple[str, ...]) -> None:
    """Register only the tensor intrinsics of ``families`` (e.g. ``("arm_cpu",)``).

    MetaSchedule imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__`` parses the
    intrinsics of every backend (CUDA, ROCm, Hexagon, ...): 30-90 s per process on this 2-core
    machine, paid by the tuner and by every builder worker. The package is registered here
    without running its ``__init__`` and only the families the target can use are imported
    (x86: ~1 s, arm_cpu incl. SDOT/UDOT: ~4 s). Idempotent; also the builder workers' initializer.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name, "tensor intrinsics, loaded per family by sandglass")
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = name
        sys.modules[name] = package
        import tvm.s_tir

        tvm.s_tir.tensor_intrin = package
    for family in families:
        importlib.import_module(f"{name}.{family}")
    # and ours, which tuning records name too (registered on import / by register_all)
    if "arm_cpu" in families:
        from compile.llvm_cpu.intrin.neon import register_all
        register_all()
    if "x86" in families:
        importlib.import_module("compile.llvm_cpu.intrin.x86_vnni")
        importlib.import_module("compile.llvm_cpu.intrin.x86_requant")


def intrinsic_families(target: tvm.target.Target) -> tuple[str, ...]:
    """Tensor-intrinsic families a CPU target can use: arm_cpu for aarch64, x86 for x86-64."""
    triple = str(target.attrs.get("mtriple", "")) or platform.machine()
    return ("arm_cpu",) if triple.startswith(("aarch64", "arm64")) else ("x86",)
