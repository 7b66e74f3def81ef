"""An AVX-512 tensor intrinsic for TFLite's requantization on x86-64 (the host build).

``compile.llvm_cpu.rewrites.X86Requant`` rewrites MultiplyByQuantizedMultiplier followed by its
rounding shift into one block (``REQUANT_BLOCK``) of the exact form

    r = (int32((int64(x) * M + K) >> 31) - (x < N)) >> S

(``K`` holds the bias, the doubling high multiply's 2**30 and the rounding shift's half;
``x < N`` is TFLite's "round half away from zero" correction for negative values). LLVM
vectorizes the int64 product by widening every int32 lane to a 64-bit one and narrowing back
(VPMOVZXDQ x2, VEXTRACTI64X4, VPMULDQ x2, VPADDQ x2, VPSRLQ x2, VPMOVQD x2, VINSERTI64X4: 12
instructions per 16 lanes). This intrinsic keeps the lanes where they are: the int32 vector is
reinterpreted as int64 pairs, VPMULDQ multiplies the even lanes in place and the odd lanes
shifted down, and the two high halves (bits 31..62) are merged back by one bitwise select:
8 instructions per 16 lanes (16: zmm; 8: ymm).

TFLite's MultiplyByQuantizedMultiplier: https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/kernels/internal/common.h
Intel SDM VPMULDQ: https://www.intel.com/content/www/us/en/docs/intrinsics-guide/index.html#text=mul_epi32
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

LANES = (16, 8)   # int32 lanes of a zmm / ymm register
LOW_HALF = 0xFFFFFFFF


def _pairs(buf, pairs: int):
    """The int32 lanes of ``buf`` as int64 pairs (lane 2j in the low half of pair j)."""
    return T.reinterpret(buf.vload([0], dtype=f"int32x{2 * pairs}"), dtype=f"int64x{pairs}")


def _products(x, m, k, pairs: int, odd: int):
    """x * m + k of the even (``odd`` 0) or odd (1) lanes, int64: VPMULDQ reads each pair's
    low half, sign-extended, so an even lane is shifted up and back, an odd one down."""
    c32 = T.Broadcast(T.int64(32), pairs)

    def half(buf):
        lanes = _pairs(buf, pairs)
        return T.shift_right(lanes if odd else T.shift_left(lanes, c32), c32)

    wide = f"int64x{pairs}"
    return half(x) * half(m) + T.Shuffle([k.vload([0], dtype=wide), k.vload([pairs], dtype=wide)],
                                         [2 * j + odd for j in range(pairs)])


def _merge_high_halves(even, odd, pairs: int):
    """Bits 31..62 of each product in its int32 lane: the even ones shifted into the low half,
    the odd ones into the high half of their pair, joined by one bitwise select."""
    low = T.reinterpret(T.shift_right(T.reinterpret(even, dtype=f"uint64x{pairs}"),
                                      T.Broadcast(T.uint64(31), pairs)), dtype=f"int64x{pairs}")
    high = T.shift_left(odd, T.Broadcast(T.int64(1), pairs))
    select = T.Broadcast(T.int64(LOW_HALF), pairs)
    return T.reinterpret(T.bitwise_or(T.bitwise_and(low, select),
                                      T.bitwise_and(high, T.bitwise_not(select))),
                         dtype=f"int32x{2 * pairs}")


def _intrin(lanes: int):
    """(desc, impl) of the requantization of ``lanes`` int32 values."""
    pairs = lanes // 2
    i32 = f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def desc(x: T.Buffer((lanes,), "int32", offset_factor=1),
             m: T.Buffer((lanes,), "int32", offset_factor=1),
             k: T.Buffer((lanes,), "int64", offset_factor=1),
             n: T.Buffer((lanes,), "int32", offset_factor=1),
             s: T.Buffer((lanes,), "int32", offset_factor=1),
             r: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(x[0:lanes], m[0:lanes], k[0:lanes], n[0:lanes], s[0:lanes])
            T.writes(r[0:lanes])
            for i in T.serial(0, lanes):
                with T.sblock("requant"):
                    vi = T.axis.remap("S", [i])
                    r[vi] = T.shift_right(
                        T.Cast("int32", T.shift_right(
                            T.Cast("int64", x[vi]) * T.Cast("int64", m[vi]) + k[vi], T.int64(31)))
                        - T.Cast("int32", x[vi] < n[vi]), s[vi])

    @T.prim_func(s_tir=True)
    def impl(x: T.Buffer((lanes,), "int32", offset_factor=1),
             m: T.Buffer((lanes,), "int32", offset_factor=1),
             k: T.Buffer((lanes,), "int64", offset_factor=1),
             n: T.Buffer((lanes,), "int32", offset_factor=1),
             s: T.Buffer((lanes,), "int32", offset_factor=1),
             r: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(x[0:lanes], m[0:lanes], k[0:lanes], n[0:lanes], s[0:lanes])
            T.writes(r[0:lanes])
            # one expression: names bound here would become local buffers, which the CPU
            # build allocates from the workspace pool at every kernel call
            r[T.Ramp(0, 1, lanes)] = T.shift_right(
                _merge_high_halves(_products(x, m, k, pairs, 0), _products(x, m, k, pairs, 1),
                                   pairs)
                - T.Cast(i32, x.vload([0], dtype=i32) < n.vload([0], dtype=i32)),
                s.vload([0], dtype=i32))

    return desc, impl


def requant_intrin(lanes: int) -> str:
    """Name of the registered intrinsic for ``lanes`` (16 or 8) int32 values."""
    return f"sandglass_requant_x86_{lanes}"


for _lanes in LANES:
    TensorIntrin.register(requant_intrin(_lanes), *_intrin(_lanes), override=True)
