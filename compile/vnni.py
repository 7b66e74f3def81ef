"""An AVX-512 VNNI tensor intrinsic for 1x1 int8 convs on x86-64 (the host build).

TVM ships ``VNNI_DOT_16x4_INTRIN``, but its implementation calls ``llvm.x86.avx512.vpdpbusd.512``
with ``<16 x i32>`` operands, which the LLVM of the apache-tvm 0.27 wheel rejects ("Call
parameter type does not match function signature": the intrinsic now takes ``<64 x i8>``).
This is the same description with the operands reinterpreted as bytes: 16 (zmm) or 8 (ymm,
AVX-512 VL) output channels x 4 input channels per VPDPBUSD (uint8 input x int8 weights, int32
sums).
Intel SDM VPDPBUSD: https://www.intel.com/content/www/us/en/docs/intrinsics-guide/index.html#text=dpbusd
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T



def _intrin(lanes: int):
    """(desc, impl) for ``lanes`` output channels (16: zmm, 8: ymm) x 4 input channels."""
    vec = f"int8x{4 * lanes}"
    acc = f"int32x{lanes}"
    name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # one expression: a name bound here would become a local buffer, which the CPU
            # build allocates from the workspace pool at every kernel call
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(name), C.vload([0], dtype=acc),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"),
                                          lanes), dtype=vec),
                B.vload([0, 0], dtype=vec), dtype=acc)

    return desc, impl


LANES = (16, 8)


def vnni_intrin(lanes: int) -> str:
    """Name of the registered intrinsic for ``lanes`` (16 or 8) output channels."""
    return f"sandglass_vpdpbusd_{lanes}x4"


for _lanes in LANES:
    TensorIntrin.register(vnni_intrin(_lanes), *_intrin(_lanes), override=True)


def _dw_intrin(lanes: int):
    """(desc, impl) of VPDPWSSD on a depthwise conv's row pairs: ``lanes`` channels (16: zmm,
    8: ymm) of two input rows (int8, any row stride), their int16 weights interleaved
    ``[channel, row]``, products of each pair summed into the int32 accumulator."""
    acc, half, pair = f"int32x{lanes}", f"int16x{lanes}", f"int16x{2 * lanes}"
    name = f"llvm.x86.avx512.vpdpwssd.{32 * lanes}"
    interleave = [k for c in range(lanes) for k in (c, c + lanes)]

    @T.prim_func(s_tir=True)
    def desc(x: T.handle, w: T.handle, c: T.handle) -> None:
        row, col = T.int64(), T.int64()
        # (rows, 1 column, channels) of NHWC: a tensorized region may drop leading unit
        # dimensions only, and the column between rows and channels is one
        X = T.match_buffer(x, (2, 1, lanes), "int8", strides=[row, col, 1], offset_factor=1)
        W = T.match_buffer(w, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], X[0:2, 0, 0:lanes], W[0:lanes, 0:2])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for t in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vt = T.axis.remap("SR", [i, t])
                        C[vi] = C[vi] + T.cast(X[vt, 0, vi], "int32") * T.cast(W[vi, vt], "int32")

    @T.prim_func(s_tir=True)
    def impl(x: T.handle, w: T.handle, c: T.handle) -> None:
        row, col = T.int64(), T.int64()
        # (rows, 1 column, channels) of NHWC: a tensorized region may drop leading unit
        # dimensions only, and the column between rows and channels is one
        X = T.match_buffer(x, (2, 1, lanes), "int8", strides=[row, col, 1], offset_factor=1)
        W = T.match_buffer(w, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], X[0:2, 0, 0:lanes], W[0:lanes, 0:2])
            T.writes(C[0:lanes])
            # one expression (see _intrin); the two rows widened and interleaved per channel
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(name), C.vload([0], dtype=acc),
                T.Shuffle([T.Cast(half, X.vload([0, 0, 0], dtype=f"int8x{lanes}")),
                           T.Cast(half, X.vload([1, 0, 0], dtype=f"int8x{lanes}"))], interleave),
                W.vload([0, 0], dtype=pair), dtype=acc)

    return desc, impl


def dw_intrin(lanes: int) -> str:
    """Name of the registered row-pair VPDPWSSD intrinsic for ``lanes`` (16 or 8) channels."""
    return f"sandglass_vpdpwssd_rows_{lanes}"


for _lanes in LANES:
    TensorIntrin.register(dw_intrin(_lanes), *_dw_intrin(_lanes), override=True)
