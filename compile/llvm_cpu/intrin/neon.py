"""NEON tensor intrinsics for 1x1 int8 convs that multiply by vector lane: SMLAL by lane on
CPUs without the dot-product extension (Cortex-A72 / A53: Raspberry Pi 4 / 3), SDOT by lane
with it (Cortex-A76: Raspberry Pi 5).

``compile.llvm_cpu.rewrites.MLA_BLOCK`` multiplies int16 weights [K, C] with an int16 copy of the
input. Vectorized over output channels, TVM broadcasts one input value per multiply (an LD1R
per column per input channel, plus its address). This intrinsic instead loads ``DEPTH`` input
channels of a column as one vector and multiplies the weights by each of its lanes
(``SMLAL Vd.4S, Vn.4H, Vm.H[lane]``, the form of XNNPACK's ``*-neon-mlal-lane`` kernels):
per input channel, one weight load per four output channels and one SMLAL per four output
channels and column.

With the dot-product extension, ``compile.llvm_cpu.rewrites.SDOT_BLOCK`` (weights packed [C/4, K/4,
4, 4]) is tensorized the same way: the 16 input bytes of a column are loaded once and each
group of four is a lane of ``SDOT Vd.4S, Vn.16B, Vm.4B[lane]`` (XNNPACK's ``*-neondot``), instead
of TVM's ``ARM_DOT_4x4_i8_SDOT_INTRIN``, which loads and broadcasts every group of four.

The implementations are generated TVMScript (each lane index must be a constant of the
``shufflevector``), registered once per tile shape as ``sandglass_smlal_lane_{cols}x{depth}x{lanes}``
and ``sandglass_sdot_lane_{cols}x16x{lanes}``. LLVM selects ``smlal`` / ``sdot`` by element from
``llvm.aarch64.neon.smull`` / ``sdot`` of a lane splat.
Arm ARM SMLAL (by element): https://developer.arm.com/documentation/ddi0602/latest/SIMD-FP-Instructions/SMLAL--SMLAL2--by-element-
"""
from __future__ import annotations

import functools

import tvm
from tvm.s_tir import TensorIntrin

DEPTH = 8             # input channels per vector of the input (eight int16 lanes)
GROUP = 4             # output channels per SMLAL (four int32 lanes)

# generated TVMScript: a header shared by each intrinsic's description and implementation
_SMLAL_HEAD = '''
@T.prim_func(s_tir=True)
def {func}(a: T.handle, b: T.handle, c: T.handle) -> None:
    sa = T.int32()
    sb = T.int32()
    sc = T.int32()
    A = T.match_buffer(a, ({cols}, {depth}), "int16", offset_factor=1, strides=[sa, 1])
    B = T.match_buffer(b, ({depth}, {lanes}), "int16", offset_factor=1, strides=[sb, 1])
    C = T.match_buffer(c, ({cols}, {lanes}), "int32", offset_factor=1, strides=[sc, 1])
    with T.sblock("root"):
        T.reads(C[0:{cols}, 0:{lanes}], A[0:{cols}, 0:{depth}], B[0:{depth}, 0:{lanes}])
        T.writes(C[0:{cols}, 0:{lanes}])
'''

_SMLAL_LOOPS = '''        for j, k, o in T.grid({cols}, {depth}, {lanes}):
            with T.sblock("update"):
                vj, vo, vk = T.axis.remap("SSR", [j, o, k])
                C[vj, vo] = C[vj, vo] + T.Cast("int32", A[vj, vk]) * T.Cast("int32", B[vk, vo])
'''

_SMLAL_STEP = ('        C[{j}, T.ramp({o}, 1, 4)] = C[{j}, T.ramp({o}, 1, 4)] + T.call_llvm_pure_intrin('
               '"int32x4", "llvm.aarch64.neon.smull", B[{k}, T.ramp({o}, 1, 4)], '
               'T.Shuffle([A[{j}, T.ramp(0, 1, {depth})]], [{k}, {k}, {k}, {k}]))')


