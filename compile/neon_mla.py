"""A NEON tensor intrinsic for 1x1 int8 convs on CPUs without the dot-product extension
(Cortex-A72 / A53: Raspberry Pi 4 / 3): SMLAL by lane.

``compile.vector_arith.MLA_BLOCK`` multiplies int16 weights [K, C] with an int16 copy of the
input. Vectorized over output channels, TVM broadcasts one input value per multiply (an LD1R
per column per input channel, plus its address). This intrinsic instead loads ``DEPTH`` input
channels of a column as one vector and multiplies the weights by each of its lanes
(``SMLAL Vd.4S, Vn.4H, Vm.H[lane]``, the form of XNNPACK's ``*-neon-mlal-lane`` kernels):
per input channel, one weight load per four output channels and one SMLAL per four output
channels and column.

The implementation is generated TVMScript (each lane index must be a constant of the
``shufflevector``), registered once per tile shape as ``sandglass_smlal_lane_{cols}x{depth}x{lanes}``.
LLVM selects ``smull``/``smlal`` by element from ``llvm.aarch64.neon.smull`` of a lane splat.
Arm ARM SMLAL (by element): https://developer.arm.com/documentation/ddi0602/latest/SIMD-FP-Instructions/SMLAL--SMLAL2--by-element-
"""
from __future__ import annotations

import functools

import tvm
from tvm.s_tir import TensorIntrin

DEPTH = 8             # input channels per vector of the input (eight int16 lanes)
GROUP = 4             # output channels per SMLAL (four int32 lanes)
COLUMNS = (4, 2, 1)   # tile shapes compile.schedules uses (its COLUMN_TILE, CHANNEL_TILE)
LANES = (16, 8, 4)

_DESC = '''
@T.prim_func(s_tir=True)
def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    sa = T.int32()
    sb = T.int32()
    sc = T.int32()
    A = T.match_buffer(a, ({cols}, {depth}), "int16", offset_factor=1, strides=[sa, 1])
    B = T.match_buffer(b, ({depth}, {lanes}), "int16", offset_factor=1, strides=[sb, 1])
    C = T.match_buffer(c, ({cols}, {lanes}), "int32", offset_factor=1, strides=[sc, 1])
    with T.sblock("root"):
        T.reads(C[0:{cols}, 0:{lanes}], A[0:{cols}, 0:{depth}], B[0:{depth}, 0:{lanes}])
        T.writes(C[0:{cols}, 0:{lanes}])
        for j, k, o in T.grid({cols}, {depth}, {lanes}):
            with T.sblock("update"):
                vj, vo, vk = T.axis.remap("SSR", [j, o, k])
                C[vj, vo] = C[vj, vo] + T.Cast("int32", A[vj, vk]) * T.Cast("int32", B[vk, vo])
'''

_IMPL = '''
@T.prim_func(s_tir=True)
def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    sa = T.int32()
    sb = T.int32()
    sc = T.int32()
    A = T.match_buffer(a, ({cols}, {depth}), "int16", offset_factor=1, strides=[sa, 1])
    B = T.match_buffer(b, ({depth}, {lanes}), "int16", offset_factor=1, strides=[sb, 1])
    C = T.match_buffer(c, ({cols}, {lanes}), "int32", offset_factor=1, strides=[sc, 1])
    with T.sblock("root"):
        T.reads(C[0:{cols}, 0:{lanes}], A[0:{cols}, 0:{depth}], B[0:{depth}, 0:{lanes}])
        T.writes(C[0:{cols}, 0:{lanes}])
{body}
'''

_STEP = ('        C[{j}, T.ramp({o}, 1, 4)] = C[{j}, T.ramp({o}, 1, 4)] + T.call_llvm_pure_intrin('
         '"int32x4", "llvm.aarch64.neon.smull", B[{k}, T.ramp({o}, 1, 4)], '
         'T.Shuffle([A[{j}, T.ramp(0, 1, {depth})]], [{k}, {k}, {k}, {k}]))')


def _parse(source: str) -> tvm.tirx.PrimFunc:
    from tvm.script import tirx as T

    return tvm.script.from_source(source, extra_vars={"T": T})


@functools.lru_cache(maxsize=None)
def smlal_lane_intrin(cols: int, lanes: int) -> str:
    """Register (once) and name the intrinsic for a tile of ``cols`` columns x ``DEPTH`` input
    channels x ``lanes`` output channels (a multiple of ``GROUP``): ``C[j, o] += A[j, k] * B[k, o]``
    in int32 with int16 A (input) and B (weights)."""
    if lanes % GROUP:
        raise ValueError(f"lanes must be a multiple of {GROUP}, got {lanes}")
    name = f"sandglass_smlal_lane_{cols}x{DEPTH}x{lanes}"
    shape = {"cols": cols, "depth": DEPTH, "lanes": lanes}
    # k outermost: the weights of one input channel are loaded once for all columns
    body = "\n".join(_STEP.format(j=j, k=k, o=o, depth=DEPTH)
                     for k in range(DEPTH) for j in range(cols) for o in range(0, lanes, GROUP))
    TensorIntrin.register(name, _parse(_DESC.format(**shape)),
                          _parse(_IMPL.format(body=body, **shape)), override=True)
    return name


def register_all() -> None:
    """Register every tile shape ``compile.schedules`` uses (before replaying tuning records,
    which name the intrinsic)."""
    for cols in COLUMNS:
        for lanes in LANES:
            smlal_lane_intrin(cols, lanes)
