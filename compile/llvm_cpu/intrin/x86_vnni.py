"""AVX-512 VNNI tensor intrinsics for int8 convs on x86-64 (the host build).

VPDPBUSD for 1x1 convs: TVM ships ``VNNI_DOT_16x4_INTRIN``, but its implementation calls
``llvm.x86.avx512.vpdpbusd.512`` with ``<16 x i32>`` operands, which the LLVM of the apache-tvm
0.27 wheel rejects ("Call parameter type does not match function signature": the intrinsic now
takes ``<64 x i8>``). ``vnni_intrin`` is the same description with the operands reinterpreted as
bytes: 16 (zmm) or 8 (ymm, AVX-512 VL) output channels x 4 input channels per VPDPBUSD (uint8
input x int8 weights, int32 sums).

VPDPWSSD for 3x3 depthwise convs and 3x3 convs of a one-channel image (``dw_intrin``): two
input rows of 16 (or 8) channels (or one channel's pixel for every lane) widened to int16 and
interleaved per channel, times their two kernel rows' int16 weights (stored
interleaved, ``compile.llvm_cpu.rewrites.pack_dw_pairs``), both products added to the channel's int32
accumulator: one instruction for two taps of 16 channels, where the int16 pair form needs two
multiplies, an add, a widening and another add.
Intel SDM VPDPBUSD / VPDPWSSD: https://www.intel.com/content/www/us/en/docs/intrinsics-guide/index.html#text=dpbusd
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


def _dw_intrin(lanes: int, broadcast: bool):
    """(desc, impl) of VPDPWSSD on row pairs: ``lanes`` channels (16: zmm, 8: ymm) of two input
    rows (int8, any row stride) -- or, ``broadcast``, one input channel for every lane (a conv
    of a one-channel image) -- widened to int16 and interleaved per channel, times their int16
    weights interleaved ``[channel, row]``; each pair's products summed into the int32
    accumulator."""
    acc, half, pair = f"int32x{lanes}", f"int16x{lanes}", f"int16x{2 * lanes}"
    name = f"llvm.x86.avx512.vpdpwssd.{32 * lanes}"
    interleave = [k for c in range(lanes) for k in (c, c + lanes)]
    width = 1 if broadcast else lanes

    def row(X, r):
        if broadcast:
            return T.Broadcast(T.Cast("int16", X[r, 0, 0]), lanes)
        return T.Cast(half, X.vload([r, 0, 0], dtype=f"int8x{lanes}"))

    @T.prim_func(s_tir=True)
    def desc(x: T.handle, w: T.handle, c: T.handle) -> None:
        row_stride, col_stride = T.int64(), T.int64()
        # (rows, 1 column, channels) of NHWC: a tensorized region may drop leading unit
        # dimensions only, and the column between rows and channels is one
        X = T.match_buffer(x, (2, 1, width), "int8", strides=[row_stride, col_stride, 1],
                           offset_factor=1)
        W = T.match_buffer(w, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], X[0:2, 0, 0:width], W[0:lanes, 0:2])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for t in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vt = T.axis.remap("SR", [i, t])
                        C[vi] = C[vi] + T.cast(X[vt, 0, 0 if broadcast else vi], "int32") * T.cast(
                            W[vi, vt], "int32")

    @T.prim_func(s_tir=True)
    def impl(x: T.handle, w: T.handle, c: T.handle) -> None:
        row_stride, col_stride = T.int64(), T.int64()
        X = T.match_buffer(x, (2, 1, width), "int8", strides=[row_stride, col_stride, 1],
                           offset_factor=1)
        W = T.match_buffer(w, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], X[0:2, 0, 0:width], W[0:lanes, 0:2])
            T.writes(C[0:lanes])
            # one expression (see _intrin); the two rows widened and interleaved per channel
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(name), C.vload([0], dtype=acc),
                T.Shuffle([row(X, 0), row(X, 1)], interleave),
                W.vload([0, 0], dtype=pair), dtype=acc)

    return desc, impl


def dw_intrin(lanes: int, broadcast: bool = False) -> str:
    """Name of the registered row-pair VPDPWSSD intrinsic for ``lanes`` (16 or 8) channels
    (``broadcast``: of a one-channel input)."""
    return f"sandglass_vpdpwssd_rows_{lanes}{'_broadcast' if broadcast else ''}"


for _lanes in LANES:
    for _broadcast in (False, True):
        TensorIntrin.register(dw_intrin(_lanes, _broadcast), *_dw_intrin(_lanes, _broadcast),
                              override=True)