def _register(name: str, head: str, loops: str, body: str, shape: dict) -> None:
    """Register ``name``: description = ``head`` + the scalar ``loops``, implementation =
    ``head`` + the generated vector ``body``."""
    desc = _parse(head.format(func="desc", **shape) + loops.format(**shape))
    impl = _parse(head.format(func="impl", **shape) + body + "\n")
    TensorIntrin.register(name, desc, impl, override=True)


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
    body = "\n".join(_SMLAL_STEP.format(j=j, k=k, o=o, depth=DEPTH)
                     for k in range(DEPTH) for j in range(cols) for o in range(0, lanes, GROUP))
    _register(name, _SMLAL_HEAD, _SMLAL_LOOPS, body, shape)
    return name


_SDOT_HEAD = '''
@T.prim_func(s_tir=True)
def {func}(a: T.handle, b: T.handle, c: T.handle) -> None:
    sa = T.int32()
    sb0 = T.int32()
    sb1 = T.int32()
    sc = T.int32()
    A = T.match_buffer(a, ({cols}, 16), "int8", offset_factor=1, strides=[sa, 1])
    B = T.match_buffer(b, ({groups}, 4, 4, 4), "int8", offset_factor=1, strides=[sb0, sb1, 4, 1])
    C = T.match_buffer(c, ({cols}, {lanes}), "int32", offset_factor=1, strides=[sc, 1])
    with T.sblock("root"):
        T.reads(C[0:{cols}, 0:{lanes}], A[0:{cols}, 0:16], B[0:{groups}, 0:4, 0:4, 0:4])
        T.writes(C[0:{cols}, 0:{lanes}])
'''

_SDOT_LOOPS = '''        for j, ot, oi, kg, ki in T.grid({cols}, {groups}, 4, 4, 4):
            with T.sblock("update"):
                vj = T.axis.spatial({cols}, j)
                vo = T.axis.spatial({lanes}, ot * 4 + oi)
                vk = T.axis.reduce(16, kg * 4 + ki)
                C[vj, vo] = C[vj, vo] + T.Cast("int32", A[vj, vk]) * T.Cast(
                    "int32", B[vo // 4, vk // 4, vo % 4, vk % 4])
'''

_SDOT_STEP = ('        C[{j}, T.ramp({o}, 1, 4)] = T.call_llvm_pure_intrin("int32x4", '
              '"llvm.aarch64.neon.sdot.v4i32.v16i8", C[{j}, T.ramp({o}, 1, 4)], '
              'B.vload([{ot}, {g}, 0, 0], "int8x16"), T.reinterpret("int8x16", T.Shuffle('
              '[T.reinterpret("int32x4", A[{j}, T.ramp(0, 1, 16)])], [{g}, {g}, {g}, {g}])))')


@functools.lru_cache(maxsize=None)
def sdot_lane_intrin(cols: int, lanes: int) -> str:
    """Register (once) and name the SDOT-by-lane intrinsic for a tile of ``cols`` columns x 16
    input channels x ``lanes`` output channels (a multiple of 4) on weights packed [C/4, K/4, 4,
    4]: ``C[j, o] += A[j, k] * B[o // 4, k // 4, o % 4, k % 4]`` in int32 with int8 A and B."""
    if lanes % GROUP:
        raise ValueError(f"lanes must be a multiple of {GROUP}, got {lanes}")
    name = f"sandglass_sdot_lane_{cols}x16x{lanes}"
    shape = {"cols": cols, "lanes": lanes, "groups": lanes // GROUP}
    # input group g outermost: the weights of four input channels are loaded once per column tile
    body = "\n".join(_SDOT_STEP.format(j=j, o=4 * ot, ot=ot, g=g)
                     for g in range(4) for ot in range(lanes // GROUP) for j in range(cols))
    _register(name, _SDOT_HEAD, _SDOT_LOOPS, body, shape)
    return name


def register_all() -> None:
    """Register every tile shape the schedules use (before replaying tuning records,
    which name the intrinsic): its column tiles (1 when none divides the width) x its channel
    tiles that fill SMLAL / SDOT vectors."""
    from compile.llvm_cpu.intrin.tiles import CHANNEL_TILE, COLUMN_TILE

    for cols in (*COLUMN_TILE, 1):
        for lanes in (c for c in CHANNEL_TILE if c % GROUP == 0):
            smlal_lane_intrin(cols, lanes)
            sdot_lane_intrin(cols, lanes)
